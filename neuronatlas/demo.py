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
4. The atlas of every run above, exported as static sites with one index page linking them, and how
   to open or serve them.

The tables fit an 80-column terminal: unit ids are shortened (long layer names become L0, L1... with
a legend) and cells are cut to their column, never wrapped.
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
    _atlas(console, results, out, small)
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


def _atlas(console: Console, runs: dict, out: Path, small: bool) -> None:
    """Export every run's atlas under OUT/atlas/NAME and one index page linking them; say how to
    open it or serve any run."""
    from neuronatlas.errors import UserError

    try:
        from neuronatlas.atlas.export import export
        from neuronatlas.atlas.hub import write_hub

        pages = {}
        for name, run in runs.items():
            # images for the units with the widest spread and those on the unit list's first
            # pages (all units would cost minutes of re-running the model)
            pages[name] = (run, export(run, out / "atlas" / name, images=12 if small else 40,
                                       progress=False, first_pages=1 if small else 2))
        hub = write_hub(out / "atlas", pages, title="neuronatlas demo")
    except (ImportError, OSError, UserError) as exc:  # the atlas is optional in the demo
        console.print(f"[yellow]atlas export skipped: {exc}[/]")
        return
    first = next(iter(runs.values()))
    console.print(f"\n[bold]Open the atlas[/] ({', '.join(runs)})\n  static: file://{hub.resolve()}"
                  f"\n  served: neuronatlas atlas {first.path} --serve   (then "
                  "http://127.0.0.1:8765/)")


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


def short_unit_ids(layers: list[str], width: int = 12) -> tuple[dict[str, str], list[str]]:
    """{layer: short name} for unit ids in narrow tables (a layer longer than `width` becomes L0,
    L1...) and the legend lines for the renamed ones."""
    names, legend = {}, []
    for i, layer in enumerate(layers):
        names[layer] = layer if len(layer) <= width else f"L{i}"
        if names[layer] != layer:
            legend.append(f"{names[layer]} = {layer}")
    return names, legend


def _table(title: str, columns: list[tuple[str, int]]) -> Table:
    """A table whose cells never wrap: each column is cut to its width with an ellipsis."""
    table = Table(title=title, title_justify="left")
    for name, width in columns:
        table.add_column(_short(name, width), no_wrap=True, overflow="ellipsis", max_width=width)
    return table


def _print_evaluation(console: Console, run, scorer: str, title: str) -> None:
    from neuronatlas.evaluate import evaluate

    summary = evaluate(run, scorer=scorer)
    table = _table(f"{title}: how often is each method right?",
                   [("method", 20), ("metric", 19), ("kind", 5), ("units", 5), ("value", 6)])
    keep = summary[summary["metric"].isin(["exact", "top5", "cosine", "simulation_pearson",
                                           "agreement_same_top1"])
                   & summary["kind"].isin(["mono", "all"])]
    for r in keep.itertuples(index=False):
        table.add_row(_short(r.method, 20), _short(r.metric, 19), str(r.kind), str(r.n_units),
                      f"{r.value:.3f}")
    console.print(table)


def _print_units(console: Console, run, name: str) -> None:
    labels = run.labels()
    best = labels[labels["rank"] == 0].set_index(["unit", "method"])["label"]
    methods = sorted(labels["method"].unique())
    layers = list(run.layers)
    short, legend = short_unit_ids(layers)
    unit_w = max(len(f"{short[l]}:{len(run.units)}") for l in layers)
    # what is left of the terminal (borders and padding take 3 per column + 1) goes to the labels
    fixed = [("unit", max(4, unit_w)), ("std", 6), ("top image", 12)]
    left = min(console.width, 120) - 1 - 3 * (len(fixed) + len(methods)) - sum(w for _, w in fixed)
    method_w = max(6, left // max(1, len(methods)))
    table = _table(f"{name}: units with the widest activation spread",
                   fixed + [(m, method_w) for m in methods])
    units = run.units.set_index("unit")
    for layer in layers:
        for unit in _interesting_units(run, layer, 2):
            top = run.topk(unit, 1)
            i = int(top["index"].iloc[0])
            exemplar = run.images.iloc[i]["label"] or run.images.iloc[i]["image_id"]
            table.add_row(f"{short[layer]}:{unit.rsplit(':', 1)[1]}",
                          f"{units.loc[unit, 'std']:.3g}", _short(exemplar, 12),
                          *[_short(best.get((unit, m), "-"), method_w) for m in methods])
    console.print(table)
    for line in legend:
        console.print(f"  {line}")
    s = run.meta["summary"]
    console.print(f"recorded {s['n_ok']} images x {len(run.units)} units; unreadable "
                  f"{s['n_unreadable']}, duplicates {s['n_duplicate']}")
