"""Attribution of one scalar output to every unit of chosen layers, on one image.

A unit's attribution is summed over its positions (its whole map), so it is the first-order share
of the output carried by the unit:
- grad_x_act:  sum_s a_us * d out / d a_us, every layer from one backward pass;
- integrated gradients (Sundararajan et al. 2017), per layer: the layer's output is scaled from 0 to
  its value along `steps` midpoints, everything after it recomputed; attribution = a * mean gradient.
Both are exact on a linear head: there the gradient is constant, so both give a_u x w_u.

The layers are hooked on the Target's model; a layer whose output does not require grad (units
computed from ground truth, not pixels) is made a leaf so gradients still reach it.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable

import numpy as np
import torch

from ..models.target import HookPoint, Target

METHODS = ("grad_x_act", "integrated_gradients")


def _first(out):
    return out[0] if isinstance(out, (tuple, list)) else out


def _replace(out, new):
    return (new, *out[1:]) if isinstance(out, (tuple, list)) else new


@contextmanager
def captured(target: Target, points: list[HookPoint], edit: dict | None = None):
    """Hook `points`; yields {name: output tensor in the graph}. `edit[name](raw) -> new raw`
    rewrites a layer's output before the rest of the network sees it."""
    store: dict[str, torch.Tensor] = {}
    modules = dict(target.model.named_modules())
    edit = edit or {}

    def hook_for(name):
        def hook(_m, _inp, out):
            if name in store:  # a module called twice: the first call is the unit
                return None
            raw = _first(out)
            if name in edit:
                raw = edit[name](raw)
            elif not raw.requires_grad:
                raw = raw.detach().requires_grad_(True)
            if raw.requires_grad and not raw.is_leaf:
                raw.retain_grad()
            store[name] = raw
            return _replace(out, raw)
        return hook

    handles = [modules[p.name].register_forward_hook(hook_for(p.name)) for p in points]
    try:
        yield store
    finally:
        for h in handles:
            h.remove()


def repeat_batch(target: Target, batch, r: int):
    """The one-image `batch` r times (for steps of IG or rows of ablations), as the target's type."""
    idx = None if batch.indices is None else np.repeat(np.asarray(batch.indices)[:1], r)
    return target.make_batch(batch.pixels[:1].expand(r, *batch.pixels.shape[1:]), idx, batch.probe)


def unit_sums(point: HookPoint, x: torch.Tensor) -> torch.Tensor:
    """(B, ...) raw layout -> (B, U): summed over the unit's positions."""
    return point.layout.canonical(x).sum(dim=2)


def grad_x_act(target: Target, batch, points: list[HookPoint],
               objective: Callable) -> dict[str, np.ndarray]:
    with torch.enable_grad(), captured(target, points) as store:
        out = target.run(batch)
        objective(out).sum().backward()
    result = {}
    for p in points:
        a = store[p.name]
        g = a.grad if a.grad is not None else torch.zeros_like(a)
        result[p.name] = unit_sums(p, (a * g).detach())[0].double().numpy()
    return result


def integrated_gradients(target: Target, batch, points: list[HookPoint],
                         objective: Callable, steps: int = 16) -> dict[str, np.ndarray]:
    alphas = (torch.arange(steps, dtype=torch.float32) + 0.5) / steps  # midpoint rule
    many = repeat_batch(target, batch, steps)
    with torch.no_grad(), captured(target, points) as clean_store:
        target.run(batch)
    clean = {name: t.detach() for name, t in clean_store.items()}
    result = {}
    for p in points:
        base = clean[p.name]
        leaf = {}

        def scaled(_raw, base=base, leaf=leaf):
            shape = (steps,) + (1,) * (base.dim() - 1)
            x = (alphas.to(base.device).reshape(shape) * base.expand(steps, *base.shape[1:]))
            x = x.detach().requires_grad_(True)
            leaf["x"] = x
            return x

        with torch.enable_grad(), captured(target, [p], edit={p.name: scaled}):
            objective(target.run(many)).sum().backward()
        mean_grad = leaf["x"].grad.mean(dim=0, keepdim=True)
        result[p.name] = unit_sums(p, (base * mean_grad).detach())[0].double().numpy()
    return result


def attribute(target: Target, batch, points: list[HookPoint], objective: Callable,
              method: str = "grad_x_act", steps: int = 16):
    """{layer: (U,) attribution} of objective(output) on the one-image `batch`."""
    if method == "grad_x_act":
        return grad_x_act(target, batch, points, objective)
    if method == "integrated_gradients":
        return integrated_gradients(target, batch, points, objective, steps)
    from ..errors import UserError

    raise UserError(f"unknown attribution method '{method}': choose {' or '.join(METHODS)}")
