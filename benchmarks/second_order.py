"""Second-order effects: neuronatlas's factored computation against the reference's approach, side by
side in one run (open_clip ViT-B-32, random weights, CPU).

    PYTHONPATH=. .venv/bin/python benchmarks/second_order.py [--layer 9] [--n 16] [--n-ref 2]

- ours:      `SecondOrderLens`: head vectors u (K x N x D_out) once from the weights, then per batch
             one (B,K,T)x(B,T,N) contraction and one (B,N,K)x(K,N,D_out) product -> (B, N, D_out)
- reference: `naive_effects`, the reference code's structure: one image at a time, and for every later
             block the (tokens, N, width) tensor of LayerNorm-linearised neuron writes pushed through
             each head's value / output weights, CLS attention, ln_post and the projection
Both give every neuron's effect on every image; they are checked equal (max |diff| relative to the
largest effect) on the images the reference ran, and the speed is compared per image.
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layer", type=int, default=9)
    ap.add_argument("--n", type=int, default=16, help="images for ours")
    ap.add_argument("--n-ref", type=int, default=2, help="images for the (slow) reference")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from neuronatlas.data import open_probe
    from neuronatlas.lens import ClipViT, SecondOrderLens, naive_effects
    from neuronatlas.models import load_target

    torch.manual_seed(0)
    target = load_target("open_clip:ViT-B-32", random_weights=True)
    probe = open_probe(f"world:n={args.n},size=224,seed=0")
    px = torch.stack([target.preprocess(probe.read_image(i)) for i in range(args.n)])
    vit = ClipViT.from_target(target)

    t0 = time.perf_counter()
    lens = SecondOrderLens(vit, args.layer)
    _ = lens.head_vectors
    t_setup = time.perf_counter() - t0
    t0 = time.perf_counter()
    ours = torch.cat([lens.effects(lens.coefficients(px[i:i + args.batch_size]))
                      for i in range(0, args.n, args.batch_size)])
    t_ours = time.perf_counter() - t0

    t0 = time.perf_counter()
    ref = naive_effects(lens, px[:args.n_ref])
    t_ref = time.perf_counter() - t0

    diff = (ours[:args.n_ref] - ref).abs().max().item()
    rel = diff / ref.abs().max().item()
    per_ours, per_ours_all = t_ours / args.n, (t_ours + t_setup) / args.n
    per_ref = t_ref / args.n_ref
    N, K, T = lens.n_neurons, lens.n_heads, vit.trace(px[:1], lens.layer).acts_BTN.shape[1]
    print(f"open_clip ViT-B-32 (random weights), MLP layer {lens.layer}: {N} neurons, {K} later heads, "
          f"{T} tokens, torch threads {torch.get_num_threads()}")
    print(f"ours       {args.n} images: {t_ours:.2f} s + {t_setup:.2f} s head vectors (once) "
          f"= {per_ours * 1e3:.0f} ms/image ({per_ours_all * 1e3:.0f} ms/image with the head vectors)")
    print(f"reference  {args.n_ref} images: {t_ref:.2f} s = {per_ref * 1e3:.0f} ms/image; largest "
          f"per-layer tensor {T}x{N}x{vit.width} float32 = {T * N * vit.width * 4 / 2**20:.0f} MiB")
    print(f"equal: max |ours - reference| = {diff:.2e} ({rel:.2e} of the largest effect) "
          f"-> {'OK' if rel <= 1e-4 else 'MISMATCH'} at 1e-4")
    print(f"speed ratio (reference / ours, per image): {per_ref / per_ours:.1f}x "
          f"({per_ref / per_ours_all:.1f}x counting the one-time head vectors over {args.n} images)")


if __name__ == "__main__":
    main()
