"""`neuronatlas demo`: the whole pipeline on the embedded default, offline, on a CPU.

Records real pretrained EfficientNet-Lite0 units (a mid block, the last conv layer and the 1000
logits) over procedural-world scenes plus the bundled photos, draws exemplar grids with heatmaps for
a few units, and prints what it found. As more stages land (labelers, scorers, the world models, the
web atlas), they are added here.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

DEMO_MODELS = [
    # (name, spec, layers)
    ("efficientnet-lite0", "zoo:efficientnet-lite0", ["_blocks.10", "_head_act", "_fc"]),
]


def _interesting_units(run, layer: str, n: int) -> list[str]:
    """Units with the widest spread of activations: the ones most worth a look."""
    units = run.units[run.units["layer"] == layer]
    return units.sort_values("std", ascending=False)["unit"].head(n).tolist()


def _label_of(run, index: int) -> str:
    row = run.images.iloc[index]
    label = row["label"] if isinstance(row["label"], str) and row["label"] else row["image_id"]
    return label if len(label) <= 48 else label[:45] + "..."


def run_demo(out: str | Path = "runs/demo", small: bool = False) -> dict:
    import neuronatlas as na
    from neuronatlas.atlas.exemplars import exemplar_grids
    from neuronatlas.data.concat import ConcatProbeSet

    console = Console(stderr=True)
    out = Path(out)
    n_world = 24 if small else 300
    probe = ConcatProbeSet([na.open_probe(f"world:n={n_world},size=224,seed=0"),
                            na.open_probe("photos:")])
    console.print(f"[bold]neuronatlas demo[/]: {len(probe)} probe images ({n_world} world scenes + "
                  f"bundled photos) -> {out}")
    results = {}
    for name, spec, layers in DEMO_MODELS:
        run = na.record(spec, probe, out / name, layers=layers, k=10 if small else 20,
                        batch_size=16, show_progress=not small)
        grids = []
        classifier = run.meta["layers"][-1]["name"]
        n_units = 1 if small else 3
        for layer in [l for l in run.layers if l != classifier][-1:] + [classifier]:
            for unit in _interesting_units(run, layer, n_units):
                stem = unit.replace(":", "_")
                grids += exemplar_grids(run, unit, out / "grids" / name / f"{stem}.png",
                                        k=5 if small else 10, probe=probe, svg=not small)
        results[name] = {"run": run, "grids": grids}
        _print_table(console, run, name)
    console.print(f"\n[bold]Where to look[/]\n  runs:  {', '.join(str(out / n) for n in results)}\n"
                  f"  grids: {out / 'grids'}\n"
                  f"  in Python: neuronatlas.open_run('{out / DEMO_MODELS[0][0]}').units")
    return results


def _print_table(console: Console, run, name: str) -> None:
    classifier = run.meta["layers"][-1]["name"]
    target_names = None
    table = Table(title=f"{name}: units with the widest activation spread")
    for col in ("unit", "mean", "std", "top-3 exemplars (label / id)"):
        table.add_column(col)
    for layer in run.layers:
        for unit in _interesting_units(run, layer, 2):
            top = run.topk(unit, 3)
            row = run.units.set_index("unit").loc[unit]
            label = unit
            if layer == classifier:
                if target_names is None:
                    from neuronatlas.models import load_target

                    target_names = load_target(run.meta["key"]["model"]["spec"]).class_names
                label = f"{unit} ({target_names[int(unit.rsplit(':', 1)[1])]})"
            table.add_row(label, f"{row['mean']:.3g}", f"{row['std']:.3g}",
                          "; ".join(_label_of(run, i) for i in top["index"]))
    console.print(table)
    s = run.meta["summary"]
    console.print(f"recorded {s['n_ok']} images x {len(run.units)} units; unreadable "
                  f"{s['n_unreadable']}, duplicates {s['n_duplicate']}")
