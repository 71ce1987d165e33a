"""Draw a unit's exemplars: grids with heatmaps (PNG / SVG with titles, or bare PIL images for
blind studies). The tiles come from recording/exemplars.py (the model re-run on each exemplar),
re-exported here with the run's model and probe replay, as before.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import UserError
from ..models.target import Target
from ..recording.exemplars import Exemplar, exemplars, exemplars_at  # noqa: F401  (also re-exported)
from ..recording.replay import probe_for_run, target_for_run  # noqa: F401  (also re-exported)
from ..run import Run, open_run


def grid_image(tiles: list[Exemplar], heatmap: bool = True, ncols: int = 5, tile_px: int = 160,
               gap: int = 4, alpha: float = 0.45, background=(255, 255, 255)) -> Image.Image:
    """The tiles alone, composed with PIL: no title, caption, axis or value is drawn, so nothing
    but the images (and their heat overlays on one shared scale) is in the pixels. The result is
    exactly ncols*tile_px + (ncols+1)*gap wide and rows*tile_px + (rows+1)*gap high."""
    if not tiles:
        raise UserError("no exemplars to draw: the run recorded no images for this unit")
    maps = [t.heatmap for t in tiles if t.heatmap is not None] if heatmap else []
    lo = min(float(m.min()) for m in maps) if maps else 0.0
    hi = max(float(m.max()) for m in maps) if maps else 1.0
    ncols = min(ncols, len(tiles))
    nrows = (len(tiles) + ncols - 1) // ncols
    canvas = Image.new("RGB", (ncols * tile_px + (ncols + 1) * gap,
                               nrows * tile_px + (nrows + 1) * gap), background)
    for i, t in enumerate(tiles):
        tile = tile_pixels(t, tile_px, heatmap, lo, hi, alpha)
        r, c = divmod(i, ncols)
        canvas.paste(tile, (gap + c * (tile_px + gap), gap + r * (tile_px + gap)))
    return canvas


def tile_pixels(t: Exemplar, tile_px: int, heatmap: bool, lo: float, hi: float,
                alpha: float) -> Image.Image:
    image = t.image.convert("RGB").resize((tile_px, tile_px), Image.BICUBIC)
    if not heatmap or t.heatmap is None:
        return image
    from matplotlib import colormaps

    m = Image.fromarray(np.asarray(t.heatmap, np.float32), mode="F").resize(
        (tile_px, tile_px), Image.BILINEAR)
    norm = (np.asarray(m) - lo) / (hi - lo) if hi > lo else np.zeros((tile_px, tile_px))
    heat = colormaps["inferno"](np.clip(norm, 0, 1))[..., :3] * 255.0
    mixed = (1 - alpha) * np.asarray(image, np.float32) + alpha * heat
    return Image.fromarray(np.clip(mixed + 0.5, 0, 255).astype(np.uint8), "RGB")


def draw_grid(tiles: list[Exemplar], title: str, path: str | Path, heatmap: bool = True,
              ncols: int = 5, alpha: float = 0.45) -> Path:
    """Save a grid of tiles (PNG or SVG by the file suffix). Heat colours share one scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    if path.suffix.lower() not in (".png", ".svg"):
        raise UserError(f"--out must end in .png or .svg (got {path.name})")
    if not tiles:
        raise UserError(f"no exemplars to draw for {title}: the run recorded no images for it")
    maps = [t.heatmap for t in tiles if t.heatmap is not None]
    lo = min(float(m.min()) for m in maps) if maps else 0.0
    hi = max(float(m.max()) for m in maps) if maps else 1.0
    nrows = (len(tiles) + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.4 * ncols, 2.7 * nrows + 0.6), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, t in zip(axes.flat, tiles):
        ax.imshow(np.asarray(t.image))
        if heatmap and t.heatmap is not None:
            ax.imshow(t.heatmap, cmap="inferno", alpha=alpha, vmin=lo, vmax=hi)
        name = t.image_id if len(t.image_id) <= 26 else "…" + t.image_id[-25:]
        ax.set_title(f"#{t.rank + 1}  {t.value:.4g}\n{name}", fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def exemplar_grids(run: Run | str, unit: str, out: str | Path, which: str = "both",
                   k: int | None = None, heatmap: bool = True, target: Target | None = None,
                   probe=None, svg: bool = True) -> list[Path]:
    """Write top and/or bottom grids. With which='both', `grid.png` becomes grid-top.png and
    grid-bottom.png; with svg=True each PNG gets an SVG twin (vector, for papers)."""
    run = open_run(run) if not isinstance(run, Run) else run
    out = Path(out)
    sides = ["top", "bottom"] if which == "both" else [which]
    target = target_for_run(run, target)
    probe = probe_for_run(run, probe)
    layer, _ = run.parse_unit(unit)
    pooling = run.layers[layer]["pooling"]
    paths = []
    for side in sides:
        tiles = exemplars(run, unit, side, k, target, probe)
        path = out if len(sides) == 1 else out.with_name(f"{out.stem}-{side}{out.suffix}")
        title = f"{unit}  {side} {len(tiles)} ({pooling} pooling)"
        paths.append(draw_grid(tiles, title, path, heatmap))
        if svg and path.suffix.lower() == ".png":
            paths.append(draw_grid(tiles, title, path.with_suffix(".svg"), heatmap))
    return paths
