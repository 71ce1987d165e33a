"""`explain(run, image)`: why the run's model gave its output on one image, unit by unit.

Steps (each in its own module): the output to explain (outputs.py) -> attribution to every unit of
the run's recorded layers (attribution.py) -> deletion curves per layer (faithfulness.py) -> the chain
of units back through the layers (chain.py) -> the labels the run has for them -> a sentence
(sentence.py). The result is a plain dict, written to OUT/explanation.json with the per-unit numbers
in OUT/attributions.parquet.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from ..recording.pooling import pool_output
from .attribution import attribute, captured
from .chain import build_chain
from .faithfulness import deletion_curves
from .outputs import choose_objective
from .sentence import llm_summary, template


def _replay(run, target, probe):
    from ..recording.replay import probe_for_run, target_for_run

    return target_for_run(run, target), probe_for_run(run, probe)


def image_batch(target, probe, image):
    """A one-image batch from a probe index, a probe image id, or an image file path."""
    from PIL import Image

    path = Path(str(image))
    if not isinstance(image, (int, np.integer)) and path.suffix and path.exists():
        pixels = target.preprocess(Image.open(path))[None]
        return target.make_batch(pixels.to(target.device)), str(path)
    index = None
    if isinstance(image, (int, np.integer)) or str(image).isdigit():
        index = int(image)
    else:
        ids = [item.image_id for item in probe.items]
        if str(image) in ids:
            index = ids.index(str(image))
    if index is None or not 0 <= index < len(probe):
        raise UserError(f"image '{image}' is neither an image file nor an index (0..{len(probe) - 1}) "
                        f"or id of the run's probe set: pass one of those")
    pil = probe.read_image(index)
    pixels = target.preprocess(pil)[None].to(target.device)
    return target.make_batch(pixels, np.array([index]), probe), str(index)


def unit_labels(run) -> dict[str, list[dict]]:
    """{unit: [{method, label, evaluation}]}: each method's top label and its simulation score."""
    sim = {}
    if "simulation" in run.evaluation_names():
        table = run.evaluation("simulation")
        sim = {(r.unit, r.method): float(r.pearson) for r in table.itertuples(index=False)}
    out: dict[str, list[dict]] = {}
    for method in run.label_methods():
        table = run.labels(method)
        for r in table[table["rank"] == 0].itertuples(index=False):
            out.setdefault(r.unit, []).append({"method": method, "label": str(r.label),
                                               "evaluation": sim.get((r.unit, method))})
    return out


def explain(run, image, *, target=None, probe=None, target_class=None, text: str | None = None,
            method: str = "grad_x_act", steps: int = 16, top: int = 10, chain_k: int = 5,
            ks: list[int] | None = None, random_draws: int = 5, seed: int = 0,
            baseline: str = "mean", deletion_layers: str = "last", chain_layers: int | None = None,
            chat=None, out: str | Path | None = None) -> dict:
    """Explain the run's model's output on `image`; see the module docstring. Returns the dict.

    deletion_layers: "last" (the last recorded layer, default) or "all"; chain_layers: the chain
    runs through the last N recorded layers (default all)."""
    from ..run import open_run

    run = open_run(run) if not hasattr(run, "meta") else run
    target, probe = _replay(run, target, probe)
    if baseline not in ("mean", "zero"):
        raise UserError(f"--baseline must be mean or zero, got '{baseline}'")
    if deletion_layers not in ("last", "all"):
        raise UserError(f"--deletion-layers must be last or all, got '{deletion_layers}'")
    layers = [layer["name"] for layer in run.meta["layers"]]
    poolings = {layer["name"]: layer["pooling"] for layer in run.meta["layers"]}
    points = target.select(layers)
    batch, image_ref = image_batch(target, probe, image)
    with torch.no_grad():
        clean = target.run(batch)
    objective, output = choose_objective(target, clean, target_class, text)
    attributions = attribute(target, batch, points, objective, method, steps)
    with torch.no_grad(), captured(target, points) as store:
        target.run(batch)
        pooled = {p.name: pool_output(store[p.name], p.layout, poolings[p.name])[0].detach().double().numpy()
                  for p in points}
        maps = {p.name: p.layout.spatial_map(p.layout.canonical(store[p.name]))[0]
                for p in points if p.layout.has_grid}
    units = run.units
    curves = []
    for p in (points if deletion_layers == "all" else points[-1:]):
        means = units[units["layer"] == p.name].sort_values("index")["mean"].to_numpy()
        base = means if baseline == "mean" else np.zeros(p.n_units)
        curves.append(deletion_curves(target, batch, p, attributions[p.name], pooled[p.name], base,
                                      objective, ks, random_draws, seed))
    chain = build_chain(target, batch, points[-chain_layers:] if chain_layers else points, poolings,
                        objective, chain_k)
    for node in chain["nodes"]:  # the unit's map on this image (its grid), for heat maps
        if node["layer"] in maps:
            node["map"] = np.round(maps[node["layer"]][node["index"]].detach().double().numpy(), 5).tolist()
    labels = unit_labels(run)
    last = points[-1].name
    order = np.argsort(-attributions[last], kind="stable")[:top]
    top_units = [{"unit": f"{last}:{int(u)}", "weight": float(attributions[last][u])} for u in order]
    result = {"run": str(run.path), "image": image_ref, "output": output, "method": method,
              "steps": steps if method == "integrated_gradients" else None, "baseline": baseline,
              "top_units": top_units, "deletion": curves, "chain": chain,
              "labels": {n["unit"]: labels.get(n["unit"], []) for n in chain["nodes"]},
              "sentence": template(output["text"], top_units, labels)}
    if chat is not None:
        result["llm"] = llm_summary(chat, output["text"], chain, labels)
    if out is not None:
        write_explanation(Path(out), result, points, attributions, pooled)
    return result


def write_explanation(out: Path, result: dict, points, attributions, pooled) -> None:
    import pandas as pd

    out.mkdir(parents=True, exist_ok=True)
    rows = [pd.DataFrame({"layer": p.name, "index": np.arange(p.n_units),
                          "unit": [f"{p.name}:{i}" for i in range(p.n_units)],
                          "attribution": attributions[p.name], "activation": pooled[p.name]})
            for p in points]
    tmp = out / "attributions.parquet.tmp"
    pd.concat(rows, ignore_index=True).to_parquet(tmp, index=False)
    tmp.replace(out / "attributions.parquet")
    tmp = out / "explanation.json.tmp"
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(out / "explanation.json")
