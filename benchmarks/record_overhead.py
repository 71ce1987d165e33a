"""Recording overhead and memory, side by side in one process.

    .venv/bin/python benchmarks/record_overhead.py [--n 512] [--batch-size 32]

1. Speed: open_clip ViT-B-32 (random weights), all units of 4 MLP layers, N world images at 224 px.
   - bare:      the loader + a plain forward pass over the same batches (nothing recorded)
   - record:    `neuronatlas record` (hooks, pooling, top/bottom-k, stats, histograms, checkpoints)
   - record-full-forward: the same with stop_early=False (the whole network runs, as in `bare`)
   Reported as ratios to `bare`.
2. Memory: peak RSS of a fresh process recording N and 4N images (same model and layers).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time

LAYERS = "visual.transformer.resblocks.2.mlp.c_fc,visual.transformer.resblocks.5.mlp.c_fc," \
         "visual.transformer.resblocks.8.mlp.c_fc,visual.transformer.resblocks.11.mlp.c_fc"
MODEL = "open_clip:ViT-B-32"


def bare(n: int, batch_size: int, workers: int) -> float:
    import torch

    from neuronatlas.data import iter_batches, open_probe
    from neuronatlas.models import load_target

    torch.manual_seed(0)
    target = load_target(MODEL, random_weights=True)
    probe = open_probe(f"world:n={n},size=224,seed=0")
    t0 = time.perf_counter()
    with torch.no_grad():
        for batch in iter_batches(probe, target.preprocess.transform(), list(range(n)), batch_size,
                                  workers):
            target.forward(batch.pixels)
    return time.perf_counter() - t0


def recorded(n: int, batch_size: int, workers: int, stop_early: bool, out: str) -> float:
    import torch

    import neuronatlas as na
    from neuronatlas.models import load_target

    torch.manual_seed(0)
    target = load_target(MODEL, random_weights=True)
    t0 = time.perf_counter()
    na.record(target, f"world:n={n},size=224,seed=0", out, layers=LAYERS.split(","),
              batch_size=batch_size, num_workers=workers, stop_early=stop_early)
    return time.perf_counter() - t0


def inner_loop(n: int, batch_size: int) -> tuple[float, float]:
    """Per-batch alternation on the same decoded pixels: a bare forward, then the recorder's own work
    (hooks pooling 4 layers + top/bottom-k + stats + histograms). Alternating batch by batch makes
    both sides see the same machine load; returns (bare seconds, recorded seconds)."""
    import torch

    from neuronatlas.data import iter_batches, open_probe
    from neuronatlas.models import load_target
    from neuronatlas.recording.accumulator import LayerAccumulator
    from neuronatlas.recording.hooks import Capture
    from neuronatlas.recording.pooling import pool_output

    torch.manual_seed(0)
    target = load_target(MODEL, random_weights=True)
    points = target.select(LAYERS.split(","))
    reduce = {p.name: (lambda out, p=p: pool_output(out, p.layout, "patch_mean").float())
              for p in points}
    capture = Capture(target, points, stop_early=True, reduce=reduce)
    accs = {p.name: LayerAccumulator(p.n_units, 20) for p in points}
    probe = open_probe(f"world:n={n},size=224,seed=0")
    t_bare = t_rec = 0.0
    for batch in iter_batches(probe, target.preprocess.transform(), list(range(n)), batch_size, 1):
        idx = torch.as_tensor(batch.indices)
        t0 = time.perf_counter()
        with torch.no_grad():
            target.forward(batch.pixels)  # no hooks attached
        t1 = time.perf_counter()
        with capture.attached():  # attaching 4 hooks per batch is part of the measured cost
            outs = capture.run(batch.pixels)
        for name, values in outs.items():
            accs[name].update(values, idx)
        t2 = time.perf_counter()
        t_bare, t_rec = t_bare + (t1 - t0), t_rec + (t2 - t1)
    return t_bare, t_rec


def peak_rss_child(n: int, batch_size: int, workers: int) -> float:
    """Peak RSS (MB) of a fresh process that records n images (decoder workers not included)."""
    code = ("import sys, tempfile, resource; sys.path.insert(0, 'benchmarks');"
            "import record_overhead as b;"
            f"b.recorded({n}, {batch_size}, {workers}, True, tempfile.mkdtemp());"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--skip-memory", action="store_true")
    args = ap.parse_args()
    n, bs, w = args.n, args.batch_size, args.workers

    import pandas  # noqa: F401  one-time imports (tables) are not per-image cost
    import pyarrow.parquet  # noqa: F401

    # Interleave the three and keep each one's best of `repeats`: other load on the machine then
    # hits all of them alike instead of whichever ran during a burst.
    t_bare, t_rec, t_full = [], [], []
    for _ in range(args.repeats):
        t_bare.append(bare(n, bs, w))
        t_rec.append(recorded(n, bs, w, True, tempfile.mkdtemp()))
        t_full.append(recorded(n, bs, w, False, tempfile.mkdtemp()))
    t_bare, t_rec, t_full = min(t_bare), min(t_rec), min(t_full)
    ib, ir = inner_loop(n, bs)
    result = {"model": MODEL, "layers": 4, "units": 4 * 3072, "images": n, "batch_size": bs,
              "repeats": args.repeats,
              "bare_s": round(t_bare, 2), "record_s": round(t_rec, 2),
              "record_full_forward_s": round(t_full, 2),
              "ratio_record_vs_bare": round(t_rec / t_bare, 3),
              "ratio_record_full_forward_vs_bare": round(t_full / t_bare, 3),
              "inner_loop_bare_s": round(ib, 2), "inner_loop_record_s": round(ir, 2),
              "ratio_inner_loop": round(ir / ib, 3)}
    if not args.skip_memory:
        m1, m4 = peak_rss_child(n, bs, w), peak_rss_child(4 * n, bs, w)
        result.update({"peak_rss_mb_N": round(m1, 1), "peak_rss_mb_4N": round(m4, 1),
                       "ratio_memory_4N_vs_N": round(m4 / m1, 3)})
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
