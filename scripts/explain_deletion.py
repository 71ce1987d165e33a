"""The deletion-curve gap of `explain` on real photos (docs/methods/explain.md is made from this).

    .venv/bin/python scripts/explain_deletion.py [--out runs/explain-photos] [--layers ...]

Records zoo:efficientnet-lite0 (real ImageNet weights shipped in a pip package) on `photos:` (the
photos scikit-image and scikit-learn ship), then explains every photo's predicted class with the
defaults (grad x act, the run's mean as the ablation) and averages, per layer and k, the predicted
logit after ablating the top-k units by attribution, the top-k by activation, and k random units
(3 draws), for the last recorded layer, as a fraction of the clean logit. Prints a markdown table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/explain-photos")
    ap.add_argument("--layers", default="_blocks.14,_blocks.15")
    ap.add_argument("--photos", type=int, default=0, help="first N photos only (0: all)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from neuronatlas.data import open_probe
    from neuronatlas.explain import explain
    from neuronatlas.models import load_target
    from neuronatlas.recording import RecordConfig, record

    target, probe = load_target("zoo:efficientnet-lite0"), open_probe("photos:")
    run = Path(args.out) / "run"
    record(target, probe, run, RecordConfig(layers=args.layers.split(","), k=5),
           show_progress=False)
    rows: dict[tuple[str, int], dict[str, list[float]]] = {}
    n = args.photos or len(probe)
    for i in range(n):
        result = explain(run, i, target=target, probe=probe, chain_k=3, random_draws=3)
        clean = result["output"]["logit"]
        for curve in result["deletion"]:
            for j, k in enumerate(curve["k"]):
                cell = rows.setdefault((curve["layer"], k), {"attribution": [], "activation": [],
                                                             "random": []})
                cell["attribution"].append(curve["attribution"][j] / clean)
                cell["activation"].append(curve["activation"][j] / clean)
                cell["random"].append(curve["random_mean"][j] / clean)
    print(f"{n} photos, zoo:efficientnet-lite0, predicted logit after ablating k units "
          f"(fraction of the clean logit, mean over photos)\n")
    print("| layer | k | top-k by attribution | top-k by activation | k random |")
    print("|---|---|---|---|---|")
    for (layer, k), cell in sorted(rows.items()):
        if k == 0:
            continue
        print(f"| {layer} | {k} | {np.mean(cell['attribution']):.3f} | "
              f"{np.mean(cell['activation']):.3f} | {np.mean(cell['random']):.3f} |")


if __name__ == "__main__":
    main()
