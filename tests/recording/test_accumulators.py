"""The accumulator protocol: for every implementation, any split of the images into parts (each fed
in random batches, checkpointed through state()/from_state() on the way, merged in any order)
equals one pass over all of them, bit for bit (the states' bytes, signed zeros included)."""

from fractions import Fraction

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from neuronatlas.recording.top_rows import TopRows
from neuronatlas.recording.accumulator import Accumulator, LayerAccumulator, merge_all
from neuronatlas.recording.exact_sum import ExactSum
from neuronatlas.recording.extremes import Extremes
from neuronatlas.recording.stats import Histogram, RunningStats

# Few distinct values -> many ties; both signs, signed zeros, huge and tiny magnitudes (float32's
# largest finite value and smallest subnormal included: the exact sums must cover its whole range).
VALUES = [-3.4e38, -3e30, -3.0, -1.5, -0.25, -0.0, 0.0, 1e-45, 1e-30, 0.1, 0.5, 2.0, 7.0, 2e30, 3.4e38]


def _torch_feed(acc, values, idx):
    acc.update(torch.as_tensor(values[idx]), torch.as_tensor(idx))


def _rows_feed(acc, values, idx):
    rows = np.stack([values, -values], -1)  # a payload that identifies the image and the unit
    acc.update(values[idx].astype(np.float64), idx, rows[idx])


KINDS = {  # name: (new accumulator for U units, feed)
    "extremes": (lambda u, k: Extremes(u, k), _torch_feed),
    "stats": (lambda u, k: RunningStats(u), _torch_feed),
    "exact_sum": (lambda u, k: ExactSum(u), _torch_feed),
    "histogram": (lambda u, k: Histogram(u), _torch_feed),
    "layer": (lambda u, k: LayerAccumulator(u, k), _torch_feed),
    "top_rows": (lambda u, k: TopRows(u, k, 2), _rows_feed),
}

data = st.integers(1, 40).flatmap(lambda n: st.integers(1, 4).flatmap(lambda u: st.tuples(
    st.lists(st.sampled_from(VALUES + [float("nan")]), min_size=n * u, max_size=n * u),
    st.lists(st.integers(0, 3), min_size=n, max_size=n),  # the part of each image
    st.just((n, u)))))


def _feed(kind, values, idx, batch_sizes, k, checkpoint_at):
    new, feed = KINDS[kind]
    acc = new(values.shape[1], k)
    a = 0
    for j, b in enumerate(batch_sizes):
        if a >= len(idx):
            break
        feed(acc, values, idx[a:a + b])
        a += b
        if j == checkpoint_at:  # a checkpoint and a restart
            acc = type(acc).from_state(acc.state())
    if a < len(idx):
        feed(acc, values, idx[a:])
    return acc


def _equal(kind, a: dict, b: dict):
    assert a.keys() == b.keys()
    for name in a:
        x, y = np.asarray(a[name]), np.asarray(b[name])
        assert x.dtype == y.dtype and x.shape == y.shape, f"{kind}.{name}"
        assert x.tobytes() == y.tobytes(), f"{kind}.{name}: {x} != {y}"


@settings(max_examples=200, deadline=None)
@given(d=data, kind=st.sampled_from(sorted(KINDS)), k=st.integers(1, 6),
       batches=st.lists(st.integers(1, 9), min_size=1, max_size=8), ck=st.integers(-1, 4),
       merge_order=st.permutations(range(4)))
def test_any_split_merges_to_one_pass(d, kind, k, batches, ck, merge_order):
    flat, part, (n, u) = d
    values = np.array(flat, dtype=np.float32).reshape(n, u)
    if kind != "top_rows":  # the recorder refuses non-finite values; TopRows skips NaN
        values = np.nan_to_num(values, nan=1.5)
    whole = _feed(kind, values, np.arange(n), batches, k, ck)
    part = np.array(part)
    parts = [_feed(kind, values, np.flatnonzero(part == p), batches[::-1], k, ck)
             for p in merge_order]
    merged = merge_all(parts)
    assert isinstance(merged, Accumulator)
    _equal(kind, merged.state(), whole.state())
    again = type(merged).from_state(merged.state())  # a round trip is exact
    _equal(kind, again.state(), merged.state())


def test_top_rows_against_brute_force():
    rng = np.random.default_rng(1)
    vals = rng.integers(0, 5, (30, 4)).astype(float)  # many ties
    vals[3, 1] = np.nan
    rows = rng.normal(size=(30, 4, 2))
    top = TopRows(4, 6, 2)
    for s, e in ((0, 7), (7, 8), (8, 20), (20, 30)):
        top.update(vals[s:e], np.arange(s, e), rows[s:e])
    v, i, r = top.result()
    for n in range(4):
        col = np.where(np.isnan(vals[:, n]), -np.inf, vals[:, n])
        expect = sorted(range(30), key=lambda j: (-col[j], j))[:6]
        assert list(i[n]) == expect and np.array_equal(r[n], rows[expect, n])
        assert np.array_equal(v[n], col[expect])


def test_moments_are_the_exact_rational_values_rounded_once():
    """mean and M2 against Fraction arithmetic on the same float32 values (and std follows)."""
    rng = np.random.default_rng(3)
    values = np.concatenate([rng.choice(np.float32(VALUES[1:-1]), (60, 3)),
                             (rng.standard_normal((60, 3)) * [1e-3, 1.0, 1e4]).astype(np.float32)])
    values[:, 2] = np.float32(0.1)  # a constant unit: M2 exactly 0 (Chan's update leaves ~1e-18)
    st_ = RunningStats(3)
    for a in range(0, 120, 17):
        st_.update(torch.as_tensor(values[a:a + 17]))
    for u in range(3):
        xs = [Fraction(float(v)) for v in values[:, u]]
        mean = sum(xs) / len(xs)
        m2 = sum((x - mean) ** 2 for x in xs)
        assert st_.mean[u].item() == float(mean)
        assert st_.m2[u].item() == float(m2)
    assert st_.m2[2].item() == 0.0 and st_.std[2].item() == 0.0
    assert st_.count == 120
