"""The pictures a VLM is shown: a unit's top exemplars, plain or with the unit's heatmap blended in,
one by one (mode B) or as one grid (mode A).

Plain exemplars are the probe images as stored (no model is run). Heatmap exemplars re-run the
model (`recording.exemplars`) for the unit's spatial map, upsampled to the pixels the model saw, coloured
with one scale shared by the unit's tiles (so "brighter" means the same everywhere) and blended at
`alpha`. Layers without a spatial map (vector units) fall back to plain images. Tiles carry no
titles: the VLM sees pixels only, never activations or ids.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass
class Tile:
    rank: int
    index: int  # probe index
    image_id: str
    value: float  # the recorded activation
    image: Image.Image  # what is sent (with the heatmap when asked and available)
    heatmap: bool


def overlay(image: Image.Image, heat: np.ndarray, lo: float, hi: float,
            alpha: float = 0.45) -> Image.Image:
    """`image` with `heat` (same H x W) mapped through inferno on [lo, hi] and blended at alpha."""
    from matplotlib import colormaps

    scaled = np.clip((np.asarray(heat, np.float64) - lo) / max(hi - lo, 1e-12), 0, 1)
    colour = (colormaps["inferno"](scaled)[..., :3] * 255).astype(np.float64)
    base = np.asarray(image.convert("RGB").resize(heat.shape[::-1]), np.float64)
    return Image.fromarray(((1 - alpha) * base + alpha * colour).round().astype(np.uint8))


def unit_tiles(run, unit: str, k: int, heatmap: bool, probe, target=None,
               alpha: float = 0.45) -> list[Tile]:
    """The unit's top-k exemplars as tiles, highest activation first."""
    if not heatmap:
        table = run.topk(unit, k)
        return [Tile(int(r.rank), int(r.index), str(r.image_id), float(r.value),
                     probe.read_image(int(r.index)).convert("RGB"), False)
                for r in table.itertuples(index=False)]
    from ..recording.exemplars import exemplars

    ex = exemplars(run, unit, "top", k, target=target, probe=probe)
    maps = [e.heatmap for e in ex if e.heatmap is not None]
    lo = min(float(m.min()) for m in maps) if maps else 0.0
    hi = max(float(m.max()) for m in maps) if maps else 1.0
    return [Tile(e.rank, e.index, e.image_id, e.value,
                 overlay(e.image, e.heatmap, lo, hi, alpha) if e.heatmap is not None else e.image,
                 e.heatmap is not None) for e in ex]


def compose_grid(images: list[Image.Image], tile: int = 224, ncols: int | None = None,
                 gap: int = 4) -> Image.Image:
    """The images resized to `tile` px squares in a grid (about square: ncols = ceil(sqrt(n))) on a
    white canvas with `gap` px between tiles."""
    n = len(images)
    ncols = ncols or max(1, int(np.ceil(np.sqrt(n))))
    nrows = (n + ncols - 1) // ncols
    canvas = Image.new("RGB", (ncols * tile + (ncols - 1) * gap, nrows * tile + (nrows - 1) * gap),
                       "white")
    for i, im in enumerate(images):
        r, c = divmod(i, ncols)
        canvas.paste(im.convert("RGB").resize((tile, tile), Image.BICUBIC),
                     (c * (tile + gap), r * (tile + gap)))
    return canvas
