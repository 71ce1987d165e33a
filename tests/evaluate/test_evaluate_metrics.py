"""Ground-truth agreement, agreement between methods and the simulation score, against values
computed by hand (and numpy.corrcoef)."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

import neuronatlas as na
from neuronatlas.evaluate import (agreement_table, evaluate, ground_truth_table, heldout_mask,
                                  pearson, simulation_table, summarize_ground_truth)
from neuronatlas.errors import UserError
from tests.evaluate.conftest import ColorScorer, FakeEmbedder

VECS = {"red": (1, 0, 0), "circle": (0, 1, 0), "red AND circle": (1, 1, 0), "blue": (0, 0, 1),
        "square": (0, 3, 4), "Red": (1, 0, 0), "circle OR square": (0, 1, 1)}


def labels_table(rows):
    return pd.DataFrame(rows, columns=["unit", "method", "rank", "label", "score"])


TRUTH = pd.DataFrame({"unit": ["l:0", "l:1", "l:2"],
                      "truth": ["red", "red AND circle", "circle OR square"],
                      "truth_kind": ["mono", "and", "or"],
                      "truth_concepts": ["color:red", "color:red|shape:circle",
                                         "shape:circle|shape:square"]})


def test_ground_truth_metrics_by_hand():
    labels = labels_table([
        ("l:0", "a", 0, " Red ", 1.0), ("l:0", "a", 1, "blue", 0.5),             # exact (case/space)
        ("l:1", "a", 1, "red AND circle", 0.5), ("l:1", "a", 0, "circle", 0.9),  # partial, top5
        ("l:2", "a", 0, "blue", 1.0),                                             # nothing
        ("l:0", "b", 0, "blue", 1.0), ("l:0", "b", 1, "red", 0.8),                # top5 only
        ("l:9", "b", 0, "red", 1.0),                                              # no truth: dropped
    ])
    vecs = {**VECS, " Red ": (1, 0, 0)}
    gt = ground_truth_table(labels, TRUTH, FakeEmbedder(vecs)).set_index(["unit", "method"])
    assert len(gt) == 4
    assert gt.loc[("l:0", "a"), ["exact", "top5", "partial"]].tolist() == [True, True, True]
    assert gt.loc[("l:1", "a"), ["label", "exact", "top5", "partial"]].tolist() == \
        ["circle", False, True, True]
    assert gt.loc[("l:2", "a"), ["exact", "top5", "partial"]].tolist() == [False, False, False]
    assert gt.loc[("l:0", "b"), ["exact", "top5", "partial"]].tolist() == [False, True, False]
    # cosines: circle vs (1,1,0) = 1/sqrt2; blue vs (0,1,1) = 1/sqrt2; blue vs red = 0
    np.testing.assert_allclose(gt["cosine"].loc[[("l:0", "a"), ("l:1", "a"), ("l:2", "a"),
                                                 ("l:0", "b")]], [1, 1 / math.sqrt(2),
                                                                  1 / math.sqrt(2), 0], atol=1e-6)
    s = summarize_ground_truth(gt.reset_index()).set_index(["method", "kind"])
    assert s.loc[("a", "all"), "n_units"] == 3
    assert s.loc[("a", "all"), "exact"] == pytest.approx(1 / 3)
    assert s.loc[("a", "all"), "top5"] == pytest.approx(2 / 3)
    assert s.loc[("a", "all"), "cosine"] == pytest.approx((1 + 2 / math.sqrt(2)) / 3)
    assert s.loc[("b", "mono"), "top5"] == 1.0


def test_formula_labels_match_up_to_order_with_credit_per_concept():
    labels = pd.DataFrame([
        ("l:2", "c", 0, "square OR circle", "shape:square OR shape:circle"),       # exact, reordered
        ("l:1", "c", 0, "circle AND red", "shape:circle AND color:red"),           # exact
        ("l:0", "c", 0, "red AND NOT circle", "color:red AND NOT shape:circle"),   # 1 of 1 named
        ("l:2", "d", 0, "circle AND square", "shape:circle AND shape:square"),     # wrong operator
        ("l:1", "d", 0, "(red OR blue) AND circle", "(color:red OR color:blue) AND shape:circle"),
        ("l:2", "e", 0, "square OR circle", None),                                  # text only
        ("l:1", "e", 0, "red", None),                                               # single concept
    ], columns=["unit", "method", "rank", "label", "concept"])
    gt = ground_truth_table(labels, TRUTH).set_index(["unit", "method"])
    assert gt["exact"].to_dict() == {("l:0", "c"): False, ("l:1", "c"): True, ("l:2", "c"): True,
                                     ("l:1", "d"): False, ("l:2", "d"): False, ("l:1", "e"): False,
                                     ("l:2", "e"): True}
    credit = gt["concept_credit"]
    assert credit[("l:2", "c")] == 1 and credit[("l:1", "c")] == 1 and credit[("l:0", "c")] == 1
    assert credit[("l:2", "d")] == 1  # the right concepts, the wrong operator: credit, not exact
    assert credit[("l:1", "d")] == pytest.approx(2 / 3) and credit[("l:1", "e")] == 0.5
    assert gt["partial"].all()
    s = summarize_ground_truth(gt.reset_index()).set_index(["method", "kind"])
    assert s.loc[("d", "all"), "concept_credit"] == pytest.approx((1 + 2 / 3) / 2)


def test_concept_column_counts_as_exact_for_mono_units():
    labels = labels_table([("l:0", "nd", 0, "something else", 0.3)]).assign(concept="color:red")
    gt = ground_truth_table(labels, TRUTH)
    assert gt["exact"].item() and gt["cosine"].isna().all()


def test_agreement_by_hand():
    labels = labels_table([
        ("l:0", "a", 0, "red", 1), ("l:1", "a", 0, "circle", 1), ("l:2", "a", 0, "blue", 1),
        ("l:0", "b", 0, "RED", 1), ("l:1", "b", 1, "circle", 1), ("l:1", "b", 0, "square", 2),
        ("l:3", "b", 0, "red", 1),
    ])
    vecs = {**VECS, "RED": (2, 0, 0)}
    ag = agreement_table(labels, FakeEmbedder(vecs))
    row = ag.iloc[0]
    assert (row["method"], row["other"], row["n_units"]) == ("a", "b", 2)
    assert row["same_top1"] == 0.5  # l:0 red == RED; l:1 circle vs square
    # cos(red, RED) = 1; cos(circle, square) = 3/5
    assert row["cosine"] == pytest.approx((1 + 0.6) / 2)


def test_pearson_equals_numpy():
    rng = np.random.default_rng(0)
    for _ in range(20):
        x, y = rng.normal(size=30), rng.normal(size=30)
        assert pearson(x, y) == pytest.approx(np.corrcoef(x, y)[0, 1], abs=1e-12)
    assert math.isnan(pearson(np.ones(5), np.arange(5)))
    x, y = rng.normal(size=10), rng.normal(size=10)
    x[3] = np.nan  # skipped pairs
    keep = np.arange(10) != 3
    assert pearson(x, y) == pytest.approx(np.corrcoef(x[keep], y[keep])[0, 1])


def test_heldout_split_is_deterministic_and_by_id():
    ids = [f"img{i}" for i in range(400)]
    a = heldout_mask(ids, 0.5, seed=0)
    assert a.tolist() == heldout_mask(ids, 0.5, seed=0).tolist()
    assert heldout_mask(ids[::-1], 0.5, seed=0).tolist() == a[::-1].tolist()
    assert 0.4 < a.mean() < 0.6 and heldout_mask(ids, 0.5, seed=1).tolist() != a.tolist()


@pytest.fixture
def small_run(tmp_path, image_folder, tiny_cnn_file):
    run = na.record(tiny_cnn_file, str(image_folder), tmp_path / "run", layers="fc", save_acts=True,
                    num_workers=0)
    from neuronatlas.run import write_labels

    labels = labels_table([(f"fc:{u}", "m1", 0, t, 1.0) for u, t in
                           enumerate(["red", "green", "blue", "red", "purple"])])
    write_labels(run.path, "m1", labels, {})
    labels2 = labels_table([(f"fc:{u}", "m2", 0, t, 1.0) for u, t in
                            enumerate(["red", "blue", "blue", "green", "purple"])])
    write_labels(run.path, "m2", labels2, {})
    return run


def test_simulation_equals_corrcoef(small_run):
    run, scorer = small_run, ColorScorer()
    table = simulation_table(run, scorer, run.labels("m1"), holdout=0.5, seed=0)
    probe = na.open_probe(run.meta["probe"]["spec"])
    held = heldout_mask(run.images["image_id"], 0.5, 0)
    index = run.images["index"].to_numpy()[held]
    img = torch.stack([scorer.preprocess(probe.read_image(int(i))) for i in index])
    emb = scorer.encode_images(img)
    acts = np.asarray(run.acts("fc"))[index]
    for r in table.itertuples():
        u = int(r.unit.split(":")[1])
        sim = (emb @ scorer.encode_texts([r.label]).T)[:, 0].numpy()
        assert r.pearson == pytest.approx(np.corrcoef(sim, acts[:, u])[0, 1], abs=1e-5)
        assert r.n_images == len(index)


def test_evaluate_writes_tables(small_run):
    run = small_run
    vecs = {"red": (1, 0, 0), "green": (0, 1, 0), "blue": (0, 0, 1), "purple": (1, 0, 1)}
    summary = evaluate(run, embedder=FakeEmbedder(vecs), scorer=ColorScorer(),
                       truth=pd.DataFrame({"unit": ["fc:0", "fc:1"], "truth": ["red", "blue"]}))
    assert list(summary.columns) == ["metric", "method", "other", "kind", "n_units", "value"]
    got = summary[summary.kind == "all"].set_index(["metric", "method"])["value"]
    assert got[("exact", "m1")] == 0.5 and got[("exact", "m2")] == 1.0
    assert got[("agreement_same_top1", "m1")] == pytest.approx(3 / 5)
    assert got[("agreement_cosine", "m1")] == pytest.approx(3 / 5)
    assert ("simulation_pearson", "m1") in got.index
    for name in ("summary", "ground_truth", "simulation", "agreement"):
        assert len(run.evaluation(name)) > 0
    with pytest.raises(UserError, match="no labels from method"):
        evaluate(run, methods="nope", embedder=None)


def test_simulation_needs_saved_acts(tmp_path, image_folder, tiny_cnn_file):
    run = na.record(tiny_cnn_file, str(image_folder), tmp_path / "run", layers="fc", num_workers=0)
    from neuronatlas.run import write_labels

    write_labels(run.path, "m", labels_table([("fc:0", "m", 0, "red", 1.0)]), {})
    summary = evaluate(run, embedder=None, scorer=ColorScorer())
    assert "simulation_pearson" not in set(summary["metric"])
    with pytest.raises(UserError, match="save-acts"):
        evaluate(run, embedder=None, scorer=ColorScorer(), simulation=True)


class TextOnlyScorer(ColorScorer):
    """A CLIP stand-in whose text space differs from the MiniLM stand-in's."""

    name = "fake:clip-text"
    TEXTS = {"red": (1, 0, 0), "circle": (1, 1, 0), "red AND circle": (1, 0, 1), "blue": (0, 1, 0),
             "circle OR square": (0, 1, 0)}


def test_clip_cosine_by_hand():
    labels = labels_table([("l:0", "a", 0, "red", 1.0), ("l:1", "a", 0, "circle", 1.0),
                           ("l:2", "a", 0, "blue", 1.0)])
    gt = ground_truth_table(labels, TRUTH, FakeEmbedder(VECS), clip_scorer=TextOnlyScorer())
    gt = gt.set_index("unit")
    # red/red = 1; circle (1,1,0) vs red AND circle (1,0,1) = 1/2; blue (0,1,0) vs (0,1,0) = 1
    np.testing.assert_allclose(gt.loc[["l:0", "l:1", "l:2"], "clip_cosine"], [1, 0.5, 1], atol=1e-6)
    # MiniLM stand-in differs: circle vs red AND circle = 1/sqrt2, blue vs circle OR square = 1/sqrt2
    np.testing.assert_allclose(gt.loc[["l:1", "l:2"], "cosine"], [1 / math.sqrt(2)] * 2, atol=1e-6)
    s = summarize_ground_truth(gt.reset_index()).set_index(["method", "kind"])
    assert s.loc[("a", "all"), "clip_cosine"] == pytest.approx(2.5 / 3)
    plain = ground_truth_table(labels, TRUTH, FakeEmbedder(VECS))
    assert "clip_cosine" not in plain.columns
    assert "clip_cosine" not in summarize_ground_truth(plain).columns


def test_evaluate_adds_clip_cosine(small_run):
    truth = pd.DataFrame({"unit": ["fc:0", "fc:1"], "truth": ["red", "blue"]})
    summary = evaluate(small_run, embedder=None, simulation=False, truth=truth,
                       clip_scorer=ColorScorer())
    got = summary[summary.kind == "all"].set_index(["metric", "method"])["value"]
    # m1: red/red = 1, green/blue = 0; m2: red/red = 1, blue/blue = 1
    assert got[("clip_cosine", "m1")] == pytest.approx(0.5)
    assert got[("clip_cosine", "m2")] == pytest.approx(1.0)
    assert "clip_cosine" in small_run.evaluation("ground_truth").columns
    plain = evaluate(small_run, embedder=None, simulation=False, truth=truth, write=False)
    assert "clip_cosine" not in set(plain["metric"])
