"""NetDissect at the scale of a whole ViT: ours vs the straightforward implementation, in one run.

    .venv/bin/python benchmarks/netdissect.py [--images 256] [--threads 2] [--full] [--full-reference]

The case of issue 21: timm vit_base_patch32_224 (random weights), `blocks.*.mlp.fc1` (12 x 3072 =
36,864 units, 7 x 7 patch grid), world:n=256,size=224, masks at 112 px (39 concepts).

1. The 2-layer slice (blocks.0 and blocks.6): ours and the straightforward implementation (kept
   below: the float64 doubling histogram and a per-batch dense (units x pixels) IoU counter, as
   neuronatlas had it before the kernel), each in a fresh process: wall and CPU time, peak RSS
   (ru_maxrss), identical labels (same top-5 order, IoU to 1e-6), ratios.
2. With --full: all 36,864 units, ours (and with --full-reference the straightforward one too, ~13
   min on 2 idle cores per issue 21). Prints JSON; the machine's load average goes with it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

MODEL = "timm:vit_base_patch32_224"


# -- the straightforward implementation (neuronatlas before the counting kernel) -------------------
class PlainHistogram:
    def __init__(self, n_units, bins=2048):
        self.n_units, self.bins = n_units, bins
        self.counts = torch.zeros(n_units, bins, dtype=torch.float64)
        self.lo = self.width = None

    def update(self, x):
        x = x.to(torch.float64).reshape(self.n_units, -1)
        xmin, xmax = x.min(1).values, x.max(1).values
        if self.lo is None:
            span = xmax - xmin
            self.lo = xmin.clone()
            self.width = torch.where(span > 0, span * (1 + 1e-9),
                                     torch.clamp(xmax.abs() * 1e-6, min=1e-12)) / self.bins
        half = self.bins // 2
        while True:
            down, up = xmin < self.lo, xmax >= self.lo + self.bins * self.width
            grow = down | up
            if not grow.any():
                break
            pairs = self.counts.view(self.n_units, half, 2).sum(-1)
            z = torch.zeros_like(pairs)
            new = torch.where(down[:, None], torch.cat([z, pairs], 1), torch.cat([pairs, z], 1))
            self.counts = torch.where(grow[:, None], new, self.counts)
            self.lo = torch.where(down, self.lo - self.bins * self.width, self.lo)
            self.width = torch.where(grow, self.width * 2, self.width)
        idx = ((x - self.lo[:, None]) / self.width[:, None]).floor().clamp(0, self.bins - 1).long()
        self.counts.scatter_add_(1, idx, torch.ones_like(x))

    def upper_quantile(self, q):
        c = self.counts
        want = q * c.sum(1)
        above = c.flip(1).cumsum(1).flip(1) - c
        j = (((above + c) >= want[:, None]).long() * torch.arange(self.bins)).amax(1)
        n_j, a_j = c.gather(1, j[:, None])[:, 0], above.gather(1, j[:, None])[:, 0]
        frac = torch.where(n_j > 0, (want - a_j) / n_j.clamp(min=1), torch.zeros_like(n_j))
        return self.lo + (j + 1).to(torch.float64) * self.width - frac.clamp(0, 1) * self.width


class PlainIoUCounter:
    """Every map upsampled, thresholded and multiplied with the masks, in unit chunks of 2**24 pixels."""

    def __init__(self, thresholds, n_concepts, m):
        thr = thresholds.to(torch.float64)
        t32 = thr.to(torch.float32)
        self.thr = torch.where(t32.to(torch.float64) > thr,
                               torch.nextafter(t32, torch.tensor(-float("inf"))), t32)
        self.m = m
        self.inter = torch.zeros(len(thr), n_concepts, dtype=torch.float64)
        self.act = torch.zeros(len(thr), dtype=torch.float64)
        self.mask = torch.zeros(n_concepts, dtype=torch.float64)

    def update(self, maps, masks):
        b, n_units = maps.shape[:2]
        m = self.m
        masks = masks.to(torch.float32).reshape(b, -1, m * m)
        self.mask += masks.sum((0, 2)).to(torch.float64)
        masks_P = masks.permute(1, 0, 2).reshape(masks.shape[1], b * m * m)
        step = max(1, (1 << 24) // (b * m * m))
        for a in range(0, n_units, step):
            up = F.interpolate(maps[:, a:a + step].float(), size=(m, m), mode="bilinear",
                               align_corners=False)
            act = (up > self.thr[a:a + step].view(1, -1, 1, 1)).to(torch.float32)
            act_P = act.permute(1, 0, 2, 3).reshape(act.shape[1], -1)
            self.act[a:a + step] += act_P.sum(1).to(torch.float64)
            self.inter[a:a + step] += (act_P @ masks_P.T).to(torch.float64)

    def iou(self):
        union = self.act[:, None] + self.mask[None, :] - self.inter
        return torch.where(union > 0, self.inter / union.clamp(min=1), torch.zeros_like(union))


def plain_netdissect(run, layers, quantile=0.005, top=5, batch_size=32):
    import pandas as pd

    from neuronatlas.atlas.exemplars import probe_for_run, target_for_run
    from neuronatlas.data import iter_batches
    from neuronatlas.describe.netdissect import probe_concepts
    from neuronatlas.describe.netdissect_passes import concept_masks
    from neuronatlas.recording.hooks import Capture

    probe, target = probe_for_run(run), target_for_run(run)
    points = target.select(layers)
    concepts = probe_concepts(probe)
    ids = [c[0] for c in concepts]
    m = min(int(probe.size), 112)
    capture = Capture(target, points, reduce={p.name: (lambda o, p=p: p.layout.spatial_map(
        p.layout.canonical(o)).float()) for p in points})
    idx = run.images.query("status == 'ok'")["index"].to_numpy(np.int64)

    def batches():
        for b in iter_batches(probe, target.preprocess.transform(), idx, batch_size, num_workers=0):
            yield b.indices, capture.run(b.pixels, probe, b.indices)

    hists = {p.name: PlainHistogram(p.n_units) for p in points}
    with capture.attached():
        for _, outs in batches():
            for p in points:
                hists[p.name].update(outs[p.name].transpose(0, 1).reshape(p.n_units, -1))
        thr = {n: h.upper_quantile(quantile) for n, h in hists.items()}
        counters = {p.name: PlainIoUCounter(thr[p.name], len(ids), m) for p in points}
        for i, outs in batches():
            masks = concept_masks(probe, i, ids, m)
            for p in points:
                counters[p.name].update(outs[p.name], masks)
    rows = []
    for p in points:
        iou = counters[p.name].iou()
        order = torch.argsort(-iou, dim=1, stable=True)[:, :top]
        for u in range(p.n_units):
            for r, c in enumerate(order[u].tolist()):
                rows.append((f"{p.name}:{u}", r, ids[c], float(iou[u, c])))
    return pd.DataFrame(rows, columns=["unit", "rank", "concept", "score"])


# -- one measured run, in its own process ------------------------------------------------------------
def child(args) -> None:
    import shutil

    import neuronatlas as na
    from neuronatlas.describe.netdissect import netdissect

    torch.set_num_threads(args.threads)
    run = na.open_run(args.run)
    layers = args.layers.split(",")
    shutil.rmtree(Path(args.run) / "dissect", ignore_errors=True)  # measure both passes
    t0, c0 = time.perf_counter(), time.process_time()
    if args.impl == "ours":
        df = netdissect(run, layers=layers, write=False, memory_budget=args.memory_budget)
        df = df[["unit", "rank", "concept", "score"]]
    else:
        df = plain_netdissect(run, layers)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    df.to_parquet(args.out)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "peak_rss_mb": round(rss)}))


def measure(run, layers, impl, threads, out, memory_budget=None) -> dict:
    cmd = [sys.executable, __file__, "--child", "--impl", impl, "--run", str(run), "--layers", layers,
           "--threads", str(threads), "--out", str(out)]
    if memory_budget:
        cmd += ["--memory-budget", memory_budget]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def same_labels(a_path, b_path) -> dict:
    import pandas as pd

    a, b = pd.read_parquet(a_path), pd.read_parquet(b_path)
    a, b = a.sort_values(["unit", "rank"]).reset_index(drop=True), b.sort_values(
        ["unit", "rank"]).reset_index(drop=True)
    same_order = bool((a["unit"] == b["unit"]).all() and (a["concept"] == b["concept"]).all())
    return {"same_top5_order": same_order,
            "units_differing": int((a["concept"] != b["concept"]).groupby(a["unit"]).any().sum()),
            "max_iou_diff": float(np.abs(a["score"].to_numpy() - b["score"].to_numpy()).max())}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", default=None, help="Directory for the recorded run (kept, reused).")
    ap.add_argument("--full", action="store_true", help="Also all 36,864 units (ours).")
    ap.add_argument("--full-reference", action="store_true", help="And the straightforward one.")
    ap.add_argument("--memory-budget", default=None)
    ap.add_argument("--child", action="store_true")
    ap.add_argument("--impl", default="ours")
    ap.add_argument("--run", default=None)
    ap.add_argument("--layers", default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.child:
        return child(args)

    import neuronatlas as na

    torch.set_num_threads(args.threads)
    work = Path(args.work or tempfile.mkdtemp(prefix="nd-bench-"))
    run_dir = work / f"vitb32-world{args.images}"
    t0 = time.perf_counter()
    na.record(MODEL, f"world:n={args.images},size=224", run_dir, layers="blocks.*.mlp.fc1",
              random_weights=True, num_workers=0)
    result = {"model": MODEL, "images": args.images, "threads": args.threads, "mask_px": 112,
              "record_s": round(time.perf_counter() - t0, 1), "load_avg_start": os.getloadavg()}
    slice_layers = "blocks.0.mlp.fc1,blocks.6.mlp.fc1"
    ours = measure(run_dir, slice_layers, "ours", args.threads, work / "slice-ours.parquet",
                   args.memory_budget)
    plain = measure(run_dir, slice_layers, "plain", args.threads, work / "slice-plain.parquet")
    result["slice_2_layers"] = {
        "units": 6144, "ours": ours, "plain": plain,
        "speedup_wall": round(plain["wall_s"] / ours["wall_s"], 2),
        "speedup_cpu": round(plain["cpu_s"] / ours["cpu_s"], 2),
        "rss_ratio": round(plain["peak_rss_mb"] / ours["peak_rss_mb"], 2),
        **same_labels(work / "slice-ours.parquet", work / "slice-plain.parquet")}
    if args.full or args.full_reference:
        every = ",".join(f"blocks.{i}.mlp.fc1" for i in range(12))
        full = {"units": 36864, "ours": measure(run_dir, every, "ours", args.threads,
                                                 work / "full-ours.parquet", args.memory_budget)}
        if args.full_reference:
            full["plain"] = measure(run_dir, every, "plain", args.threads, work / "full-plain.parquet")
            full["speedup_wall"] = round(full["plain"]["wall_s"] / full["ours"]["wall_s"], 2)
            full.update(same_labels(work / "full-ours.parquet", work / "full-plain.parquet"))
        result["full"] = full
    result["load_avg_end"] = os.getloadavg()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
