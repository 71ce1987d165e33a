"""SAE training throughput and memory, in one run. Prints JSON.

    .venv/bin/python benchmarks/sae_train.py [--d-in 768] [--expansion 8] [--k 32] [--steps 60]

1. Step throughput (rows per second) of neuronatlas's TopK training step (buffer draw, AuxK on dead
   features, gradient projection, unit-norm decoder) against a straightforward PyTorch TopK SAE loop
   of the same size (encode, top-k, decode, MSE, Adam), on the same random rows; ratio ours / plain.
2. Peak memory of `train_sae` on a model's layer (timm vit_tiny_patch16_224, random weights,
   blocks.5.mlp.fc1 over world images) when the probe set grows 4x: each size in a fresh process,
   peak RSS from the kernel (ru_maxrss). Must stay flat: the shuffle buffer bounds what is held.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time

import torch


def plain_topk_loop(x: torch.Tensor, d_sae: int, k: int, batch: int, steps: int) -> float:
    d_in = x.shape[1]
    w_dec = torch.randn(d_sae, d_in)
    w_dec /= w_dec.norm(dim=1, keepdim=True)
    params = [torch.nn.Parameter(w_dec.T.clone()), torch.nn.Parameter(torch.zeros(d_sae)),
              torch.nn.Parameter(w_dec), torch.nn.Parameter(torch.zeros(d_in))]
    w_enc, b_enc, w_dec, b_dec = params
    opt = torch.optim.Adam(params, lr=4e-4)
    start = time.perf_counter()
    for i in range(steps):
        xb = x[(i * batch) % (len(x) - batch):][:batch]
        pre = (xb - b_dec) @ w_enc + b_enc
        v, idx = pre.topk(k, dim=-1)
        f = torch.zeros_like(pre).scatter(-1, idx, v.relu())
        loss = ((f @ w_dec + b_dec) - xb).pow(2).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return steps * batch / (time.perf_counter() - start)


def ours(x: torch.Tensor, d_sae: int, k: int, batch: int, steps: int) -> float:
    from neuronatlas.sae import SAEConfig, TrainConfig
    from neuronatlas.sae.sources import TensorSource
    from neuronatlas.sae.trainer import Trainer

    rows = x[:steps * batch]
    cfg = SAEConfig(architecture="topk", d_in=x.shape[1], d_sae=d_sae, k=k)
    train = TrainConfig(batch_tokens=batch, buffer_tokens=8 * batch, dead_after=batch * 5)
    trainer = Trainer(cfg, train, TensorSource(rows, chunk=batch), None)
    trainer._initialise(rows[:4 * batch])  # as training does on its first buffer
    start = time.perf_counter()
    trainer.run()
    return trainer.state.step * batch / (time.perf_counter() - start)


MEMORY_CHILD = """
import resource, sys, tempfile, torch
torch.set_num_threads(2)
from neuronatlas.sae import TrainConfig
from neuronatlas.sae.fit import train_sae
n = int(sys.argv[1])
with tempfile.TemporaryDirectory() as d:
    train_sae("timm:vit_tiny_patch16_224", "blocks.5.mlp.fc1", f"world:n={n},size=224", d,
              config=TrainConfig(expansion=2, batch_tokens=512, buffer_tokens=8192, image_batch=16),
              random_weights=True, eval_images=8)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def peak_mb(n_images: int) -> float:
    out = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(n_images)], check=True,
                         capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--d-in", type=int, default=768)
    ap.add_argument("--expansion", type=int, default=8)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--images", type=int, default=64, help="smaller probe set of the memory test")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.randn(args.steps * args.batch + args.batch, args.d_in)
    d_sae = args.expansion * args.d_in
    plain = plain_topk_loop(x, d_sae, args.k, args.batch, args.steps)
    mine = ours(x, d_sae, args.k, args.batch, args.steps)
    small, large = peak_mb(args.images), peak_mb(4 * args.images)
    print(json.dumps({
        "size": {"d_in": args.d_in, "d_sae": d_sae, "k": args.k, "batch": args.batch,
                 "steps": args.steps, "threads": args.threads},
        "rows_per_s": {"plain_topk_loop": round(plain), "neuronatlas": round(mine),
                       "ratio_ours_over_plain": round(mine / plain, 3)},
        "peak_rss_mb": {f"{args.images}_images": round(small), f"{4 * args.images}_images": round(large),
                        "ratio_4x_over_1x": round(large / small, 3)},
    }, indent=2))


if __name__ == "__main__":
    main()
