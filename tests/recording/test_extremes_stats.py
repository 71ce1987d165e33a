"""Streaming top/bottom-k and statistics: equal to brute force, and merges equal a single pass."""

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from neuronatlas.recording.accumulator import LayerAccumulator
from neuronatlas.recording.extremes import Extremes
from neuronatlas.recording.stats import HIST_BINS, Histogram, hist_edges


def brute_extremes(values_NU, k):
    """Sort every unit's column by (value desc, index asc) / (value asc, index asc)."""
    n, u = values_NU.shape
    top_v, top_i, bot_v, bot_i = [], [], [], []
    for j in range(u):
        col = [(float(values_NU[i, j]), i) for i in range(n)]
        t = sorted(col, key=lambda p: (-p[0], p[1]))[:k]
        b = sorted(col, key=lambda p: (p[0], p[1]))[:k]
        top_v.append([v for v, _ in t]); top_i.append([i for _, i in t])
        bot_v.append([v for v, _ in b]); bot_i.append([i for _, i in b])
    return np.array(top_v), np.array(top_i), np.array(bot_v), np.array(bot_i)


def stream(values_NU, order, k, batch):
    """Feed images in `order` (probe indices), `batch` at a time."""
    acc = LayerAccumulator(values_NU.shape[1], k)
    for a in range(0, len(order), batch):
        idx = np.asarray(order[a:a + batch])
        acc.update(torch.as_tensor(values_NU[idx]), torch.as_tensor(idx))
    return acc


# Few distinct values -> many ties; negative and positive values.
values_strategy = st.integers(2, 40).flatmap(lambda n: st.integers(1, 5).flatmap(
    lambda u: st.lists(st.sampled_from([-3e30, -3.0, -1.5, -0.25, -0.0, 0.0, 1e-30, 0.5, 2.0, 7.0, 2e30]),
                       min_size=n * u, max_size=n * u).map(
        lambda xs: np.array(xs, dtype=np.float32).reshape(n, u))))


@settings(max_examples=150, deadline=None)
@given(values=values_strategy, k=st.integers(1, 8), batch=st.integers(1, 9),
       n_shards=st.integers(1, 5), strided=st.booleans())
def test_sharded_merge_equals_single_pass_and_brute_force(values, k, batch, n_shards, strided):
    n = values.shape[0]
    single = stream(values, list(range(n)), k, batch)
    if strided:
        shards = [list(range(s, n, n_shards)) for s in range(n_shards)]
    else:
        shards = [list(c) for c in np.array_split(np.arange(n), n_shards)]
    merged = None
    for order in shards:
        part = stream(values, order, k, batch)
        merged = part if merged is None else (merged.merge(part) or merged)

    kk = min(k, n)
    tv, ti, bv, bi = brute_extremes(values, kk)
    for acc in (single, merged):
        ext = acc.extremes
        np.testing.assert_array_equal(ext.top_index[:, :kk].numpy(), ti)
        np.testing.assert_array_equal(ext.top_values[:, :kk].numpy(), tv)
        np.testing.assert_array_equal(ext.bottom_index[:, :kk].numpy(), bi)
        np.testing.assert_array_equal(ext.bottom_values[:, :kk].numpy(), bv)
        assert (ext.top_index[:, kk:] == -1).all() and (ext.bottom_index[:, kk:] == -1).all()
        s = acc.stats
        assert s.count == n
        np.testing.assert_allclose(s.mean.numpy(), values.astype(np.float64).mean(0), atol=1e-12)
        np.testing.assert_allclose(s.std.numpy(), values.astype(np.float64).std(0), atol=1e-9)
        np.testing.assert_array_equal(s.min.numpy(), values.min(0))
        np.testing.assert_array_equal(s.max.numpy(), values.max(0))
        np.testing.assert_array_equal(s.n_positive.numpy(), (values > 0).sum(0))
    np.testing.assert_array_equal(single.histogram.hist.numpy(), merged.histogram.hist.numpy())


def test_histogram_counts_match_numpy_histogram():
    rng = np.random.default_rng(0)
    values = (rng.standard_normal((500, 3)) * np.array([0.01, 1.0, 100.0])).astype(np.float32)
    st_ = Histogram(3)
    st_.update(torch.as_tensor(values))
    edges = hist_edges()
    for j in range(3):
        expected, _ = np.histogram(values[:, j].astype(np.float64), bins=edges)
        got = st_.hist[j].numpy()
        # np.histogram's last bin is closed; both ends also absorb out-of-range values
        assert got.sum() == 500
        np.testing.assert_allclose(got, expected, atol=2)  # float rounding at exact edges only
    q = st_.quantiles([0.5], values.min(0), values.max(0))[:, 0]
    np.testing.assert_allclose(q, np.median(values, 0), rtol=0.15, atol=2e-3)
    assert st_.hist.shape == (3, HIST_BINS)


def test_state_round_trip_is_exact():
    rng = np.random.default_rng(1)
    values = rng.standard_normal((50, 4)).astype(np.float32)
    acc = stream(values, list(range(50)), 5, 7)
    back = LayerAccumulator.from_state(acc.state())
    for name, arr in acc.state().items():
        np.testing.assert_array_equal(back.state()[name], arr)


def test_bottom_k_is_true_minimum_across_batches_with_negatives():
    # The reference code merged a positive buffer with negated batches; check the real minima.
    values = np.array([[5.0], [-1.0], [3.0], [-7.0], [0.0], [-2.0]], dtype=np.float32)
    ext = Extremes(1, 3)
    for a in range(0, 6, 2):
        ext.update(torch.as_tensor(values[a:a + 2]), torch.arange(a, a + 2))
    assert ext.bottom_values[0].tolist() == [-7.0, -2.0, -1.0]
    assert ext.bottom_index[0].tolist() == [3, 5, 1]
    assert ext.top_index[0].tolist() == [0, 2, 4]
