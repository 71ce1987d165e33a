"""Re-run a unit's exemplars through the model to get their values and spatial maps: one record
(image, recorded value, recomputed value, map) per tile, so a tile's title can never drift from its
own image (the reference code reversed images but not activations). Drawing them is atlas's
(atlas/exemplars.py); the VLM labeler, the blind-study export and the atlas all start here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import UserError
from ..models.target import Target
from ..run import Run, open_run
from .hooks import Capture
from .pooling import pool
from .replay import probe_for_run, target_for_run, views_for_run


@dataclass
class Exemplar:
    rank: int
    index: int  # probe index
    image_id: str
    value: float  # recorded pooled activation
    recomputed: float  # pooled activation of this re-run (should equal `value`)
    image: Image.Image  # the exact pixels the model saw (resize + crop, no normalisation)
    heatmap: np.ndarray | None  # (size, size) unit map upsampled bilinearly; None for vector layers


def exemplars(run: Run | str, unit: str, which: str = "top", k: int | None = None,
              target: Target | None = None, probe=None, batch_size: int = 16) -> list[Exemplar]:
    run = open_run(run) if not isinstance(run, Run) else run
    if which not in ("top", "bottom"):
        raise UserError(f"which must be top or bottom (got {which})")
    table = run.topk(unit, k) if which == "top" else run.bottomk(unit, k)
    rows = [(int(r.rank), int(r.index), str(r.image_id), float(r.value))
            for r in table.itertuples(index=False)]
    return _render(run, unit, rows, target, probe, batch_size)


def exemplars_at(run: Run | str, unit: str, indices, target: Target | None = None, probe=None,
                 batch_size: int = 16) -> list[Exemplar]:
    """Tiles of `unit` on any probe images (e.g. randomly drawn ones for a study's controls), in
    the given order; `value` is the recorded pooled activation when the run saved acts, otherwise
    the recomputed one."""
    run = open_run(run) if not isinstance(run, Run) else run
    layer, u = run.parse_unit(unit)
    indices = [int(i) for i in indices]
    ids = run.images["image_id"].to_numpy()
    try:
        acts = run.acts(layer)
        values = [float(acts[i, u]) for i in indices]
    except UserError:  # no --save-acts: take the re-run's values
        values = [float("nan")] * len(indices)
    rows = [(r, i, str(ids[i]), v) for r, (i, v) in enumerate(zip(indices, values))]
    tiles = _render(run, unit, rows, target, probe, batch_size)
    for t in tiles:
        if np.isnan(t.value):
            t.value = t.recomputed
    return tiles


def _render(run: Run, unit: str, rows: list[tuple[int, int, str, float]], target, probe,
            batch_size: int) -> list[Exemplar]:
    """Re-run the model on rows of (rank, probe index, image id, recorded value)."""
    layer, u = run.parse_unit(unit)
    target = target_for_run(run, target)
    probe = probe_for_run(run, probe)
    view = views_for_run(run, target, [layer])[0]  # the unit in its recorded basis
    point, layout = view.point, view.layout
    pooling = run.layers[layer]["pooling"]
    geometry, transform = target.preprocess.geometry(), target.preprocess.transform()
    size = target.preprocess.size
    capture = Capture(target, [point], reduce={
        point.name: lambda out: view.canonical(out)[:, u:u + 1].clone()})
    out: list[Exemplar] = []
    with capture.attached():
        for a in range(0, len(rows), batch_size):
            chunk = rows[a:a + batch_size]
            images = [probe.read_image(index) for _, index, _, _ in chunk]
            pixels = torch.stack([transform(im) for im in images]).to(target.device)
            indices = np.array([index for _, index, _, _ in chunk], np.int64)
            batch = target.make_batch(pixels, indices, probe)
            acts = capture.run(batch)[point.name]  # (B, 1, S): this unit only
            values = pool(acts, layout, pooling)[:, 0].float().cpu()
            maps = None
            if layout.has_grid:
                grid = layout.spatial_map(acts).float()  # (B, 1, h, w)
                maps = F.interpolate(grid, size=(size, size), mode="bilinear",
                                     align_corners=False)[:, 0].cpu().numpy()
            for j, ((rank, index, image_id, value), im) in enumerate(zip(chunk, images)):
                out.append(Exemplar(rank, index, image_id, value, float(values[j]),
                                    geometry(im.convert("RGB")),
                                    None if maps is None else maps[j]))
    return out
