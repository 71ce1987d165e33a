"""Compositional NetDissect (Mu & Andreas, NeurIPS 2020, "Compositional Explanations of Neurons",
arXiv 2006.14032): label a unit with the formula of concept masks (AND, OR, AND NOT) whose pixels
best overlap the unit's thresholded maps, by IoU, found by beam search.

Same thresholds and active pixels as NetDissect (describe/netdissect_passes.py; the two share the
stored passes, so after `netdissect` this needs no forward pass at all). A formula F selects the
pixels whose concept pattern satisfies it, so every count it needs comes from the per-(unit,
pattern) table of the counting kernel, never from pixels again:

    |A_u & F| = sum_{p : F(p)} n_u(p),   |F| = sum_{p : F(p)} N(p),   IoU = |A & F| / (|A| + |F| - |A & F|)

Beam search (the reference's vision/dissection/neuron.py compute_best_iou conventions): the beam
starts with the unit's `beam` best single concepts; each of `length - 1` steps extends every beam
formula F by every candidate concept c as `F OR c`, `F AND c`, `F AND NOT c` (left-deep), scores
IoU * penalty ** (leaves - 1), and keeps the `beam` best of the old beam and the new formulas.
Candidates are all concepts, or each unit's `limit` best single concepts (the reference's
BEAM_SEARCH_LIMIT). All units of a chunk are scored at once: (units, beam, patterns) @ (patterns,
concepts) per step.

Departures from the reference, and why: formulas that select exactly the same pixels (`a OR b` and
`b OR a`) are kept once (the first found), where the reference fills beam slots with such copies;
units whose every single concept has IoU 0 start from their first `beam` concepts instead of getting
no label (their labels then have IoU 0, which says so).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from ..config import opt
from .base import Labels, labeler
from .formulas import OPS, length, render, truth_vector
from .netdissect import NetDissectConfig, layer_counts


def beam_search(counts, beam: int = 5, max_length: int = 3, limit: int | None = None,
                penalty: float = 1.0, top: int | None = None, chunk: int = 4096):
    """Per unit of a LayerCounts: [(formula, iou)] best first (`top`, default `beam`, of them), and
    the number of formulas evaluated. Formulas are tuples (see formulas.py) over concept indices."""
    bits = counts.bits
    n_pat, n_con = bits.shape
    b = bits.to(torch.float64)
    n_p = counts.pattern_counts.to(torch.float64)
    n_c = n_p @ b  # |M_c|
    top = top or beam
    results, evaluated = [], 0
    for lo in range(0, counts.n_units, chunk):
        hi = min(counts.n_units, lo + chunk)
        sel = (counts.units >= lo) & (counts.units < hi)
        h = torch.zeros(hi - lo, n_pat, dtype=torch.float64)
        h.index_put_((counts.units[sel] - lo, counts.patterns[sel]), counts.counts[sel].to(torch.float64),
                     accumulate=True)
        res, n = _search_chunk(h, b, bits, n_p, n_c, beam, max_length, limit, penalty, top)
        results.extend(res)
        evaluated += n
    return results, evaluated


def _iou(inter, size, act):
    union = act + size - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-300), torch.zeros_like(union))


def _search_chunk(h, b, bits, n_p, n_c, beam, max_length, limit, penalty, top):
    n_units, n_con = h.shape[0], b.shape[1]
    act = h.sum(1)  # |A_u|
    a_c = h @ b  # |A_u & M_c|
    single = _iou(a_c, n_c[None, :], act[:, None])  # (U, C)
    order = torch.argsort(-single, dim=1, stable=True)
    k0 = min(beam, n_con)
    allowed = None
    if limit is not None and limit < n_con:
        allowed = torch.zeros(n_units, n_con, dtype=torch.bool)
        allowed.scatter_(1, order[:, :limit], True)
    # the beam: formulas (python tuples), their truth vectors over patterns and scores
    forms = [[(int(c),) for c in order[u, :k0].tolist()] for u in range(n_units)]
    scores = [single[u, order[u, :k0]].tolist() for u in range(n_units)]
    evaluated = n_units * n_con
    for _ in range(max_length - 1):
        k = max(len(f) for f in forms)
        t = torch.zeros(n_units, k, bits.shape[0], dtype=torch.bool)
        valid = torch.zeros(n_units, k, dtype=torch.bool)
        for u, fs in enumerate(forms):
            for j, f in enumerate(fs):
                t[u, j] = truth_vector(f, bits)
                valid[u, j] = True
        tf = t.to(torch.float64)
        ht, nt = h[:, None, :] * tf, n_p[None, None, :] * tf
        a_f, s_f = ht.sum(-1, keepdim=True), nt.sum(-1, keepdim=True)  # |A & F|, |F|
        a_fc, s_fc = ht @ b, nt @ b  # |A & F & c|, |F & c|
        inter = torch.stack([a_f + a_c[:, None, :] - a_fc, a_fc, a_f - a_fc], 2)  # (U, K, 3, C)
        size = torch.stack([s_f + n_c - s_fc, s_fc, s_f - s_fc], 2)
        new = _iou(inter, size, act[:, None, None, None])
        leaves = torch.tensor([[length(f) + 1 for f in fs] + [1] * (k - len(fs)) for fs in forms],
                              dtype=torch.float64)
        new = new * penalty ** (leaves - 1)[:, :, None, None]
        mask = valid[:, :, None, None].expand_as(new)
        if allowed is not None:
            mask = mask & allowed[:, None, None, :]
        new = torch.where(mask, new, torch.full_like(new, -1.0))
        evaluated += int(mask.sum())
        old = torch.full((n_units, k), -1.0, dtype=torch.float64)
        for u, sc in enumerate(scores):
            old[u, :len(sc)] = torch.tensor(sc, dtype=torch.float64)
        every = torch.cat([old, new.reshape(n_units, -1)], 1)
        # stable: ties keep the old beam first, then (beam slot, op, concept) order
        ranked = torch.argsort(-every, dim=1, stable=True)
        forms, scores = _trim(ranked, every, forms, t, bits, k, n_con, beam)
    return [list(zip(f, s))[:top] for f, s in zip(forms, scores)], evaluated


def _trim(ranked, every, forms, t, bits, k, n_con, beam):
    """The `beam` best distinct formulas per unit (distinct: they select different patterns)."""
    new_forms, new_scores = [], []
    every = every.tolist()
    for u, row in enumerate(ranked.tolist()):
        seen, fs, ss = set(), [], []
        for idx in row:
            score = every[u][idx]
            if score < 0:
                break
            if idx < k:
                f, vec = forms[u][idx], t[u, idx]
            else:
                j, rest = divmod(idx - k, 3 * n_con)
                op, c = divmod(rest, n_con)
                f = forms[u][j] + (op, c)
                vec = _extend(t[u, j], OPS[op], bits[:, c])
            key = vec.numpy().tobytes()
            if key in seen:
                continue
            seen.add(key)
            fs.append(f)
            ss.append(score)
            if len(fs) == beam:
                break
        new_forms.append(fs)
        new_scores.append(ss)
    return new_forms, new_scores


def _extend(t, op, c):
    return t | c if op == "OR" else t & c if op == "AND" else t & ~c


# -- the labeler -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CompositionalConfig(NetDissectConfig):
    beam: int = opt(5, "Formulas kept per unit at each step (the paper's 5).")
    length: int = opt(3, "Most concepts in a formula (the paper's 3; 1 = NetDissect).")
    limit: int | None = opt(None, "Candidate concepts per unit: its best single ones (default: "
                                  "every concept; the reference's BEAM_SEARCH_LIMIT).")
    penalty: float = opt(1.0, "Score = IoU * penalty ** (concepts - 1); 1 = no length penalty.")

    def validate(self) -> None:
        super().validate()
        if self.beam < 1:
            raise self.error("beam", "must be at least 1 (the paper uses 5)")
        if self.length < 1:
            raise self.error("length", "must be at least 1 (the paper uses 3)")
        if self.limit is not None and self.limit < 1:
            raise self.error("limit", "must be at least 1, or unset for every concept")
        if not 0 < self.penalty <= 1:
            raise self.error("penalty", "must be in (0, 1]; 1 = no length penalty")


@labeler("compositional", CompositionalConfig)
def label(run, config: CompositionalConfig) -> Labels:
    """Label every unit of the run's spatial layers with its best formula of concepts: the labels
    table (unit, rank, label "circle OR red", score=IoU, concept (the formula over concept ids),
    category, length, iou_single (the best single concept's IoU), threshold) and the resolved
    settings with formulas_evaluated and formulas_per_second."""
    import pandas as pd

    c = config
    counts, concepts, info = layer_counts(run, c.layers, c.quantile, c.mask_size, c.batch_size,
                                          c.bins, c.memory_budget, c.target, c.probe,
                                          c.show_progress)
    ids, phrases, cats = ([x[i] for x in concepts] for i in range(3))
    rows, evaluated = [], 0
    start = time.perf_counter()
    for name, lc in counts.items():
        found, n = beam_search(lc, c.beam, c.length, c.limit, c.penalty, c.top)
        evaluated += n
        best_single = lc.iou().amax(1)
        for u, best in enumerate(found):
            for r, (f, score) in enumerate(best):
                rows.append((f"{name}:{u}", r, render(f, phrases), float(score), render(f, ids),
                             render(f, cats), length(f), float(best_single[u]),
                             float(lc.thresholds[u])))
    seconds = time.perf_counter() - start
    df = pd.DataFrame(rows, columns=["unit", "rank", "label", "score", "concept", "category",
                                     "length", "iou_single", "threshold"])
    info.update({"formulas_evaluated": evaluated, "search_seconds": round(seconds, 3),
                 "formulas_per_second": round(evaluated / max(seconds, 1e-9))})
    return Labels(df, info)


__all__ = ["CompositionalConfig", "beam_search", "label"]
