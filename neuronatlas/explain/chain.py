"""The chain: from the output back through the recorded layers, which units drive which.

The last layer's nodes are its top-K units by attribution of the output. For each node, the units of
the layer before that drive it are found by the same attribution, with the node's pooled activation
(the run's pooling of that layer) as the output: grad x act of that scalar w.r.t. the layer before.
The K strongest positive contributors become edges (weight = their attribution); the layer before's
nodes are the K units with the largest total edge weight. One forward pass, one backward per node.
"""

from __future__ import annotations

import numpy as np
import torch

from ..models.target import HookPoint, Target
from ..recording.pooling import pool_output
from .attribution import captured, unit_sums


def build_chain(target: Target, batch, points: list[HookPoint], poolings: dict[str, str],
                objective, k: int = 5) -> dict:
    """points in model order; returns {"nodes": [...], "edges": [...]} (unit ids LAYER:INDEX)."""
    nodes, edges = [], []
    with torch.enable_grad(), captured(target, points) as store:
        out = target.run(batch)
        total = objective(out).sum()
        last = points[-1]
        a = store[last.name]
        (g,) = torch.autograd.grad(total, a, retain_graph=len(points) > 1, allow_unused=True)
        g = torch.zeros_like(a) if g is None else g
        attr = unit_sums(last, a * g)[0].detach().double().numpy()
        current = [int(i) for i in np.argsort(-attr, kind="stable")[:k]]
        nodes += [{"unit": f"{last.name}:{u}", "layer": last.name, "index": u,
                   "weight": float(attr[u])} for u in current]
        for depth in range(len(points) - 1, 0, -1):
            here, before = points[depth], points[depth - 1]
            pooled = pool_output(store[here.name], here.layout, poolings[here.name])[0]
            incoming = np.zeros(before.n_units)
            for u in current:
                (g,) = torch.autograd.grad(pooled[u], store[before.name], retain_graph=True,
                                           allow_unused=True)
                if g is None:
                    continue
                contrib = unit_sums(before, store[before.name] * g)[0].detach().double().numpy()
                for v in np.argsort(-contrib, kind="stable")[:k]:
                    if contrib[v] > 0:
                        edges.append({"source": f"{before.name}:{int(v)}",
                                      "target": f"{here.name}:{u}", "weight": float(contrib[v])})
                        incoming[v] += contrib[v]
            current = [int(v) for v in np.argsort(-incoming, kind="stable")[:k] if incoming[v] > 0]
            nodes += [{"unit": f"{before.name}:{v}", "layer": before.name, "index": v,
                       "weight": float(incoming[v])} for v in current]
    return {"nodes": nodes, "edges": edges, "k": k}
