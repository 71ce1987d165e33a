"""VLM labelling throughput: sequential vs concurrent requests vs a cached rerun, in one process.

    .venv/bin/python benchmarks/vlm_client.py [--latency 0.05] [--concurrency 8] [--units 40]

A real local chat-completions server (tests/backends/chat_server.py) answers every request after
`latency` seconds (a stand-in for model time on a GPU server). `describe --method vlm` (captions,
k=8, offline summariser, 16 background images) labels `units` synthetic units of a world run:
- sequential:  concurrency 1, no cache (what a plain loop over requests does)
- concurrent:  concurrency N, fresh cache
- cached:      the same command again (every answer from the cache: the resume path)
Reported: wall time, server requests, and ratios to `sequential`.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--latency", type=float, default=0.05)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--units", type=int, default=40)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    import neuronatlas as na
    from neuronatlas.describe import describe
    from tests.backends.chat_server import ChatServer

    tmp = tempfile.mkdtemp()
    run = na.record("zoo:synthetic-units", "world:n=200,size=64,seed=0", f"{tmp}/run",
                    layers="units", k=8, batch_size=50, num_workers=0)
    units = list(run.units.unit[:args.units])
    rows = []
    with ChatServer(delay=args.latency) as server:
        spec = f"openai:bench@{server.url}"
        for name, conc, cache in (("sequential", 1, None),
                                  ("concurrent", args.concurrency, f"{tmp}/cache.sqlite"),
                                  ("cached", args.concurrency, f"{tmp}/cache.sqlite")):
            before = server.requests
            t0 = time.perf_counter()
            describe(run, "vlm", vlm=spec, units=units, k=8, n_background=16, concurrency=conc,
                     cache=cache, show_progress=False)
            rows.append((name, time.perf_counter() - t0, server.requests - before,
                         server.max_in_flight))
            server.max_in_flight = 0
    base = rows[0][1]
    print(f"{len(units)} units, k=8, latency {args.latency * 1000:.0f} ms per request")
    print(f"{'mode':12s} {'seconds':>8s} {'requests':>9s} {'max in flight':>14s} {'speed-up':>9s}")
    for name, sec, req, fl in rows:
        print(f"{name:12s} {sec:8.2f} {req:9d} {fl:14d} {base / sec:8.1f}x")


if __name__ == "__main__":
    main()
