"""Helpers of the fidelity tests: the reference codes' way of getting activations (forward hooks,
their pooling, their preprocessing) and reading the package's labels back."""

import numpy as np
import torch

N_IMAGES = 150  # > CLIP-Dissect's soft_wpmi top_k (100): the reference's defaults run unchanged
PROBE = f"world:n={N_IMAGES},size=64,seed=0"


def reference_pixels(probe, indices, transform):
    """A batch as the reference codes build it: PIL image -> the model library's own transform."""
    return torch.stack([transform(probe.read_image(int(i)).convert("RGB")) for i in indices])


def hooked_activations(model, probe, transform, layers, pool, batch=50):
    """{layer: (N, U) float32} from forward hooks on the named modules, each output reduced by
    `pool(output)` inside the hook (as CLIP-Dissect's utils.get_activation does)."""
    feats = {name: [] for name in layers}
    modules = dict(model.named_modules())
    hooks = [modules[name].register_forward_hook(
        lambda m, i, o, name=name: feats[name].append(pool(o).detach().float())) for name in layers]
    try:
        with torch.no_grad():
            for s in range(0, len(probe), batch):
                model(reference_pixels(probe, range(s, min(len(probe), s + batch)), transform))
    finally:
        for h in hooks:
            h.remove()
    return {name: torch.cat(v) for name, v in feats.items()}


def ranked(labels, layer: str, column: str) -> np.ndarray:
    """(U, top) array of a labels-table column for the units of `layer`, units in index order,
    ranks best first."""
    rows = labels[labels["unit"].str.startswith(layer + ":")].copy()
    rows["index"] = rows["unit"].str.rsplit(":", n=1).str[1].astype(int)
    wide = rows.pivot(index="index", columns="rank", values=column).sort_index()
    assert list(wide.index) == list(range(len(wide))), "units missing from the labels"
    return wide.to_numpy()
