"""zoo:synthetic-units: ground-truth units over the world's concepts (MAIA-style)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import neuronatlas as na
from neuronatlas.data.world import CATEGORIES, CONCEPTS
from neuronatlas.errors import UserError
from neuronatlas.models import load_target
from neuronatlas.models.synthetic_units import build_synthetic, choose_units


def test_units_cover_three_kinds_and_every_category():
    target = load_target("zoo:synthetic-units")
    truth = target.truth
    assert len(truth) >= 100
    assert set(truth["kind"]) == {"mono", "or", "and"}
    cats = {CONCEPTS[c].category for cs in truth["concepts"] for c in cs.split("|")}
    assert cats == set(CATEGORIES)
    assert len(truth["unit"].unique()) == len(truth)
    point = target.select("units")[0]
    assert point.n_units == len(truth) and point.layout.grid == (8, 8)
    red = truth.set_index("concepts").loc["color:red"]
    assert red["truth"] == "red" and red["kind"] == "mono"
    ands = truth[truth.kind == "and"]
    assert all(" AND " in t for t in ands.truth)
    assert all(" OR " in t for t in truth[truth.kind == "or"].truth)
    # AND pairs are attributes of two different object categories (so they can share pixels)
    for cs in ands.concepts:
        a, b = (CONCEPTS[c].category for c in cs.split("|"))
        assert a != b and "background" not in (a, b)


def test_choice_is_seeded():
    assert choose_units(0) == choose_units(0)
    assert choose_units(0) != choose_units(1)


def test_maps_follow_the_definition():
    probe = na.open_probe("world:n=6,size=32,seed=3")
    target = build_synthetic(noise=0.0)
    truth = target.truth
    out = target.run(target.make_batch(torch.zeros(6, 3, 64, 64), np.arange(6), probe))
    for kind in ("mono", "or", "and"):
        u = int(truth.index[truth.kind == kind][0])
        cs = truth.concepts[u].split("|")
        for i in range(6):
            m = probe.masks(i, 64)
            a = m.get(cs[0], np.zeros((64, 64), bool))
            b = m.get(cs[-1], np.zeros((64, 64), bool))
            pix = {"mono": a, "or": a | b, "and": a & b}[kind].astype(np.float32)
            want = pix.reshape(8, 8, 8, 8).mean(axis=(1, 3))
            np.testing.assert_allclose(out[i, u].numpy(), want, atol=1e-6)


def test_noise_depends_only_on_the_image():
    probe = na.open_probe("world:n=5,size=32")
    target = build_synthetic()
    a = target.run(target.make_batch(torch.zeros(5, 3, 64, 64), np.arange(5), probe))
    b = target.run(target.make_batch(torch.zeros(2, 3, 64, 64), np.array([3, 1]), probe))
    torch.testing.assert_close(b, a[[3, 1]])
    clean_t = build_synthetic(noise=0.0)
    clean = clean_t.run(clean_t.make_batch(torch.zeros(5, 3, 64, 64), np.arange(5), probe))
    assert (a - clean).std() > 0.01


def test_recorded_run_has_truth_and_red_exemplars_are_red(tmp_path):
    run = na.record("zoo:synthetic-units", "world:n=80,size=32,seed=0", tmp_path / "run",
                    layers="units", k=8, batch_size=40, num_workers=0)
    units = run.units
    assert {"truth", "truth_kind", "truth_concepts"} <= set(units.columns)
    assert units["truth"].notna().all()
    red = units.loc[units.truth_concepts == "color:red", "unit"].item()
    probe = na.open_probe("world:n=80,size=32,seed=0")
    top = run.topk(red, 8)
    assert len(top) == 8
    for i in top["index"]:
        masks = probe.masks(int(i), 32)
        assert "color:red" in masks and masks["color:red"].any(), f"top image {i} has no red"
    # exemplars re-run the target: same values as recorded (noise is tied to the image)
    from neuronatlas.atlas.exemplars import exemplars

    ex = exemplars(run, red, k=3)
    np.testing.assert_allclose([e.recomputed for e in ex], [e.value for e in ex], rtol=1e-5)


def test_refuses_probe_sets_without_masks(tmp_path, image_folder):
    with pytest.raises(UserError, match="world"):
        na.record("zoo:synthetic-units", str(image_folder), tmp_path / "run", layers="units",
                  num_workers=0)
