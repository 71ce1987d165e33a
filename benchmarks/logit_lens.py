"""Logit lens: neuronatlas's streamed top-k against the naive way, side by side in one run, on a
random-weight LLaVA-style model of realistic width (CLIP 336 px / patch 14 -> 576 image tokens,
Llama hidden 2048, vocab 32000; few decoder layers to keep CPU time short: the per-layer cost is
what is compared).

    PYTHONPATH=. .venv/bin/python benchmarks/logit_lens.py [--layers 2] [--images 2] [--threads 1]

- naive: the reference's way: softmax(lm_head(norm(h))) for every layer and position at once (the
         full [layers x positions x vocab] probabilities), then top-k;
- ours:  `lens_topk`: one layer x `chunk` positions at a time, top-k kept.
Each runs in its own process (same seed, same residuals); peak memory = the highest resident set
size sampled every millisecond during the lens minus the resident size just before it. The top-k
ids are checked identical and the probabilities equal.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRss:
    def __enter__(self):
        self.base = self.peak = rss_bytes()
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self):
        while not self.stop:
            self.peak = max(self.peak, rss_bytes())
            time.sleep(0.001)

    def __exit__(self, *exc):
        self.stop = True
        self.thread.join()
        self.peak = max(self.peak, rss_bytes())


def build(layers: int, images: int, seed: int = 0):
    import torch
    import transformers

    from neuronatlas.vlm.subject import VlmSubject

    torch.manual_seed(seed)
    vision = dict(model_type="clip_vision_model", hidden_size=256, intermediate_size=512,
                  num_hidden_layers=2, num_attention_heads=4, image_size=336, patch_size=14)
    text = dict(model_type="llama", hidden_size=2048, intermediate_size=2816, num_hidden_layers=layers,
                num_attention_heads=16, num_key_value_heads=16, vocab_size=32000,
                max_position_embeddings=1024, pad_token_id=0)
    cfg = transformers.LlavaConfig(vision_config=vision, text_config=text, image_token_index=31999,
                                   vision_feature_layer=-2, vision_feature_select_strategy="default")
    model = transformers.LlavaForConditionalGeneration(cfg).eval()
    subject = VlmSubject(model, str, lambda n, p: [1] + [31999] * n + list(range(100, 120)),
                         transform=None, name="bench")
    pixels = torch.randn(images, 3, 336, 336)
    return subject, subject.inputs(pixels, [None] * images)


def naive(subject, hs, k):
    import torch

    from neuronatlas.vlm.subject import language_parts

    parts = language_parts(subject.model)
    with torch.no_grad():
        full = torch.softmax(parts.lm_head(parts.norm(torch.stack(hs))).float(), -1)  # [L+1,B,T,V]
        top = full.topk(k, -1)
    return top.values, top.indices


def worker(args) -> None:
    import torch

    from neuronatlas.vlm.logit_lens import lens_topk, residuals

    torch.set_num_threads(args.threads)
    subject, inputs = build(args.layers, args.images)
    hs, _ = residuals(subject, inputs)
    lens = (lambda: naive(subject, hs, args.k)) if args.worker == "naive" else \
        (lambda: lens_topk(subject, hs, args.k, args.chunk))
    with PeakRss() as mem:
        t = time.perf_counter()
        probs, ids = lens()
        seconds = time.perf_counter() - t
    torch.save({"probs": probs, "ids": ids}, args.save)
    print(json.dumps({"seconds": seconds, "peak_bytes": mem.peak - mem.base,
                      "positions": int(inputs["input_ids"].numel()), "layers": len(hs)}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=2, help="decoder layers (lens rows = layers + 1)")
    ap.add_argument("--images", type=int, default=2)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--chunk", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--worker", choices=["naive", "ours"], help=argparse.SUPPRESS)
    ap.add_argument("--save", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)

    import torch

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("naive", "ours"):
            save = os.path.join(tmp, f"{name}.pt")
            cmd = [sys.executable, __file__, "--worker", name, "--save", save, "--layers",
                   str(args.layers), "--images", str(args.images), "--k", str(args.k), "--chunk",
                   str(args.chunk), "--threads", str(args.threads)]
            r = subprocess.run(cmd, capture_output=True, text=True, check=True)
            out[name] = json.loads(r.stdout.strip().splitlines()[-1])
            out[name]["result"] = torch.load(save)
    a, b = out["naive"]["result"], out["ours"]["result"]
    same_ids = bool(torch.equal(a["ids"], b["ids"]))
    max_diff = float((a["probs"] - b["probs"]).abs().max())
    n, o = out["naive"], out["ours"]
    print(f"LLaVA-style: hidden 2048, vocab 32000, {n['layers']} lens layers x {n['positions']} "
          f"positions ({args.images} images x 576 image tokens + text), top-{args.k}, "
          f"chunk {args.chunk}, {args.threads} thread(s)")
    print(f"{'':8s} {'seconds':>9s} {'peak MB':>9s}")
    for name in ("naive", "ours"):
        print(f"{name:8s} {out[name]['seconds']:9.2f} {out[name]['peak_bytes'] / 2**20:9.1f}")
    print(f"ratios (naive / ours): time {n['seconds'] / o['seconds']:.2f}x, "
          f"peak memory {n['peak_bytes'] / max(o['peak_bytes'], 1):.1f}x")
    print(f"identical top-k ids: {same_ids}; max |prob difference| {max_diff:.2e}")


if __name__ == "__main__":
    main()
