"""Pool a unit's activations over space / tokens into one number per image.

Input is the canonical `acts_BUS` (batch, units, positions) of `models.layout`. Modes:
- mean, max: over every position (for ViTs this includes CLS and register tokens)
- cls: the CLS token's value (ViTs only)
- patch_mean, patch_max: over the patch grid only (CLS and registers excluded; for conv = mean/max)
- none: the layer has one position per unit (vector outputs)
"""

from __future__ import annotations

import torch

from ..errors import UserError
from ..models.layout import Layout

POOLINGS = ("mean", "max", "cls", "patch_mean", "patch_max", "none")


def check_pooling(mode: str, layout: Layout, layer: str) -> None:
    if mode not in POOLINGS:
        raise UserError(f"unknown pooling '{mode}'; choose one of {', '.join(POOLINGS)}")
    if mode == "cls" and layout.cls_index is None:
        raise UserError(f"layer {layer} has no CLS token; use --pooling mean, max, patch_mean or patch_max")
    if mode == "none" and layout.n_positions != 1:
        raise UserError(f"layer {layer} has {layout.n_positions} positions per unit; pick a pooling "
                        f"such as mean or max instead of none")


def pool(acts_BUS: torch.Tensor, layout: Layout, mode: str) -> torch.Tensor:
    """(B, U, S) -> (B, U)."""
    if mode == "mean":
        return acts_BUS.mean(dim=2)
    if mode == "max":
        return acts_BUS.amax(dim=2)
    if mode == "cls":
        return acts_BUS[:, :, layout.cls_index]
    if mode == "patch_mean":
        return acts_BUS[:, :, layout.patch_slice].mean(dim=2)
    if mode == "patch_max":
        return acts_BUS[:, :, layout.patch_slice].amax(dim=2)
    if mode == "none":
        return acts_BUS[:, :, 0]
    raise ValueError(mode)


def pool_output(raw: torch.Tensor, layout: Layout, mode: str) -> torch.Tensor:
    """Pool a raw hook output (B, ...) -> (B, U). Same result as pool(layout.canonical(raw), ...),
    but batch-first token outputs are reduced in place over their token axis (no transposed copy)."""
    if layout.kind == "tokens" and not layout.seq_first and not getattr(layout, "channels_last", False):
        if mode == "mean":
            return raw.mean(dim=1)
        if mode == "max":
            return raw.amax(dim=1)
        if mode == "cls":
            return raw[:, layout.cls_index]
        if mode == "patch_mean":
            return raw[:, layout.patch_slice].mean(dim=1)
        if mode == "patch_max":
            return raw[:, layout.patch_slice].amax(dim=1)
    return pool(layout.canonical(raw), layout, mode)
