"""SAE features against neurons of the same layer, by NetDissect on the world's exact masks.

    .venv/bin/python scripts/sae_vs_neurons.py [--out runs/sae-vs-neurons] [--layer ...]

Trains a TopK SAE on zoo:world-clip's residual stream (patch tokens of one encoder layer) over one
world seed, then records the layer twice on a held-out world seed: its 128 neurons, and its SAE
features as units (the SAE as the layer's unit basis). Both are labelled by NetDissect; printed is
the fraction of units whose best concept has IoU above each threshold (features that never fire on
the held-out set are counted as units without a concept). docs/methods/sae.md quotes the table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/sae-vs-neurons")
    ap.add_argument("--layer", default="vision_model.encoder.layers.2")
    ap.add_argument("--train-images", type=int, default=1024)
    ap.add_argument("--test-images", type=int, default=256)
    ap.add_argument("--expansion", type=int, default=4)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from neuronatlas.describe import describe
    from neuronatlas.models import load_target
    from neuronatlas.recording import RecordConfig, record
    from neuronatlas.run import open_run
    from neuronatlas.sae import SAEConfig, TrainConfig
    from neuronatlas.sae.basis import SAEEncoder
    from neuronatlas.sae.fit import train_sae

    out = Path(args.out)
    target = load_target("zoo:world-clip")
    sae = train_sae(target, args.layer, f"world:n={args.train_images},size=64,seed=101",
                    out / "sae", SAEConfig(architecture="topk", d_in=1, d_sae=args.k, k=args.k),
                    TrainConfig(tokens="patches", expansion=args.expansion, epochs=3,
                                batch_tokens=1024, buffer_tokens=16384, checkpoint_every=100))
    test = f"world:n={args.test_images},size=64,seed=202"
    runs = {}
    for name, basis in (("neurons", None), ("features", {args.layer: SAEEncoder(sae)})):
        path = out / name
        record(target, test, path, RecordConfig(layers=[args.layer], k=10), basis=basis,
               show_progress=False)
        describe(path, method="netdissect", target=target)
        runs[name] = open_run(path)
    import json

    metrics = json.loads((out / "sae" / "metrics.json").read_text())
    print(f"zoo:world-clip {args.layer}, TopK SAE k={args.k} x{args.expansion} "
          f"({sae.n_features} features; FVE {metrics['fve']:.3f}, dead {metrics['dead_fraction']:.1%}"
          f" on the training seed); NetDissect on {args.test_images} held-out world images\n")
    print("| units | n | IoU > 0.04 | IoU > 0.10 | IoU > 0.20 | distinct top concepts |")
    print("|---|---|---|---|---|---|")
    for name, run in runs.items():
        labels = run.labels("netdissect")
        top = labels[labels["rank"] == 0].set_index("unit")["score"]
        units = run.units
        n = len(units)
        iou = np.array([float(top.get(u, 0.0)) for u in units["unit"]])
        alive = units["max"].to_numpy() > 0
        iou[~alive] = 0.0
        concepts = labels[(labels["rank"] == 0) & (labels["score"] > 0.04)]["concept"].nunique()
        print(f"| {name} | {n} | {np.mean(iou > 0.04):.3f} | {np.mean(iou > 0.10):.3f} | "
              f"{np.mean(iou > 0.20):.3f} | {concepts} |")


if __name__ == "__main__":
    main()
