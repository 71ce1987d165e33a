"""NetDissect IoU: streaming quantile, IoU counts against brute force, recovery of synthetic units."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import neuronatlas as na
from neuronatlas.describe.netdissect import DoublingHistogram, netdissect
from neuronatlas.describe.netdissect_kernel import (ActiveCounter, ConceptPatterns, concept_counts,
                                                   iou_table)
from neuronatlas.errors import UserError


def value_of_rank(values, q):
    """The ceil(q N)-th largest value: the histogram's threshold lies in the same bin."""
    return np.sort(values)[::-1][math.ceil(q * len(values)) - 1]


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 6), st.floats(0.001, 0.2))
def test_streaming_quantile_is_within_one_bin(seed, n_batches, q):
    rng = np.random.default_rng(seed)
    # batches whose range grows and shifts, so the histogram must double up and down
    batches = [rng.normal(loc=rng.uniform(-5, 5), scale=10.0 ** rng.uniform(-2, 2), size=(3, 200))
               for _ in range(n_batches)]
    h = DoublingHistogram(3, bins=256)
    for b in batches:
        h.update(torch.from_numpy(b))
    got = h.upper_quantile(q).numpy()
    allv = np.concatenate(batches, axis=1)
    for u in range(3):
        width = float(h.width[u])
        assert abs(got[u] - value_of_rank(allv[u], q)) <= width + 1e-9
        assert h.lo[u] <= allv[u].min() and allv[u].max() < h.lo[u] + 256 * width
        assert h.counts[u].sum() == allv.shape[1]


def test_constant_unit_gets_a_threshold_at_its_value():
    h = DoublingHistogram(1, bins=16)
    h.update(torch.full((1, 50), 2.0))
    assert abs(float(h.upper_quantile(0.005)[0]) - 2.0) < 1e-5


def bilinear(img, m):
    """Bilinear upsampling (align_corners=False, PyTorch's rule), by hand."""
    h = img.shape[0]
    scale = h / m

    def src(i):
        x = max((i + 0.5) * scale - 0.5, 0.0)
        x0 = int(math.floor(x))
        x1 = x0 + 1 if x0 < h - 1 else x0
        return x0, x1, x - x0

    out = np.zeros((m, m))
    for i in range(m):
        y0, y1, ly = src(i)
        for j in range(m):
            x0, x1, lx = src(j)
            out[i, j] = ((1 - ly) * ((1 - lx) * img[y0, x0] + lx * img[y0, x1])
                         + ly * ((1 - lx) * img[y1, x0] + lx * img[y1, x1]))
    return out


def test_iou_equals_brute_force_on_a_tiny_case():
    rng = np.random.default_rng(0)
    n, units, grid, concepts, m = 4, 3, 3, 5, 6
    maps = rng.normal(size=(n, units, grid, grid)).astype(np.float32)
    masks = rng.random((n, concepts, m, m)) < 0.3
    thr = np.array([0.5, 1.0, -0.2])
    # a budget of two upsampled maps per chunk
    counter = ActiveCounter(torch.from_numpy(thr), m, memory_budget=16 * ActiveCounter.BYTES_PER_PIXEL * m * m)
    assert counter.chunk == 2
    patterns = ConceptPatterns(concepts)
    for part in (slice(0, 1), slice(1, n)):  # two batches
        counter.update(torch.from_numpy(maps[part]), patterns.ids(torch.from_numpy(masks[part])))
    iou = iou_table(*concept_counts(*counter.table(), patterns.bits(), patterns.counts, units)).numpy()
    for u in range(units):
        for c in range(concepts):
            inter = union = 0
            for i in range(n):
                up = bilinear(maps[i, u].astype(np.float64), m)
                for y in range(m):
                    for x in range(m):
                        a, b = up[y, x] > thr[u], masks[i, c, y, x]
                        inter += a and b
                        union += a or b
            assert iou[u, c] == pytest.approx(inter / union if union else 0.0, abs=1e-12)


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("nd") / "run"
    return na.record("zoo:synthetic-units", "world:n=200,size=64,seed=0", out, layers="units",
                     batch_size=50, num_workers=0)


def test_netdissect_recovers_mono_synthetic_units(synthetic_run):
    run = synthetic_run
    df = netdissect(run, top=5)
    assert set(df.columns) >= {"unit", "method", "rank", "label", "score", "concept"}
    assert (df.groupby("unit").size() == 5).all()
    assert (df.groupby("unit")["score"].apply(lambda s: s.is_monotonic_decreasing)).all()
    top = df[df["rank"] == 0].merge(run.units[["unit", "truth_kind", "truth_concepts"]], on="unit")
    mono = top[top.truth_kind == "mono"]
    exact = (mono.concept == mono.truth_concepts).mean()
    assert exact >= 0.8, exact  # measured 36/39 = 0.92 (misses: large, in the center, on the right)
    # an AND unit's best concept is one of its two attributes
    ands = top[top.truth_kind == "and"]
    assert np.mean([c in t.split("|") for c, t in zip(ands.concept, ands.truth_concepts)]) >= 0.9
    # stored as the run's labels
    stored = run.labels("netdissect")
    assert len(stored) == len(df) and stored["method"].eq("netdissect").all()
    assert run.label_config("netdissect")["quantile"] == 0.005


def test_registered_in_describe(synthetic_run):
    from neuronatlas.describe import METHODS, describe

    assert "netdissect" in METHODS
    df = describe(synthetic_run, "netdissect", top=2, layers="units")
    assert list(df.columns[:5]) == ["unit", "method", "rank", "label", "score"]
    assert len(df) == 2 * len(synthetic_run.units)
    assert synthetic_run.label_config("netdissect")["method"] == "netdissect"
    with pytest.raises(UserError, match="does not take concepts"):
        describe(synthetic_run, "netdissect", concepts="words20k", scorer=None)


def test_netdissect_refuses_probe_sets_without_masks(tmp_path, image_folder, tiny_cnn_file):
    run = na.record(tiny_cnn_file, str(image_folder), tmp_path / "run", layers="conv1",
                    num_workers=0)
    with pytest.raises(UserError, match="world"):
        netdissect(run)


def test_netdissect_refuses_vector_layers(tmp_path, tiny_cnn_file):
    run = na.record(tiny_cnn_file, "world:n=4,size=32", tmp_path / "run", layers="fc",
                    num_workers=0)
    with pytest.raises(UserError, match="spatial grid"):
        netdissect(run)
