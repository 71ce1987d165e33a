"""Exact moments (recording/exact_sum.py) against Chan's float64 update, side by side in one run.

    .venv/bin/python benchmarks/exact_stats.py [--units 3072] [--batch 32] [--batches 40]

Per batch of pooled values (B x U float32): the time of
  - chan:     the float64 mean / M2 parallel update `RunningStats` used before (the reference here)
  - exact:    `RunningStats` now (exact sums of x and x^2, carries, min / max / positives)
  - extremes: top/bottom-k (k=50), for scale: what `record` also does per batch
and, once per run, the cost of turning the exact sums into mean and M2 (done at the merge).
Also: whether two splits of the same values give the same bits (chan: no, exact: yes).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch


class Chan:
    def __init__(self, u):
        self.n, self.mean, self.m2 = 0, torch.zeros(u, dtype=torch.float64), torch.zeros(u, dtype=torch.float64)

    def update(self, v):
        v = v.double()
        nb, mb = v.shape[0], v.mean(0)
        m2b = ((v - mb) ** 2).sum(0)
        n = self.n + nb
        d = mb - self.mean
        self.mean = self.mean + d * (nb / n)
        self.m2 = self.m2 + m2b + d ** 2 * (self.n * nb / n)
        self.n = n


def timed(fn, reps):
    t = time.perf_counter()
    for i in range(reps):
        fn(i)
    return (time.perf_counter() - t) / reps


def main():
    from neuronatlas.recording.extremes import Extremes
    from neuronatlas.recording.stats import RunningStats

    ap = argparse.ArgumentParser()
    ap.add_argument("--units", type=int, default=3072)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--batches", type=int, default=40)
    a = ap.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    data = [torch.as_tensor((rng.standard_normal((a.batch, a.units)) * 3 + 0.5).astype(np.float32))
            for _ in range(a.batches)]
    chan, exact, ext = Chan(a.units), RunningStats(a.units), Extremes(a.units, 50)
    idx = [torch.arange(i * a.batch, (i + 1) * a.batch) for i in range(a.batches)]
    t_chan = timed(lambda i: chan.update(data[i]), a.batches)
    t_exact = timed(lambda i: exact.update(data[i]), a.batches)
    t_ext = timed(lambda i: ext.update(data[i], idx[i]), a.batches)
    t = time.perf_counter()
    exact.mean, exact.m2
    t_final = time.perf_counter() - t
    # another split: the same values in one block of all images, then compare the bits
    allv = torch.cat(data)
    chan2, exact2 = Chan(a.units), RunningStats(a.units)
    chan2.update(allv)
    exact2.update(allv)
    out = {
        "units": a.units, "batch": a.batch, "batches": a.batches,
        "ms_per_batch": {"chan": round(t_chan * 1e3, 3), "exact": round(t_exact * 1e3, 3),
                         "extremes_k50": round(t_ext * 1e3, 3)},
        "ratio_exact_to_chan": round(t_exact / t_chan, 2),
        "ratio_exact_to_extremes": round(t_exact / t_ext, 2),
        "finalize_mean_m2_s": round(t_final, 3),
        "state_bytes_per_unit": {"chan": 16, "exact": int(sum(v.nbytes for k, v in exact.state().items()
                                                              if k.endswith("limbs")) / a.units)},
        "same_bits_other_split": {
            "chan": bool(torch.equal(chan.mean, chan2.mean) and torch.equal(chan.m2, chan2.m2)),
            "exact": bool(torch.equal(exact.mean, exact2.mean) and torch.equal(exact.m2, exact2.m2))},
        "units_whose_chan_mean_differs": int((chan.mean != chan2.mean).sum()),
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
