"""CLIP-Dissect soft_wpmi: ours against a straightforward transcription of the reference code's
approach, on the same random inputs, in one process. Prints JSON.

    .venv/bin/python benchmarks/clip_dissect.py [--images 10000] [--units 2000] [--concepts 20000]

Inputs: CLIP-like unit embeddings (d = 512, images and texts sharing a common direction, so cosines
sit around 0.2 +- 0.04 as CLIP ViT-B's do), P = 100 * cos (the reference's scale), activations
(images x units) standard normal. Both sides get the same dense P and activations.

- reference: softmax(a * P) over all concepts at once, then one Python iteration per unit: gather its
  top-k rows (k x C), sum log(1 + p_j (Q - 1) + eps), then the log-mean-exp prior over units. (Our
  transcription of Trustworthy-ML-Lab/CLIP-dissect similarity.soft_wpmi's algorithm, not its code.)
- ours: `neuronatlas.describe.clip_dissect.top_concepts`, blocked over concepts and units, sparse
  over the softmax entries that matter (see the module docstring).
Both run single-threaded (torch.set_num_threads(1)) unless --threads is given.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import time

import torch


def make_inputs(n: int, u: int, c: int, d: int = 512, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    shared = torch.randn(d, generator=g)
    shared = shared / shared.norm() * math.sqrt(d) * 0.5
    img = torch.nn.functional.normalize(torch.randn(n, d, generator=g) + shared, dim=1)
    txt = torch.nn.functional.normalize(torch.randn(c, d, generator=g) + shared, dim=1)
    P = 100.0 * (img @ txt.T)
    acts = torch.randn(n, u, generator=g)
    return P, acts


def reference_soft_wpmi(P, acts, top_k=100, a=10.0, lam=1.0, min_prob=1e-7, p_start=0.998,
                        p_end=0.97):
    """The reference's approach: whole-matrix softmax, a per-unit loop, then the prior."""
    with torch.no_grad():
        Q = torch.softmax(a * P, dim=1)
        inds = torch.topk(acts, k=top_k, dim=0).indices  # (k, U)
        p = (p_start - torch.arange(top_k) / top_k * (p_start - p_end)).unsqueeze(1)
        rows = []
        for unit in range(acts.shape[1]):
            q = Q.gather(0, inds[:, unit:unit + 1].expand(-1, Q.shape[1]))  # (k, C)
            rows.append(torch.log(1 + p * (q - 1) + min_prob).sum(0, keepdim=True))
        log_p_d_e = torch.cat(rows)  # (U, C)
        prior = torch.logsumexp(log_p_d_e, 0, keepdim=True) - math.log(log_p_d_e.shape[0])
        return log_p_d_e - lam * prior


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    from neuronatlas.describe.clip_dissect import Similarities, top_concepts

    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=10000)
    ap.add_argument("--units", type=int, default=2000)
    ap.add_argument("--concepts", type=int, default=20000)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    P, acts = make_inputs(args.images, args.units, args.concepts)

    t0 = time.perf_counter()
    ours_v, ours_i = top_concepts(acts, Similarities(dense=P), "soft_wpmi", top=1)
    t_ours = time.perf_counter() - t0
    rss_ours = peak_rss_mb()

    t0 = time.perf_counter()
    ref = reference_soft_wpmi(P, acts)
    ref_v, ref_i = ref.max(1)
    t_ref = time.perf_counter() - t0

    same = (torch.from_numpy(ours_i[:, 0]) == ref_i)
    diff = (torch.from_numpy(ours_v[:, 0]).float() - ref_v).abs()
    print(json.dumps({
        "size": {"images": args.images, "units": args.units, "concepts": args.concepts},
        "threads": args.threads,
        "seconds": {"ours": round(t_ours, 2), "reference": round(t_ref, 2)},
        "speedup": round(t_ref / t_ours, 1),
        "identical_top1_labels": f"{int(same.sum())}/{len(same)}",
        "max_abs_score_diff": float(diff.max()),
        "peak_rss_mb_after_ours": round(rss_ours), "peak_rss_mb_total": round(peak_rss_mb()),
    }, indent=2))


if __name__ == "__main__":
    main()
