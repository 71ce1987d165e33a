"""Deletion curves: is the output carried by the units the attribution names?

For a layer and each k, the top-k units by attribution are ablated (their whole map set to the run's
recorded mean of the unit, or to zero) and the output recomputed. Next to it the same for k random
units of the layer (seeded, several draws, averaged) and for the top-k units by activation alone. A
faithful attribution drops the output faster than both. All k of one ranking go through the model
as one batch (one forward pass per ranking).
"""

from __future__ import annotations

import numpy as np
import torch

from ..models.target import HookPoint, Target
from .attribution import captured, repeat_batch


def default_ks(n_units: int) -> list[int]:
    ks, k = [0], 1
    while k < n_units and len(ks) < 12:
        ks.append(k)
        k *= 2
    return ks + ([n_units] if n_units > 1 and n_units not in ks else [])


@torch.no_grad()
def _outputs_with_ablations(target: Target, batch, point: HookPoint, masks: torch.Tensor,
                            baseline: torch.Tensor, objective) -> np.ndarray:
    """masks (R, U) bool: row r ablates those units; returns the objective per row."""
    r = len(masks)
    layout = point.layout

    def ablate(raw):
        acts = layout.canonical(raw).expand(r, -1, -1).clone()  # (R, U, S)
        base = baseline.to(acts.device, acts.dtype)[None, :, None].expand_as(acts)
        m = masks.to(acts.device)[:, :, None].expand_as(acts)
        acts = torch.where(m, base, acts)
        return layout.uncanonical(acts, raw)

    with captured(target, [point], edit={point.name: ablate}):
        out = target.run(repeat_batch(target, batch, r))
    return objective(out).double().cpu().numpy()


def _masks(order: np.ndarray, ks: list[int], n_units: int) -> torch.Tensor:
    m = torch.zeros(len(ks), n_units, dtype=torch.bool)
    for i, k in enumerate(ks):
        m[i, torch.as_tensor(order[:k], dtype=torch.long)] = True
    return m


def deletion_curves(target: Target, batch, point: HookPoint, attribution: np.ndarray,
                    activation: np.ndarray, baseline: np.ndarray, objective, ks=None,
                    random_draws: int = 5, seed: int = 0) -> dict:
    n = point.n_units
    ks = ks or default_ks(n)
    base = torch.tensor(np.asarray(baseline, dtype=np.float32))
    run = lambda order: _outputs_with_ablations(target, batch, point, _masks(order, ks, n),  # noqa: E731
                                                base, objective).tolist()
    rng = np.random.default_rng(seed)
    randoms = np.array([run(rng.permutation(n)) for _ in range(random_draws)])
    return {"layer": point.name, "k": ks,
            "attribution": run(np.argsort(-attribution, kind="stable")),
            "activation": run(np.argsort(-activation, kind="stable")),
            "random_mean": randoms.mean(0).tolist(), "random_std": randoms.std(0).tolist(),
            "random_draws": random_draws, "seed": seed}
