"""Exemplar tiles for the atlas: the pixels the model saw, and the same with the unit's heatmap.

Rendering re-runs the model on a unit's recorded top and bottom exemplars (like `exemplars.py`), but
for many units at once: the union of their exemplar images goes through the model once per layer
and every unit's map is cut out of the same forward pass. Tiles are cached under the run:

    RUN/atlas/tiles-KEY/plain/INDEX.png            probe image INDEX after resize + crop
    RUN/atlas/tiles-KEY/L{POS}/UNIT_INDEX/INDEX.png  heat overlay of that unit on that image
    RUN/atlas/tiles-KEY/L{POS}/UNIT_INDEX/meta.json  recorded vs recomputed values, heat scale;
                                                     written last, so it marks a finished unit

KEY is the run's identity digest (model, probe, layers), so a different recording never reuses
tiles. One heat scale per unit, shared by its top and bottom tiles (so bottom tiles look cold when
the unit is quiet on them). An interrupted render resumes at the first unit without meta.json.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..run import Run, atlas_dir

HEAT_ALPHA = 0.45
CMAP = "inferno"


def tiles_dir(run: Run) -> Path:
    return atlas_dir(run.path) / f"tiles-{run.identity()}"


def _save_png(path: Path, arr: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    Image.fromarray(arr).save(tmp, format="PNG")
    tmp.replace(path)


def overlay(image_HW3: np.ndarray, heat_HW: np.ndarray, lo: float, hi: float,
            alpha: float = HEAT_ALPHA) -> np.ndarray:
    """Blend a heatmap (coloured with CMAP on the scale lo..hi) over a uint8 RGB image."""
    import matplotlib

    norm = np.clip((heat_HW - lo) / (hi - lo if hi > lo else 1.0), 0.0, 1.0)
    color = matplotlib.colormaps[CMAP](norm)[..., :3]
    out = (1 - alpha) * image_HW3.astype(np.float32) / 255.0 + alpha * color
    return np.clip(out * 255.0 + 0.5, 0, 255).astype(np.uint8)


class TileRenderer:
    """Renders and caches the tiles of units on demand; safe to call from several threads."""

    def __init__(self, run: Run, root: Path | None = None, target=None, probe=None,
                 batch_size: int = 32):
        self.run, self.batch_size = run, batch_size
        self.root = Path(root) if root is not None else tiles_dir(run)
        self._target, self._probe = target, probe
        self._lock = threading.Lock()
        self.layer_pos = {name: i for i, name in enumerate(run.layers)}
        self.error: str | None = None  # why tiles cannot be rendered (model not rebuildable...)
        if target is None and str(run.meta["key"]["model"]["spec"]).startswith("hf:<"):
            self.error = ("exemplar images cannot be rendered: the run was recorded from an "
                          "in-memory model; pass target= to TileRenderer from Python")

    # -- where things are -------------------------------------------------------------------------
    def unit_dir(self, unit: str) -> Path:
        layer, i = self.run.parse_unit(unit)
        return self.root / f"L{self.layer_pos[layer]}" / str(i)

    def plain_path(self, index: int) -> Path:
        return self.root / "plain" / f"{int(index)}.png"

    def heat_path(self, unit: str, index: int) -> Path:
        return self.unit_dir(unit) / f"{int(index)}.png"

    def meta(self, unit: str) -> dict | None:
        path = self.unit_dir(unit) / "meta.json"
        return json.loads(path.read_text()) if path.exists() else None

    def exemplar_indices(self, unit: str) -> set[int]:
        layer, i = self.run.parse_unit(unit)
        idx = np.concatenate([np.asarray(self.run.array(layer, "top_index")[i]),
                              np.asarray(self.run.array(layer, "bottom_index")[i])])
        return {int(v) for v in idx if v >= 0}

    # -- rendering --------------------------------------------------------------------------------
    def _model(self):
        if self._target is None or self._probe is None:
            from ..recording.replay import probe_for_run, target_for_run

            try:
                self._target = target_for_run(self.run, self._target)
                self._probe = probe_for_run(self.run, self._probe)
            except (UserError, OSError, ImportError) as exc:
                self.error = f"exemplar images cannot be rendered: {exc}"
                raise UserError(self.error) from None
        return self._target, self._probe

    def ensure(self, units: list[str], progress: bool = False) -> list[str]:
        """Render the tiles of every unit in `units` that has none yet; returns those rendered."""
        if self.error:
            raise UserError(self.error)
        with self._lock:
            todo = [u for u in dict.fromkeys(units) if self.meta(u) is None]
            if not todo:
                return []
            by_layer: dict[str, list[str]] = {}
            for u in todo:
                by_layer.setdefault(self.run.parse_unit(u)[0], []).append(u)
            bar = None
            if progress:
                from tqdm.auto import tqdm

                bar = tqdm(total=len(todo), desc="exemplar tiles", unit="unit")
            for layer, group in by_layer.items():
                for a in range(0, len(group), 256):  # bounded memory: 256 units' maps at a time
                    self._render_group(layer, group[a:a + 256])
                    if bar is not None:
                        bar.update(len(group[a:a + 256]))
            if bar is not None:
                bar.close()
            return todo

    def _render_group(self, layer: str, units: list[str]) -> None:
        import torch
        import torch.nn.functional as F

        from ..recording.hooks import Capture
        from ..recording.pooling import pool
        from ..recording.replay import views_for_run

        target, probe = self._model()
        view = views_for_run(self.run, target, [layer])[0]  # the units in their recorded basis
        point = view.point
        layout, pooling = view.layout, self.run.layers[layer]["pooling"]
        cols = [self.run.parse_unit(u)[1] for u in units]
        sel = torch.tensor(cols, dtype=torch.long)
        wanted = {u: self.exemplar_indices(u) for u in units}
        images = sorted(set().union(*wanted.values()))
        geometry, transform = target.preprocess.geometry(), target.preprocess.transform()
        size = target.preprocess.size
        capture = Capture(target, [point], reduce={
            point.name: lambda out: view.canonical(out)[:, sel.to(out.device)].clone()})
        maps: dict[tuple[int, int], np.ndarray] = {}  # (column in units, image) -> (h, w) map
        values: dict[tuple[int, int], float] = {}
        with capture.attached():
            for a in range(0, len(images), self.batch_size):
                chunk = images[a:a + self.batch_size]
                pil = [probe.read_image(i) for i in chunk]
                for i, im in zip(chunk, pil):
                    if not self.plain_path(i).exists():
                        _save_png(self.plain_path(i), np.asarray(geometry(im.convert("RGB"))))
                pixels = torch.stack([transform(im) for im in pil]).to(target.device)
                acts = capture.run(target.make_batch(pixels, np.asarray(chunk), probe))[point.name]  # (B, units, S)
                pooled = pool(acts, layout, pooling).float().cpu().numpy()
                grid = layout.spatial_map(acts).float().cpu().numpy() if layout.has_grid else None
                for j, i in enumerate(chunk):
                    for c, u in enumerate(units):
                        if i in wanted[u]:
                            values[c, i] = float(pooled[j, c])
                            if grid is not None:
                                maps[c, i] = grid[j, c]
        for c, u in enumerate(units):
            layer_, ui = self.run.parse_unit(u)
            recorded = {}
            for side in ("top", "bottom"):
                v = np.asarray(self.run.array(layer_, f"{side}_values")[ui])
                ix = np.asarray(self.run.array(layer_, f"{side}_index")[ui])
                recorded.update({int(i): float(x) for i, x in zip(ix, v) if i >= 0})
            own = sorted(wanted[u])
            lo = hi = None
            if layout.has_grid:
                stack = np.stack([maps[c, i] for i in own]) if own else np.zeros((0, 1, 1))
                if len(stack):
                    lo, hi = float(stack.min()), float(stack.max())
                    up = F.interpolate(torch.from_numpy(stack)[:, None], size=(size, size),
                                       mode="bilinear", align_corners=False)[:, 0].numpy()
                    for i, m in zip(own, up):
                        base = np.asarray(_read_png(self.plain_path(i)))
                        _save_png(self.heat_path(u, i), overlay(base, m, lo, hi))
            diff = max((abs(values[c, i] - recorded[i]) for i in own), default=0.0)
            meta = {"unit": u, "has_heat": lo is not None, "heat_lo": lo, "heat_hi": hi,
                    "recomputed": {str(i): values[c, i] for i in own},
                    "max_abs_diff": diff, "size": size}
            d = self.unit_dir(u)
            d.mkdir(parents=True, exist_ok=True)
            tmp = d / "meta.json.tmp"
            tmp.write_text(json.dumps(meta))
            tmp.replace(d / "meta.json")


def _read_png(path: Path):
    from PIL import Image

    with Image.open(path) as im:
        return im.convert("RGB")
