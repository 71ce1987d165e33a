"""Produce docs/results.md: how right each labeler is, with the command that made the numbers.

    .venv/bin/python scripts/results.py                  # full size (~15-25 min on 1-2 CPU threads)
    .venv/bin/python scripts/results.py --small --out /tmp/results.md --runs /tmp/results-runs

Three parts, each recorded, described and evaluated from scratch into `--runs` (default
runs/results, replaced on every call):

(a) `zoo:synthetic-units` over `world:n=N,size=64,seed=0`: every method against the known labels
    (exact / top-5 / MiniLM and CLIP text-space cosine, mono units and all kinds) + simulation score;
(b) `zoo:world-clip`'s vision MLP neurons over `world:n=N,size=64,seed=1`: no ground truth, so each
    method's labels, agreement between methods and the simulation score;
(c) EfficientNet-Lite0's 1000 logit units (`_fc`) with CLIP-Dissect, ConSE scorer
    (`conse:efficientnet-lite0`) and the `imagenet` concept set, against the class names (top-1 /
    top-5) on world scenes + the bundled photos.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

# CLIP-Dissect's logit scale before issue 22 (the reference has none: scale 1, the default now); parts
# (a) and (c) label once more with it, stored as OLD_SCALE_NAME, so the old numbers sit next to the new
OLD_SCALE = 100.0
OLD_SCALE_NAME = "clip-dissect-scale100"
WORLD_CLIP_LAYERS = ["vision_model.encoder.layers.1.mlp.fc1", "vision_model.encoder.layers.3.mlp.fc1"]
SIZES = {"full": {"synthetic": 1000, "world_clip": 1000, "efficientnet": 500},
         "small": {"synthetic": 40, "world_clip": 40, "efficientnet": 16}}


def _fmt(v, digits: int = 3) -> str:
    try:
        return "-" if v is None or v != v else f"{float(v):.{digits}f}"
    except (TypeError, ValueError):
        return str(v)


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(c) if isinstance(c, float) else str(c) for c in r) + " |"
              for r in rows]
    return "\n".join(lines)


def _value(summary, metric: str, method: str, kind: str = "all", other=None) -> float:
    s = summary[(summary.metric == metric) & (summary.method == method) & (summary.kind == kind)]
    if other is not None:
        s = s[s.other == other]
    return float(s["value"].iloc[0]) if len(s) else float("nan")


def _describe_all(run, scorer: str, concepts: str, log) -> dict[str, float]:
    from neuronatlas.describe import describe, methods_for, options_for

    seconds = {}
    for method in methods_for(run):
        if method == "vlm":  # needs a VLM (--vlm); its numbers are in docs/methods/vlm.md
            continue
        t = time.time()
        describe(run, method, **options_for(method, {"scorer": scorer, "concepts": concepts}))
        seconds[method] = time.time() - t
        log(f"  {run.path.name}: {method} in {seconds[method]:.0f} s")
    return seconds


def _describe_old_scale(run, scorer: str, concepts: str, log, **options) -> None:
    from neuronatlas.describe import describe

    t = time.time()
    describe(run, "clip-dissect", name=OLD_SCALE_NAME, scorer=scorer, concepts=concepts,
             logit_scale=OLD_SCALE, **options)
    log(f"  {run.path.name}: clip-dissect at logit_scale {OLD_SCALE:g} in {time.time() - t:.0f} s")


OLD_SCALE_NOTE = (f"`{OLD_SCALE_NAME}` is CLIP-Dissect with `logit_scale={OLD_SCALE:g}`, this "
                  "package's default before issue 22 (the reference code has no logit scale: "
                  "`clip-dissect` now uses the plain cosine, as it does; see "
                  "[fidelity.md](fidelity.md)), kept as the old numbers next to the new.")


def synthetic(runs: Path, n: int, log) -> str:
    import neuronatlas as na
    from neuronatlas.evaluate import evaluate

    probe = f"world:n={n},size=64,seed=0"
    run = na.record("zoo:synthetic-units", probe, runs / "synthetic", layers="units",
                    save_acts=True, num_workers=0)
    _describe_all(run, "zoo:world-clip", "world", log)
    _describe_old_scale(run, "zoo:world-clip", "world", log)
    s = evaluate(run, scorer="zoo:world-clip", clip_scorer="scorer")
    kinds = run.units["truth_kind"].value_counts().to_dict()
    rows = []
    for m in sorted(s.method.unique()):
        if m not in set(s[s.metric == "exact"].method):
            continue
        g = lambda metric, kind="all": _value(s, metric, m, kind)  # noqa: E731
        rows.append([m, g("exact", "mono"), g("top5", "mono"), g("exact"), g("top5"), g("partial"),
                     f"{_fmt(g('cosine', 'mono'))} / {_fmt(g('cosine'))}",
                     f"{_fmt(g('clip_cosine', 'mono'))} / {_fmt(g('clip_cosine'))}",
                     g("simulation_pearson")])
    per_kind = [[m, k, int(_count(s, m, k)), _value(s, "exact", m, k), _value(s, "top5", m, k),
                 _value(s, "partial", m, k), _value(s, "cosine", m, k)]
                for m in sorted(set(s[s.metric == "exact"].method)) for k in ("mono", "or", "and")]
    ag = s[s.metric == "agreement_same_top1"]
    agree = "".join(f"\nAgreement {r.method} vs {r.other}: same top-1 label on "
                    f"{r.value:.1%} of {r.n_units} units, mean MiniLM cosine "
                    f"{_value(s, 'agreement_cosine', r.method, other=r.other):.3f}."
                    for r in ag.itertuples())
    base = _cosine_baseline()
    return (f"## (a) Synthetic units with known labels\n\n`zoo:synthetic-units` ({len(run.units)} "
            f"units: {kinds.get('mono', 0)} mono, {kinds.get('or', 0)} OR, {kinds.get('and', 0)} "
            f"AND) over `{probe}`; CLIP-Dissect with `scorer=\"zoo:world-clip\"`, "
            "`concepts=\"world\"` (soft_wpmi); simulation and CLIP text-space cosine with "
            "`zoo:world-clip`. A single concept can never be exact for an OR/AND unit (its truth "
            "is \"x OR y\"), so *exact all* is capped at the mono share; *partial* counts a label "
            "that is one of the unit's concepts. " + OLD_SCALE_NOTE + "\n\n"
            + _table(["method", "exact mono", "top-5 mono", "exact all", "top-5 all", "partial all",
                      "MiniLM cos mono / all", "CLIP cos mono / all", "simulation r"], rows)
            + "\n\nBy kind:\n\n"
            + _table(["method", "kind", "units", "exact", "top-5", "partial", "MiniLM cos"],
                     per_kind) + "\n" + agree + "\n\n" + base
            + "The labelers saw every probe image; the simulation score's held-out half is held out "
            "from the correlation only, not from labelling.\n")


def _cosine_baseline() -> str:
    """Mean cosine between two different world concepts, per text space: the floor to read the
    cosine columns against."""
    import numpy as np

    from neuronatlas.backends.scorer import load_scorer
    from neuronatlas.backends.text import load_text_embedder
    from neuronatlas.data.world import CONCEPTS

    phrases = sorted({CONCEPTS[c].phrase for c in CONCEPTS.ids()})
    out = []
    for name, vecs in (("MiniLM", lambda: load_text_embedder("zoo:minilm").embed(phrases)),
                       ("world-clip text", lambda: load_scorer("zoo:world-clip").encode_texts(phrases))):
        v = vecs().double().numpy()
        v = v / np.linalg.norm(v, axis=1, keepdims=True)
        sims = v @ v.T
        out.append(f"{sims[~np.eye(len(v), dtype=bool)].mean():.3f} ({name})")
    return (f"Cosine floor: two *different* world concepts ({len(phrases)} phrases, all pairs) have "
            f"mean cosine {' and '.join(out)}; a wrong label still scores about that much, so "
            "read the cosine columns against it (world-clip's text space puts its concepts closer "
            "together than MiniLM's does).\n\n")


def _count(s, method, kind) -> float:
    r = s[(s.metric == "exact") & (s.method == method) & (s.kind == kind)]
    return float(r["n_units"].iloc[0]) if len(r) else 0


def world_clip(runs: Path, n: int, log) -> str:
    import neuronatlas as na
    from neuronatlas.evaluate import evaluate

    probe = f"world:n={n},size=64,seed=1"
    run = na.record("zoo:world-clip", probe, runs / "world-clip", layers=WORLD_CLIP_LAYERS,
                    save_acts=True, num_workers=0)
    _describe_all(run, "zoo:world-clip", "world", log)
    s = evaluate(run, scorer="zoo:world-clip")
    sim = run.evaluation("simulation")
    labels = run.labels()
    top1 = labels[labels["rank"] == 0]
    methods = sorted(top1.method.unique())
    rows = []
    for layer in WORLD_CLIP_LAYERS:
        lab = top1[top1.unit.str.startswith(layer + ":")]
        wide = lab.pivot(index="unit", columns="method", values="label").dropna()
        same = float((wide[methods[0]] == wide[methods[1]]).mean()) if len(methods) > 1 else 1.0
        for m in methods:
            sm = sim[(sim.method == m) & sim.unit.str.startswith(layer + ":")]["pearson"]
            counts = lab[lab.method == m].label.value_counts()
            common = ", ".join(f"{k} ({v})" for k, v in counts.head(4).items())
            rows.append([layer.replace("vision_model.encoder.", ""), m, len(sm), float(sm.mean()),
                         float(sm.median()), float((sm > 0.3).mean()), len(counts), same, common])
    # units with the widest activation spread: what each method calls them
    units = run.units.sort_values("std", ascending=False)
    wide = top1.pivot(index="unit", columns="method", values="label")
    r_of = sim.set_index(["unit", "method"])["pearson"]
    examples = []
    for layer in WORLD_CLIP_LAYERS:
        for u in units[units.layer == layer].unit.head(4):
            examples.append([u.replace("vision_model.encoder.", "")]
                            + [f"{wide.loc[u, m]} (r={_fmt(r_of.get((u, m)), 2)})" for m in methods])
    ag = s[s.metric == "agreement_same_top1"]
    agree = "".join(f"Overall agreement {r.method} vs {r.other}: same top-1 label on {r.value:.1%} "
                    f"of {r.n_units} units, mean MiniLM cosine "
                    f"{_value(s, 'agreement_cosine', r.method, other=r.other):.3f}.\n"
                    for r in ag.itertuples())
    return (f"## (b) world-clip's vision MLP neurons (no ground truth)\n\n`zoo:world-clip` layers "
            f"{', '.join(f'`{x}`' for x in WORLD_CLIP_LAYERS)} ({len(run.units)} units) over "
            f"`{probe}` (patch-mean pooled); same methods and scorer as (a). There is no truth for "
            "real neurons, so this reports how well each label predicts the unit on held-out "
            "images (simulation r: Pearson correlation of world-clip's image-label similarity with "
            "the unit's activation on the held-out half of the images; the labelers saw all of them) "
            "and how often the methods agree.\n\n"
            + _table(["layer", "method", "units", "mean r", "median r", "share r > 0.3",
                      "distinct labels", "same top-1 as other method", "most common labels"], rows)
            + "\n\n" + agree + "\nThe four units with the widest activation spread per layer:\n\n"
            + _table(["unit", *methods], examples) + "\n")


def efficientnet(runs: Path, n: int, log) -> str:
    import pandas as pd

    import neuronatlas as na
    from neuronatlas.data.concat import ConcatProbeSet
    from neuronatlas.describe import describe
    from neuronatlas.evaluate import evaluate
    from neuronatlas.models import load_target

    specs = [f"world:n={n},size=224,seed=0", "photos:"]
    probe = ConcatProbeSet([na.open_probe(p) for p in specs])
    run = na.record("zoo:efficientnet-lite0", probe, runs / "efficientnet-lite0", layers="_fc",
                    save_acts=True, batch_size=16, num_workers=0)
    t = time.time()
    describe(run, "clip-dissect", scorer="conse:efficientnet-lite0", concepts="imagenet", top=5)
    log(f"  efficientnet-lite0: clip-dissect in {time.time() - t:.0f} s")
    _describe_old_scale(run, "conse:efficientnet-lite0", "imagenet", log, top=5)
    names = load_target("zoo:efficientnet-lite0").class_names
    truth = pd.DataFrame({"unit": [f"_fc:{i}" for i in range(len(names))], "truth": names})
    s = evaluate(run, truth=truth, simulation=False, clip_scorer=None)
    gt = run.evaluation("ground_truth")
    n_img = run.meta["summary"]["n_ok"]
    rows = [[m, int(_count(s, m, "all")), _value(s, "exact", m), _value(s, "top5", m),
             _value(s, "cosine", m), gt[gt.method == m].label.nunique(), 0.001, 0.005]
            for m in sorted(gt.method.unique())]
    hits = gt[gt.exact].head(8)
    misses = gt[~gt.exact].sample(n=min(6, int((~gt.exact).sum())), random_state=0)
    ex = [[r.unit, r.truth, r.label, "yes" if r.exact else "no"]
          for r in pd.concat([hits, misses]).itertuples()]
    return (f"## (c) EfficientNet-Lite0's classifier units (ConSE scorer)\n\n`zoo:efficientnet-lite0`"
            f", layer `_fc` (1000 logits), probe `{specs}` ({n_img} images); CLIP-Dissect "
            "(soft_wpmi) with `scorer=\"conse:efficientnet-lite0\"` and `concepts=\"imagenet\"`; "
            "truth = the Target's `class_names`. **This probe set is far from ImageNet**: "
            f"{n} procedural scenes of coloured shapes plus {len(probe) - n} photos, so most "
            "classes never appear in it. The ConSE scorer is the same network's own softmax "
            "embedded in word space (the average of its top classes' word vectors), so a logit unit "
            "and ConSE's similarity to its class name are closely related signals: a hit here "
            "says CLIP-Dissect reads back what the scorer already encodes, not that it could name "
            "an unknown unit. Chance: 0.001 top-1, 0.005 top-5. " + OLD_SCALE_NOTE + "\n\n"
            + _table(["method", "units", "top-1", "top-5", "MiniLM cos", "distinct labels", "chance top-1",
                      "chance top-5"], rows)
            + "\n\nExamples (hits, then random misses):\n\n"
            + _table(["unit", "class name", "label", "exact"], ex) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--small", action="store_true", help="tiny probe sets: a quick smoke run")
    ap.add_argument("--out", default="docs/results.md", help="markdown file to write")
    ap.add_argument("--runs", default="runs/results", help="run directories (replaced)")
    ap.add_argument("--parts", default="synthetic,world-clip,efficientnet")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    for key in SIZES["full"]:
        ap.add_argument(f"--n-{key.replace('_', '-')}", type=int, default=None,
                        help=f"world images for part {key} (default {SIZES['full'][key]}, "
                             f"--small {SIZES['small'][key]})")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    import torch

    torch.set_num_threads(args.threads)
    sizes = dict(SIZES["small" if args.small else "full"])
    for key in sizes:
        if getattr(args, f"n_{key}") is not None:
            sizes[key] = getattr(args, f"n_{key}")
    runs = Path(args.runs)
    if runs.exists():
        shutil.rmtree(runs)
    runs.mkdir(parents=True)

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    parts = args.parts.split(",")
    makers = {"synthetic": (synthetic, "synthetic"), "world-clip": (world_clip, "world_clip"),
              "efficientnet": (efficientnet, "efficientnet")}
    sections, timings = [], []
    for name in parts:
        fn, key = makers[name]
        t = time.time()
        log(f"{name}: n={sizes[key]}")
        sections.append(fn(runs, sizes[key], log))
        timings.append(f"{name} {time.time() - t:.0f} s")
    cmd = " ".join(["python", "scripts/results.py", *(argv if argv is not None else sys.argv[1:])])
    head = ("# Results\n\nProduced by `scripts/results.py`; every number below comes from one run "
            f"of\n\n```\n.venv/bin/python {cmd[len('python '):]}\n```\n\n"
            f"on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
            f"{args.threads} CPU thread(s), wall time {', '.join(timings)}"
            f"{' (--small: smoke-test sizes, numbers are not meaningful)' if args.small else ''}. "
            "Metrics are defined in [evaluate.md](evaluate.md); methods in [methods/](methods/).\n")
    if "world-clip" in parts or "synthetic" in parts:
        head += _world_clip_note()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(head + "\n" + "\n".join(sections))
    log(f"wrote {out}")
    return 0


def _world_clip_note() -> str:
    import json

    from neuronatlas import worldmodels

    d = Path(worldmodels.__file__).parent / "weights" / "world-clip"
    try:
        m = json.loads((d / "metrics.json").read_text())
        return (f"\nworld-clip weights used: {m.get('steps')} training steps, held-out zero-shot "
                f"colour top-1 {m.get('color_top1')}, shape top-1 {m.get('shape_top1')} "
                f"(its `metrics.json`).\n")
    except (OSError, ValueError):
        return ""


if __name__ == "__main__":
    sys.exit(main())
