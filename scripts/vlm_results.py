"""Produce docs/methods/vlm-mechanistic.md's results: token ablation, attention knockout and the logit
lens on zoo:world-llava, whose world images come with exact object masks.

    PYTHONPATH=. .venv/bin/python scripts/vlm_results.py                # ~30-40 min on 1 thread
    PYTHONPATH=. .venv/bin/python scripts/vlm_results.py --small --out /tmp/vlm.md --runs /tmp/vlm-runs

Runs (resumable, in --runs, default runs/vlm-results): `vlm ablate` (polling + VQA: object patches
+ buffers, as many random tokens, high-norm, random-k; polling: integrated gradients; generative:
object vs random), `vlm knockout` (VQA + polling, every source x destination x window), `vlm
logit-lens` (caption prompt). Writes the markdown between the RESULTS markers of --out.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import time
from pathlib import Path

SIZES = {"full": dict(ablation=100, ig=40, generative=40, knockout=40, lens=40),
         "small": dict(ablation=12, ig=6, generative=6, knockout=6, lens=4)}
DATA = "world:n={n},size=64,seed=100"
BEGIN, END = "<!-- RESULTS BEGIN (scripts/vlm_results.py) -->", "<!-- RESULTS END -->"


def _f(v, d=3) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{d}f}"


def _table(header, rows) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def ablation_section(subject, runs: Path, sizes: dict) -> str:
    from neuronatlas.vlm.ablation_run import AblationConfig, run_ablation

    parts = []
    main = run_ablation(subject, DATA.format(n=sizes["ablation"]), runs, AblationConfig(
        settings=("polling", "vqa"), token_sets=("object", "random-matched", "high-norm", "random")),
        name="main", show_progress=False)
    ig = run_ablation(subject, DATA.format(n=sizes["ig"]), runs, AblationConfig(
        settings=("polling",), token_sets=("object", "ig", "random")), name="ig", show_progress=False)
    gen = run_ablation(subject, DATA.format(n=sizes["generative"]), runs, AblationConfig(
        settings=("generative",), token_sets=("object", "random-matched")), name="generative",
        show_progress=False)
    rows = []
    for store in (main, ig, gen):
        df = store.table("images")
        clean = df[df.token_set == "none"]
        for setting, g in clean.groupby("setting"):
            rows.append([setting, store.name, len(g), _f(g.clean_right.mean())])
    parts.append("Clean accuracy (objects asked about; only the right ones are ablated):\n\n" +
                 _table(["setting", "experiment", "objects", "right on the clean image"], rows))
    rows = []
    for store in (main, ig, gen):
        cur = store.table("curves")
        for r in cur.itertuples(index=False):
            label = {"object": f"object + buffer {r.param}", "random-matched": f"random, same count "
                     f"as object + {r.param}", "high-norm": "high-norm (> mean + 2 std)",
                     "random": f"random k={r.param}", "ig": f"integrated gradients top {r.param}"}
            rows.append([r.setting, label[r.token_set], _f(r.k, 1), r.n, _f(r.accuracy),
                         _f(r.prob_drop)])
    parts.append("Accuracy after ablation (share of initially-right objects still right) and mean "
                 "drop of the tracked token's probability (polling: \"yes\"; VQA: the colour; "
                 "generative: none):\n\n" +
                 _table(["setting", "ablated tokens", "mean k", "n", "accuracy", "prob drop"], rows))
    parts.append(f"Curves: `{main.plot_path('curves')}` (and the same file of `ig`, `generative`).")
    return "\n\n".join(parts)


def knockout_section(subject, runs: Path, sizes: dict) -> str:
    from neuronatlas.vlm.knockout_run import KnockoutConfig, run_knockout

    store = run_knockout(subject, DATA.format(n=sizes["knockout"]), runs, KnockoutConfig(
        settings=("vqa", "polling")), name="main", show_progress=False)
    s = store.table("summary")
    wins = list(dict.fromkeys(s.window))
    parts = []
    for setting in ("vqa", "polling"):
        rows = []
        for (src, dst), g in s[s.setting == setting].groupby(["source", "destination"], sort=False):
            g = g.set_index("window")
            rows.append([f"{src} -> {dst}", g.n.iloc[0]] +
                        [f"{_f(g.loc[w].accuracy, 2)} ({_f(g.loc[w].prob_drop, 2)})" for w in wins])
        layers = store.update_meta()["windows"]
        parts.append(f"**{setting}**: accuracy (mean drop of the answer token's probability) per "
                     f"layer window ({', '.join(f'{w} = {layers[w]}' for w in wins)}):\n\n" +
                     _table(["blocked edges", "n"] + wins, rows))
    return "\n\n".join(parts)


def lens_section(subject, runs: Path, sizes: dict) -> str:
    """Where the object words appear: for each layer, the share of an object's patch tokens whose
    top-1 lens token is that object's colour or shape word, against the same share on background
    patches (any object's words)."""
    import numpy as np

    from neuronatlas.data import open_probe
    from neuronatlas.run.vlm import read_logit_lens
    from neuronatlas.vlm.ablation import mask_cells
    from neuronatlas.vlm.ablation_run import world_items
    from neuronatlas.vlm.lens_run import run_logit_lens
    from neuronatlas.vlm.logit_lens import LensConfig

    data = DATA.format(n=sizes["lens"])
    run_logit_lens(subject, data, runs, LensConfig(top_k=5), show_progress=False)
    df = read_logit_lens(runs)
    top = df[(df["rank"] == 0) & (df.kind == "image") & (df.patch >= 0)]
    probe = open_probe(data)
    g = subject.grid
    n_layers = int(df.layer.max()) + 1
    hit_obj, n_obj = np.zeros(n_layers), 0
    hit_bg, n_bg = np.zeros(n_layers), 0
    text_rows = []
    for i, rows in top.groupby("index"):
        items = world_items(probe, int(i), int(subject.config.vision_config.image_size))
        words_all = {w for it in items for w in (it.color, it.shape)}
        any_cell = np.zeros(g * g, bool)
        tok = rows.pivot_table(index="patch", columns="layer", values="token", aggfunc="first")
        for it in items:
            cells = np.flatnonzero(mask_cells(it.mask, g).reshape(-1))
            any_cell[cells] = True
            for c in cells:
                hit_obj += np.array([tok.loc[c, l] in (it.color, it.shape) for l in range(n_layers)])
                n_obj += 1
        for c in np.flatnonzero(~any_cell):
            hit_bg += np.array([tok.loc[c, l] in words_all for l in range(n_layers)])
            n_bg += 1
    last = df[(df.layer == n_layers - 1) & (df["rank"] == 0) & (df.kind == "text")]
    for i, r in last.groupby("index"):
        text_rows.append(r.sort_values("position").token.iloc[-1])
    rows = [[("emb" if l == 0 else f"L{l}"), _f(hit_obj[l] / max(n_obj, 1)), _f(hit_bg[l] / max(n_bg, 1))]
            for l in range(n_layers)]
    return (f"Logit lens over {sizes['lens']} images (caption prompt; {n_obj} object patches, {n_bg} "
            "background patches). Share of patch tokens whose top-1 lens token is the object's own "
            "colour or shape word (background: any object's word in the scene):\n\n" +
            _table(["layer", "object patches", "background patches"], rows) +
            f"\n\nBrowse it: `neuronatlas atlas {runs} --serve` -> Logit lens.")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--small", action="store_true")
    ap.add_argument("--out", type=Path, default=Path("docs/methods/vlm-mechanistic.md"))
    ap.add_argument("--runs", type=Path, default=Path("runs/vlm-results"))
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    import torch

    from neuronatlas.vlm.subject import load_subject

    torch.set_num_threads(args.threads)
    sizes = SIZES["small" if args.small else "full"]
    subject = load_subject("zoo:world-llava")
    t = time.time()
    body = "\n\n".join([
        "### Token ablation\n\n" + ablation_section(subject, args.runs, sizes),
        "### Attention knockout\n\n" + knockout_section(subject, args.runs, sizes),
        "### Logit lens\n\n" + lens_section(subject, args.runs, sizes)])
    cmd = "PYTHONPATH=. .venv/bin/python scripts/vlm_results.py" + (" --small" if args.small else "")
    block = (f"{BEGIN}\nMade by `{cmd}` ({time.time() - t:.0f} s, {args.threads} thread(s)); data "
             f"`{DATA.format(n='N')}`.\n\n{body}\n{END}")
    text = args.out.read_text() if args.out.exists() else f"# VLM mechanistic interpretability\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text:
        text += f"\n{BEGIN}\n{END}\n"
    text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _m: block, text, flags=re.S)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
