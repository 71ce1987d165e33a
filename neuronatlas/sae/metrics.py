"""How good a dictionary is: reconstruction, sparsity, and what the model's output loses with it.

Row metrics stream over activation rows (sums only, so memory does not grow with the data):
- mse: mean over rows of the squared error summed over units (raw activation units);
- fve: fraction of variance explained, 1 - SSE / total sum of squares about the mean row;
- l0: mean active features per row; dead: fraction of features that never fire;
  dense: fraction that fire on more than DENSE_ABOVE of the rows.
Downstream (a model source only): the model's output with the layer's chosen positions replaced by
the reconstruction, against the clean output, next to the same positions zero- and mean-ablated:
cosine of the output vectors (an image embedding, or logits), and for a classifier the increase of
cross-entropy against the clean prediction.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .base import SparseAutoencoder

DENSE_ABOVE = 0.1


@torch.no_grad()
def row_metrics(sae: SparseAutoencoder, chunks) -> dict:
    n, sse, l0 = 0, 0.0, 0.0
    sum_x = sum_x2 = None
    fires = torch.zeros(sae.n_features, dtype=torch.int64)
    for rows, _ in chunks:
        if not len(rows):
            continue
        x = rows.to(torch.float64)
        f = sae.encode(rows)
        r = sae.decode(f).to(torch.float64)
        sse += float((r - x).pow(2).sum())
        sum_x = x.sum(0) if sum_x is None else sum_x + x.sum(0)
        sum_x2 = float(x.pow(2).sum()) + (sum_x2 or 0.0)
        active = f > 0
        l0 += float(active.sum())
        fires += active.sum(0)
        n += len(rows)
    if n == 0:
        return {"rows": 0}
    total_ss = sum_x2 - float(sum_x.pow(2).sum()) / n
    density = fires.double() / n
    return {"rows": n, "mse": sse / n, "fve": 1.0 - sse / total_ss if total_ss > 0 else float("nan"),
            "l0": l0 / n, "dead_fraction": float((fires == 0).double().mean()),
            "dense_fraction": float((density > DENSE_ABOVE).double().mean()),
            "mean_row": (sum_x / n).to(torch.float32)}


def _output_vectors(out) -> torch.Tensor:
    out = out[0] if isinstance(out, (tuple, list)) else out
    if hasattr(out, "logits"):
        out = out.logits
    return out.reshape(out.shape[0], -1).to(torch.float64)


def _replace_hook(point, tokens: str, fn):
    """A forward hook that rewrites the chosen positions of the layer's output with fn(rows)."""
    from .activations import positions

    layout = point.layout
    pos = positions(point, tokens)

    def hook(_module, _inp, out):
        raw = out[0] if isinstance(out, (tuple, list)) else out
        acts = layout.canonical(raw).clone()  # (B, U, S)
        sel = acts[:, :, pos]
        b, u = sel.shape[0], sel.shape[1]
        rows = sel.transpose(1, 2).reshape(-1, u)
        acts[:, :, pos] = fn(rows).to(acts.dtype).reshape(b, -1, u).transpose(1, 2)
        new = layout.uncanonical(acts, raw)
        return (new, *out[1:]) if isinstance(out, (tuple, list)) else new
    return hook


@torch.no_grad()
def downstream(sae: SparseAutoencoder, target, probe, point, tokens: str, indices, image_batch: int,
               mean_row: torch.Tensor) -> dict:
    from ..data import iter_batches

    module = dict(target.model.named_modules())[point.name]
    variants = {"sae": lambda r: sae.decode(sae.encode(r.float())),
                "zero": lambda r: torch.zeros_like(r),
                "mean": lambda r: mean_row.to(r.device, r.dtype).expand_as(r)}
    cos = {k: [] for k in variants}
    ce = {k: [] for k in variants}
    classifier = bool(target.class_names)
    for batch in iter_batches(probe, target.preprocess.transform(), np.asarray(indices), image_batch,
                              0):
        if not len(batch.indices):
            continue
        inputs = target.make_batch(batch.pixels.to(target.device), batch.indices, probe)
        clean = _output_vectors(target.run(inputs))
        for name, fn in variants.items():
            handle = module.register_forward_hook(_replace_hook(point, tokens, fn))
            try:
                out = _output_vectors(target.run(inputs))
            finally:
                handle.remove()
            cos[name] += F.cosine_similarity(out, clean, dim=1).tolist()
            if classifier:
                label = clean.argmax(1)
                ce[name] += (F.cross_entropy(out, label, reduction="none")
                             - F.cross_entropy(clean, label, reduction="none")).tolist()
    result = {f"output_cosine_{k}": float(np.mean(v)) for k, v in cos.items() if v}
    if classifier:
        result.update({f"ce_increase_{k}": float(np.mean(v)) for k, v in ce.items() if v})
    return result
