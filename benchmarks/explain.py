"""Time of one explanation at the scale of a whole ViT, and the cost of the deletion curve per k.

    .venv/bin/python benchmarks/explain.py [--images 8] [--threads 2]

A run of timm vit_base_patch32_224 (random weights) with every MLP unit recorded
(`blocks.*.mlp.fc1`: 12 x 3072 = 36,864 units) over a few world images; then `explain` on one image
with a 4-layer chain (K = 5 per layer) and the deletion curve of the last layer only, timed in parts:
attribution to all 36,864 units (one forward + backward), the chain, the deletion curve (one forward
per ranking, all k in one batch; its cost divided by the number of k gives the cost per k), and the
whole call. Printed as JSON.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from neuronatlas.data import open_probe
    from neuronatlas.explain import attribution, chain, explanation, faithfulness
    from neuronatlas.models import load_target
    from neuronatlas.recording import RecordConfig, record

    torch.manual_seed(0)
    target = load_target("timm:vit_base_patch32_224", random_weights=True)
    probe = open_probe(f"world:n={args.images},size=224")
    timings: dict[str, float] = {}

    def timed(name, fn):
        def wrapper(*a, **kw):
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                timings[name] = timings.get(name, 0.0) + time.perf_counter() - t
        return wrapper

    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        t0 = time.perf_counter()
        record(target, probe, run, RecordConfig(layers=["blocks.*.mlp.fc1"], k=5),
               show_progress=False)
        record_s = time.perf_counter() - t0
        explanation.attribute = timed("attribution_s", attribution.attribute)
        explanation.build_chain = timed("chain_s", chain.build_chain)
        explanation.deletion_curves = timed("deletion_s", faithfulness.deletion_curves)
        explanation.explain(run, 0, target=target, probe=probe, chain_k=5, chain_layers=4,
                            random_draws=1)  # warm-up (allocator, first-call costs)
        timings.clear()
        t0 = time.perf_counter()
        result = explanation.explain(run, 0, target=target, probe=probe, chain_k=5, chain_layers=4,
                                     random_draws=5)
        total = time.perf_counter() - t0
    n_k = len(result["deletion"][0]["k"])
    rankings = 2 + 5  # attribution, activation, 5 random draws
    print(json.dumps({
        "units": 36864, "layers": 12, "chain_layers": 4, "chain_k": 5, "threads": args.threads,
        "record_s": round(record_s, 2), "explain_total_s": round(total, 2),
        **{k: round(v, 2) for k, v in timings.items()},
        "deletion_ks": n_k, "deletion_per_k_s": round(timings["deletion_s"] / (n_k * rankings), 4),
        "chain_nodes": len(result["chain"]["nodes"]), "chain_edges": len(result["chain"]["edges"]),
    }, indent=2))


if __name__ == "__main__":
    main()
