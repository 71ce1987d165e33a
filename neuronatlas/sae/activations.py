"""A model's activations at one hook point, as rows of d_in units, streamed batch by batch.

Every layout is first brought to (batch, units, positions) by the hook point's Layout, so conv
maps, ViT tokens and pooled vectors all give rows the same way: one row per (image, position) of the
chosen positions (`tokens`: all, patches = the spatial grid, cls = the class token).
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from ..data import iter_batches
from ..errors import UserError
from ..models.target import HookPoint, Target
from ..recording.hooks import Capture


def positions(point: HookPoint, tokens: str) -> slice | list[int]:
    """Positions of the canonical (B, U, S) output that become rows."""
    layout = point.layout
    if tokens == "all":
        return slice(0, layout.n_positions)
    if tokens == "patches":
        if not layout.has_grid:
            raise UserError(f"layer {point.name} has no spatial grid, so --tokens patches selects "
                            f"nothing: use --tokens all")
        return layout.patch_slice
    if layout.cls_index is None:
        raise UserError(f"layer {point.name} has no CLS token: use --tokens all or patches")
    return [layout.cls_index]


def rows_of(point: HookPoint, raw: torch.Tensor, tokens: str) -> torch.Tensor:
    """Raw hook output -> (B * positions, units)."""
    acts = point.layout.canonical(raw)[:, :, positions(point, tokens)]
    return acts.transpose(1, 2).reshape(-1, acts.shape[1])


def stream_rows(target: Target, probe, point: HookPoint, tokens: str, indices: np.ndarray,
                image_batch: int, num_workers: int | None = 0) -> Iterator[tuple[torch.Tensor, int]]:
    """Yield (rows float32 on CPU, images consumed) for the probe images `indices`, in order."""
    capture = Capture(target, [point], reduce={point.name: lambda out: rows_of(point, out, tokens)})
    device = target.device
    with capture.attached():
        for batch in iter_batches(probe, target.preprocess.transform(), indices, image_batch,
                                  num_workers):
            n = len(batch.indices) + len(batch.failed)
            if len(batch.indices) == 0:
                yield torch.empty(0, point.n_units), n
                continue
            inputs = target.make_batch(batch.pixels.to(device), batch.indices, probe)
            out = capture.run(inputs)[point.name]
            yield out.float().cpu(), n
