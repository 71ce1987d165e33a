"""Models: turn a spec string into a `Target` (model + preprocessing + hook points).

    target = load_target("timm:vit_tiny_patch16_224", random_weights=True)
    target.select("blocks.*.mlp.fc1")

Specs: torchvision:NAME[/WEIGHTS], timm:NAME, open_clip:MODEL[/TAG], hf:ORG/NAME or hf:/local/dir,
zoo:NAME, path/to/file.py:factory: one family module each, registered with `@model_family`
(family.py; registry.py finds a spec's family, plugins come in through entry points). In-memory
models: `hf_adapter.target_from_hf_model` (and `target_from_llava`: images + a prompt),
`timm_adapter.target_from_timm_model`, `open_clip_adapter.target_from_open_clip_model`.
A Target's inputs are typed batches (inputs.py: ImageBatch, ImageTextBatch).
"""

from __future__ import annotations

from .layout import Layout, TokenInfo
from .target import HookPoint, Preprocess, Target

__all__ = ["load_target", "format_layers", "Target", "HookPoint", "Preprocess", "Layout", "TokenInfo"]


def load_target(spec: str, weights: str | None = None, random_weights: bool = False,
                device: str | None = None) -> Target:
    """Build the model of `spec` in eval mode on `device` (default: cuda if available, else cpu).

    weights: a local checkpoint file or directory (default: the library's own cache).
    random_weights: the real architecture with random weights (seed torch first to reproduce).
    """
    import torch

    from .registry import build

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    target = build(spec, weights=weights, random_weights=random_weights, device=device)
    target.to(device)
    return target


def format_layers(target: Target) -> list[str]:
    """One line per hook point, name first: `blocks.9.mlp.fc1  (197, 768)  tokens  768 units  ...`."""
    points = list(target.hook_points.values())
    if not points:
        return []
    shapes = [str(tuple(p.shape)) for p in points]
    w_name = max(len(p.name) for p in points)
    w_shape = max(len(s) for s in shapes)
    w_units = max(len(str(p.n_units)) for p in points)
    lines = []
    for p, shape in zip(points, shapes):
        line = (f"{p.name:<{w_name}}  {shape:<{w_shape}}  {p.layout.kind:<6}  "
                f"{p.n_units:>{w_units}} units")
        detail = _detail(p)
        lines.append(f"{line}  {detail}".rstrip())
    return lines


def _detail(p: HookPoint) -> str:
    lay, parts = p.layout, []
    if lay.grid:
        parts.append(f"grid {lay.grid[0]}x{lay.grid[1]}")
    if lay.cls_index is not None:
        parts.append(f"cls {lay.cls_index}")
    if lay.register_indices:
        r = lay.register_indices
        parts.append(f"registers {r[0]}-{r[-1]}" if len(r) > 1 else f"register {r[0]}")
    if lay.kind == "tokens" and not lay.grid:
        parts.append("no patch grid")
    if lay.channels_last:
        parts.append("channels last")
    if lay.seq_first:
        parts.append("sequence first")
    if p.calls > 1:
        parts.append(f"runs {p.calls}x, first call recorded")
    return ", ".join(parts)
