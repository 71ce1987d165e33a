"""Exemplar tiles: one batched forward pass per layer gives the same values and heatmaps as
re-running each unit on its own (exemplars.py), cached and resumable."""

import json

import numpy as np
from PIL import Image

from neuronatlas.atlas.exemplars import exemplars
from neuronatlas.atlas.tiles import TileRenderer, overlay


def test_tiles_equal_per_unit_exemplars(run_copy):
    r = TileRenderer(run_copy)
    units = ["units:0", "units:7", "units:42"]
    assert r.ensure(units) == units
    for unit in units:
        meta = r.meta(unit)
        assert meta["has_heat"] and meta["max_abs_diff"] < 1e-5  # recomputed == recorded
        model = {"target": r._target, "probe": r._probe}  # the renderer's, to load them once
        ref = exemplars(run_copy, unit, "top", k=4, **model) + \
            exemplars(run_copy, unit, "bottom", k=4, **model)
        for ex in ref:
            plain = np.asarray(Image.open(r.plain_path(ex.index)))
            assert np.array_equal(plain, np.asarray(ex.image))  # the pixels the model saw
            heat = np.asarray(Image.open(r.heat_path(unit, ex.index)))
            want = overlay(plain, ex.heatmap, meta["heat_lo"], meta["heat_hi"])
            assert heat.shape == plain.shape == (64, 64, 3)
            assert np.abs(heat.astype(int) - want).max() <= 1
            assert abs(meta["recomputed"][str(ex.index)] - ex.recomputed) < 1e-6
        # one colour scale per unit, over its top and bottom maps
        assert meta["heat_lo"] < meta["heat_hi"]


def test_tiles_are_cached_and_resume(run_copy):
    r = TileRenderer(run_copy)
    r.ensure(["units:1", "units:2"])
    assert r.ensure(["units:1", "units:2"]) == []  # cached
    (r.unit_dir("units:2") / "meta.json").unlink()  # as if interrupted before units:2 finished
    stamp = r.heat_path("units:1", next(iter(r.exemplar_indices("units:1")))).stat().st_mtime_ns
    assert TileRenderer(run_copy).ensure(["units:1", "units:2"]) == ["units:2"]
    assert r.heat_path("units:1", next(iter(r.exemplar_indices("units:1")))).stat().st_mtime_ns \
        == stamp
    assert r.root.parent == run_copy.path / "atlas" and run_copy.identity() in r.root.name
    assert json.loads((r.unit_dir("units:2") / "meta.json").read_text())["unit"] == "units:2"
