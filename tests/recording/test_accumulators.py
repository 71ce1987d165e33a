"""The accumulator protocol: for every implementation, any split of the images into parts (each fed
in random batches, checkpointed through state()/from_state() on the way, merged in any order)
equals one pass over all of them."""

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from neuronatlas.recording.top_rows import TopRows
from neuronatlas.recording.accumulator import Accumulator, LayerAccumulator, merge_all
from neuronatlas.recording.extremes import Extremes
from neuronatlas.recording.stats import Histogram, RunningStats

# Few distinct values -> many ties; both signs, signed zeros, huge and tiny magnitudes.
VALUES = [-3e30, -3.0, -1.5, -0.25, -0.0, 0.0, 1e-30, 0.5, 2.0, 7.0, 2e30]


def _torch_feed(acc, values, idx):
    acc.update(torch.as_tensor(values[idx]), torch.as_tensor(idx))


def _rows_feed(acc, values, idx):
    rows = np.stack([values, -values], -1)  # a payload that identifies the image and the unit
    acc.update(values[idx].astype(np.float64), idx, rows[idx])


KINDS = {  # name: (new accumulator for U units, feed, exact)
    "extremes": (lambda u, k: Extremes(u, k), _torch_feed, True),
    "stats": (lambda u, k: RunningStats(u), _torch_feed, False),
    "histogram": (lambda u, k: Histogram(u), _torch_feed, True),
    "layer": (lambda u, k: LayerAccumulator(u, k), _torch_feed, False),
    "top_rows": (lambda u, k: TopRows(u, k, 2), _rows_feed, True),
}

data = st.integers(1, 40).flatmap(lambda n: st.integers(1, 4).flatmap(lambda u: st.tuples(
    st.lists(st.sampled_from(VALUES + [float("nan")]), min_size=n * u, max_size=n * u),
    st.lists(st.integers(0, 3), min_size=n, max_size=n),  # the part of each image
    st.just((n, u)))))


def _feed(kind, values, idx, batch_sizes, k, checkpoint_at):
    new, feed, _ = KINDS[kind]
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


def _equal(kind, a: dict, b: dict, scale: float = 1.0):
    assert a.keys() == b.keys()
    for name in a:
        if not KINDS[kind][2] and name in ("mean", "m2"):  # Chan's update: float64 rounding
            atol = 1e-12 * scale ** (2 if name == "m2" else 1)
            np.testing.assert_allclose(a[name], b[name], rtol=1e-9, atol=atol)
        else:
            np.testing.assert_array_equal(a[name], b[name], err_msg=f"{kind}.{name}")


@settings(max_examples=60, deadline=None)
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
    _equal(kind, merged.state(), whole.state(), float(np.nanmax(np.abs(values))))
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
