"""`neuronatlas demo`: the whole pipeline on the embedded default, offline, on a CPU.

1. Synthetic units with known answers (`zoo:synthetic-units`) over procedural-world scenes: every
   labeler that exists describes them (CLIP-Dissect, NetDissect, VLM captions from zoo:world-llava),
   the evaluation says how often each one is right, and a small blind human study is exported.
2. Real pretrained EfficientNet-Lite0 (a mid block, the last conv layer, the 1000 logits) over world
   scenes plus the bundled photos: recorded with exemplar grids and heatmaps, labelled by CLIP-Dissect
   with a ConSE scorer, its logit units checked against their ImageNet class names.
3. `zoo:world-clip`'s vision MLP neurons (after GELU), when the trained weights are installed: their
   second-order effects through the later attention heads (the CLIP second-order lens) and every
   labeler, second-order text decomposition included.
4. The atlas of the synthetic run, exported as a static site, and how to open or serve it.
As more stages land they are added here.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

# the MLP neurons after their GELU: the units the second-order lens explains too
WORLD_CLIP_LAYERS = ["vision_model.encoder.layers.1.mlp.activation_fn",
                     "vision_model.encoder.layers.3.mlp.activation_fn"]


def _interesting_units(run, layer: str, n: int) -> list[str]:
    """Units with the widest spread of activations: the ones most worth a look."""
    units = run.units[run.units["layer"] == layer]
    return units.sort_values("std", ascending=False)["unit"].head(n).tolist()


def _short(text, n: int = 40) -> str:
    text = str(text)
    return text if len(text) <= n else text[:n - 3] + "..."


def run_demo(out: str | Path = "runs/demo", small: bool = False) -> dict:
    import neuronatlas as na
    from neuronatlas.data.concat import ConcatProbeSet
    from neuronatlas.models.zoo import ZOO

    import os

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:  # transformers' weight-loading bars would drown the demo's own output
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:
        pass
    console = Console(stderr=True)
    out = Path(out)
    n_world = 40 if small else 400
    world = f"world:n={n_world},size=224,seed=0"
    console.print(f"[bold]neuronatlas demo[/] -> {out}")
    results = {}

    # 1. synthetic units: ground truth for every method
    syn = na.record("zoo:synthetic-units", f"world:n={n_world},size=64,seed=0", out / "synthetic",
                    layers="units", save_acts=True, show_progress=not small)
    scorer = "zoo:world-clip" if _world_clip_ready(ZOO) else "conse:efficientnet-lite0"
    _describe_all(syn, scorer, "world", console, vlm=True)
    results["synthetic"] = syn
    _print_evaluation(console, syn, scorer, "synthetic units (true labels known)")
    _study(syn, out, console, small)

    # 2. a real pretrained classifier over world scenes + photos
    probe = ConcatProbeSet([na.open_probe(world), na.open_probe("photos:")])
    eff = na.record("zoo:efficientnet-lite0", probe, out / "efficientnet-lite0",
                    layers=["_blocks.10", "_head_act", "_fc"], k=10 if small else 20,
                    save_acts=True, batch_size=16, show_progress=not small)
    from neuronatlas.describe import describe

    describe(eff, "clip-dissect", scorer="conse:efficientnet-lite0",
             concepts="words3k" if small else "words10k", top=5)
    results["efficientnet-lite0"] = eff
    grids = _grids(eff, probe, out, "efficientnet-lite0", small)
    _print_units(console, eff, "efficientnet-lite0")

    # 3. the world CLIP's own neurons
    if _world_clip_ready(ZOO):
        wc = na.record("zoo:world-clip", f"world:n={n_world},size=64,seed=1", out / "world-clip",
                       layers=WORLD_CLIP_LAYERS, save_acts=True, show_progress=not small)
        _second_order(wc, f"world:n={n_world},size=64,seed=1", console)
        _describe_all(wc, "zoo:world-clip", "world", console)
        grids += _grids(wc, None, out, "world-clip", small)
        results["world-clip"] = wc
        _print_units(console, wc, "world-clip")

    console.print(f"\n[bold]Where to look[/]\n  runs:  {', '.join(str(r.path) for r in results.values())}"
                  f"\n  exemplar grids with heatmaps: {out / 'grids'} ({len(grids)} files)"
                  f"\n  in Python: run = neuronatlas.open_run('{out / 'efficientnet-lite0'}'); "
                  f"run.units; run.labels(); run.topk(UNIT)")
    _atlas(console, syn, out, small)
    return results


def _study(run, out: Path, console: Console, small: bool) -> None:
    """A blind study folder of a few synthetic units (grids under random ids, form, sheet)."""
    from neuronatlas.errors import UserError
    from neuronatlas.study import ExportConfig, export_study

    grids, mapping = out / "study" / "grids", out / "study" / "mapping.json"
    if mapping.exists():
        console.print(f"  blind study already exported to {grids}")
        return
    try:
        doc = export_study(run, grids, mapping, ExportConfig(per_layer=4 if small else 12, k=10,
                                                             seed=0), show_progress=False)
    except UserError as exc:
        console.print(f"  blind study export skipped: {exc}")
        return
    console.print(f"  blind study: {doc['n_items']} grids ({doc['n_controls']} controls) and "
                  f"form.html in {grids}; the mapping is {mapping}")


def _atlas(console: Console, run, out: Path, small: bool) -> None:
    """Export the synthetic run's atlas (fast: 111 units) and say how to open it or serve any run."""
    from neuronatlas.errors import UserError

    try:
        from neuronatlas.atlas.export import export

        # images for the units with the widest spread (all 111 would cost a minute of rendering)
        page = export(run, out / "atlas", images=12 if small else 40, progress=False)
    except (ImportError, OSError, UserError) as exc:  # the atlas is optional in the demo
        console.print(f"[yellow]atlas export skipped: {exc}[/]")
        return
    console.print(f"\n[bold]Open the atlas[/]\n  static: file://{page.resolve()}"
                  f"\n  served: neuronatlas atlas {run.path} --serve   (then http://127.0.0.1:8765/)")


def _world_clip_ready(zoo: dict) -> bool:
    if "world-clip" not in zoo:
        return False
    from neuronatlas.worldmodels import zoo as wz  # noqa: F401

    weights = Path(__file__).parent / "worldmodels" / "weights" / "world-clip" / "model.safetensors"
    return weights.exists()


def _describe_all(run, scorer: str, concepts: str, console: Console, vlm: bool = False) -> None:
    from neuronatlas.describe import describe_all

    # one set of options; each method takes the ones its config has. world-llava captions 4
    # exemplars a unit (cached: images shared by units once)
    options = dict(scorer=scorer, concepts=concepts, vlm="zoo:world-llava", k=4, n_background=16,
                   show_progress=False, progress=False)
    for method in describe_all(run, skip=() if vlm else ("vlm",), **options):
        console.print(f"  described {run.path.name} with {method}")


def _second_order(run, data: str, console: Console) -> None:
    """Second-order effects of world-clip's layer-1 MLP neurons through the later attention heads
    (stored in the run; `describe --method second-order` turns them into labels)."""
    from neuronatlas.lens.compute import SecondOrderConfig, compute_second_order

    res = compute_second_order("zoo:world-clip", data, run.path,
                               SecondOrderConfig(layer=WORLD_CLIP_LAYERS[0], top_k=20),
                               show_progress=False)
    console.print(f"  second-order effects of {res.n_neurons} neurons of {res.layer} "
                  f"(first PC explains {float(res.explained_variance.mean()):.2f} of the top-20 "
                  f"variance on average)")


def _grids(run, probe, out: Path, name: str, small: bool) -> list[Path]:
    from neuronatlas.atlas.exemplars import exemplar_grids

    paths = []
    for layer in list(run.layers)[-2:]:
        for unit in _interesting_units(run, layer, 1 if small else 2):
            paths += exemplar_grids(run, unit, out / "grids" / name / f"{unit.replace(':', '_')}.png",
                                    k=5 if small else 10, probe=probe, svg=not small)
    return paths


def _print_evaluation(console: Console, run, scorer: str, title: str) -> None:
    from neuronatlas.evaluate import evaluate

    summary = evaluate(run, scorer=scorer)
    table = Table(title=f"{title}: how often is each method right?")
    for col in ("method", "metric", "kind", "units", "value"):
        table.add_column(col)
    keep = summary[summary["metric"].isin(["exact", "top5", "cosine", "simulation_pearson",
                                           "agreement_same_top1"])
                   & summary["kind"].isin(["mono", "all"])]
    for r in keep.itertuples(index=False):
        table.add_row(str(r.method), str(r.metric), str(r.kind), str(r.n_units), f"{r.value:.3f}")
    console.print(table)


def _print_units(console: Console, run, name: str) -> None:
    labels = run.labels()
    best = labels[labels["rank"] == 0].set_index(["unit", "method"])["label"]
    methods = sorted(labels["method"].unique())
    table = Table(title=f"{name}: units with the widest activation spread")
    table.add_column("unit", overflow="fold")  # ids are long; show them whole
    for col in ("std", "top-3 exemplars", *methods):
        table.add_column(col)
    units = run.units.set_index("unit")
    for layer in run.layers:
        for unit in _interesting_units(run, layer, 2):
            top = run.topk(unit, 3)
            labels_of = [_short(run.images.iloc[i]["label"] or run.images.iloc[i]["image_id"], 24)
                         for i in top["index"]]
            table.add_row(unit, f"{units.loc[unit, 'std']:.3g}", "; ".join(labels_of),
                          *[_short(best.get((unit, m), "-"), 20) for m in methods])
    console.print(table)
    s = run.meta["summary"]
    console.print(f"recorded {s['n_ok']} images x {len(run.units)} units; unreadable "
                  f"{s['n_unreadable']}, duplicates {s['n_duplicate']}")
