"""CLIP-Dissect: label each unit with the concept whose image-text similarity best matches its
activations over the probe set.

Oikarinen & Weng, "CLIP-Dissect: Automatic Description of Neuron Representations in Deep Vision
Networks", ICLR 2023 (arXiv:2204.10965); reference code Trustworthy-ML-Lab/CLIP-dissect.

Notation: N probe images, U units, C concepts. A[i,u] is the unit's pooled activation on image i;
P[i,c] = s * cos(image_i, text_c), s = `logit_scale`, default 1: the reference's P is the plain cosine
of the L2-normalised embeddings (utils.get_similarity_from_activations: image_features @
text_features.T, no logit scale). s > 1 sharpens wpmi / soft_wpmi's softmax (softmax(a * s * cos)):
s = 100 (CLIP's own logit scale) made soft-WPMI's top-1 differ from the reference's on most units
and cost accuracy (docs/fidelity.md). cos, rank_reorder and the labels of cos_cubed do not depend on
s, except where cos_cubed's min_norm clamp binds.

    cos           sim[u,c] = <A[:,u] / |A[:,u]|, P[:,c] / |P[:,c]|>                (norms over images)
    cos_cubed     A' = (A - mean_i A)^3, P' = (P - mean_i P)^3, each column divided by
                  max(|column|, min_norm = 1e-3); sim = <A'[:,u], P'[:,c]>
    rank_reorder  T = the unit's top n = int(N * top_fraction) images (top_fraction 0.05), t_1 >= ... >=
                  t_n their activations. Order T by P[.,c] and give the j-th image of that order the
                  j-th activation of t's order: r_c(x). err = mean_x |a(x) - r_c(x)|^p / B / m_c^scale_p,
                  with p = 3, scale_p = 0.5, m_c = mean_{x in T} P[x,c], and B = the expected value of
                  mean_x |a(x) - a(pi(x))|^p over random permutations pi (= mean_{x,y} |t_x - t_y|^p).
                  sim = -err.
    wpmi          Q[i,:] = softmax_c(a * P[i,:]); E = the unit's top k images;
                  log P(c|E) = sum_{x in E} log(Q[x,c] + eps);
                  log P(c) = log mean_u exp(log P(c|E_u))  (over all units of the layer);
                  sim = log P(c|E) - lam * log P(c).        defaults k 28, a 2, lam 0.6, eps 1e-7
    soft_wpmi     as wpmi, but image x_j (j = 0..k-1 by decreasing activation) is in E with
                  probability p_j = p_start - j/k * (p_start - p_end):
                  log P(c|E) = sum_j log(1 + p_j * (Q[x_j,c] - 1) + eps).
                  defaults k 100, a 10, lam 1, p_start 0.998, p_end 0.97, eps 1e-7.  (the default)

The label of unit u is argmax_c sim[u,c]; we keep the top `top` concepts with their scores.

Differences from the reference code, none of which changes a label: rank_reorder's baseline B is
its exact expectation instead of an average over 5 random permutations (the reference's score is
random; B is a per-unit constant); a concept whose mean similarity over the top images is <= 0 gets
-inf from rank_reorder (NaN in the reference); k and n are capped at N (the reference crashes); ties
go to the lower concept index. The wpmi sum is computed as sum_j log(q_j) + sum_j log1p(p_j Q / q_j),
q_j = 1 - p_j + eps (the same number); terms with p_j Q / q_j < 1e-9 are skipped (each changes the
score by less than 1e-9), and so are softmax-normaliser terms below e^-60 of a row's largest. With
a peaked softmax (large a * s) that leaves few of the (image, concept) entries to compute; at the
default s = 1 the softmax is flat and the dense path runs.

Scale: the work runs over blocks of concepts (P never exists in full: a block is image_emb @
text_emb[block].T) and of units; the activations are streamed by rows (once for the top images of
each unit; once per concept block for cos). Peak memory is about N x concept_block floats plus
U x (concept_block + k); 50k images x 10k units x 20k concepts fits in a few GB.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

import numpy as np
import torch

from ..config import Any, Literal, opt
from ..errors import UserError
from .base import LabelerConfig, Labels, labeler

DEFAULTS: dict[str, dict] = {
    "cos": {},
    "cos_cubed": {"min_norm": 1e-3},
    "rank_reorder": {"top_fraction": 0.05, "p": 3.0, "scale_p": 0.5},
    "wpmi": {"top_k": 28, "a": 2.0, "lam": 0.6, "min_prob": 1e-7},
    "soft_wpmi": {"top_k": 100, "a": 10.0, "lam": 1.0, "min_prob": 1e-7, "p_start": 0.998,
                  "p_end": 0.97},
}
SIMILARITIES = tuple(DEFAULTS)
DEFAULT_SIMILARITY = "soft_wpmi"
LOGIT_SCALE = 1.0  # the reference's P is the plain cosine (no CLIP logit scale)
SKIP = 1e-9  # wpmi terms log1p(y) with y below this are dropped


# -- the image-concept similarity matrix, one block of concepts at a time -------------------------
@dataclass
class Similarities:
    """P = scale * image_emb @ text_emb.T (both unit length), or a given dense (N, C) matrix P
    (`dense`, already scaled). `block(c0, c1)` -> (N, c1 - c0) float tensor."""

    images: torch.Tensor | None = None  # (N, d)
    texts: torch.Tensor | None = None  # (C, d)
    dense: torch.Tensor | None = None  # (N, C)
    scale: float = LOGIT_SCALE

    def __post_init__(self):
        for name in ("images", "texts", "dense"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, torch.Tensor):
                setattr(self, name, torch.from_numpy(np.asarray(v)))
        if self.dense is None and (self.images is None or self.texts is None):
            raise ValueError("Similarities needs images and texts embeddings, or dense")

    @property
    def shape(self) -> tuple[int, int]:
        if self.dense is not None:
            return tuple(self.dense.shape)
        return self.images.shape[0], self.texts.shape[0]

    def block(self, c0: int, c1: int, dtype=torch.float32) -> torch.Tensor:
        if self.dense is not None:
            return self.dense[:, c0:c1].to(dtype)
        return (self.images.to(dtype) @ self.texts[c0:c1].to(dtype).T) * self.scale


def params_for(similarity: str, **overrides) -> dict:
    if similarity not in DEFAULTS:
        raise UserError(f"unknown similarity '{similarity}': use one of {', '.join(SIMILARITIES)}")
    if overrides.get("a", 1) <= 0:
        raise UserError(f"{similarity}: a (the softmax sharpness) must be > 0")
    unknown = set(overrides) - set(DEFAULTS[similarity])
    if unknown:
        raise UserError(f"{similarity} has no parameter {', '.join(sorted(unknown))}; its parameters: "
                        f"{', '.join(DEFAULTS[similarity]) or '(none)'}")
    return {**DEFAULTS[similarity], **overrides}


# -- the engine ----------------------------------------------------------------------------------
def top_concepts(acts, sims: Similarities, similarity: str = DEFAULT_SIMILARITY, top: int = 5,
                 concept_block: int | None = None, unit_block: int | None = None,
                 row_block: int | None = None, dtype=torch.float32, progress=None,
                 **params) -> tuple[np.ndarray, np.ndarray]:
    """The `top` best concepts of every unit: (scores (U, top), concept indices (U, top)), best first.

    acts: (N, U) activations (numpy, memmap or tensor; no NaN). sims: the (N, C) similarities."""
    params = params_for(similarity, **params)
    n, c = sims.shape
    if acts.shape[0] != n:
        raise ValueError(f"{acts.shape[0]} activation rows but {n} similarity rows")
    if n < 2:
        raise UserError("CLIP-Dissect needs at least 2 probe images")
    u = acts.shape[1]
    top = min(top, c)
    cb = concept_block or int(min(c, max(64, 2 ** 27 // (4 * n))))
    ub = unit_block or 256
    state = _prepare(acts, similarity, params, dtype, row_block)
    best_v = torch.full((u, 0), -math.inf, dtype=dtype)
    best_i = torch.zeros((u, 0), dtype=torch.long)
    log_z = _row_logsumexp(sims, params["a"], cb, dtype) if "a" in params else None
    for c0 in range(0, c, cb):
        c1 = min(c, c0 + cb)
        block = sims.block(c0, c1, dtype)
        scores = _score_block(similarity, params, state, block, log_z, u, ub, dtype)  # (U, c1-c0)
        v = torch.cat([best_v, scores.nan_to_num(nan=-math.inf)], 1)
        i = torch.cat([best_i, torch.arange(c0, c1).expand(u, -1)], 1)
        best_v, best_i = _top_sorted(v, i, top)
        if progress is not None:
            progress(c1 - c0)
    return best_v.double().numpy(), best_i.numpy()


def _top_sorted(v: torch.Tensor, i: torch.Tensor, top: int):
    """The `top` best (score, concept) pairs per row, best first; equal scores go to the lower
    concept index (so the result never depends on the blocking)."""
    k = min(top, v.shape[1])
    tv, pos = v.topk(k, dim=1)
    ti = i.gather(1, pos)
    thr = tv[:, -1:]
    ambiguous = ((v == thr).sum(1) != (tv == thr).sum(1)).nonzero().flatten()
    if len(ambiguous):  # a tie straddles the cut: choose among the tied by concept index
        ii = i[ambiguous]
        o = ii.argsort(dim=1, stable=True)
        vv, ii = v[ambiguous].gather(1, o), ii.gather(1, o)
        o = vv.argsort(dim=1, descending=True, stable=True)[:, :k]
        tv[ambiguous], ti[ambiguous] = vv.gather(1, o), ii.gather(1, o)
    o = ti.argsort(dim=1, stable=True)
    tv, ti = tv.gather(1, o), ti.gather(1, o)
    o = tv.argsort(dim=1, descending=True, stable=True)
    return tv.gather(1, o), ti.gather(1, o)


class RowSubset:
    """Rows `index` of an (N, U) array (e.g. the run's memory-mapped acts without skipped images),
    read a block of rows at a time."""

    def __init__(self, array, index: np.ndarray):
        self.array, self.index = array, np.asarray(index)
        self.shape = (len(self.index), array.shape[1])

    def __getitem__(self, rows: slice):
        return self.array[self.index[rows]]


def _row_blocks(acts, dtype, rows: int | None = None):
    """(r0, block (r1 - r0, U) tensor) over the rows of acts: reads each row once, in order."""
    n, u = acts.shape
    rb = rows or max(1, 2 ** 24 // max(1, u))
    for r0 in range(0, n, rb):
        blk = acts[r0:r0 + rb]
        blk = blk if isinstance(blk, torch.Tensor) else torch.from_numpy(
            np.ascontiguousarray(blk, dtype=np.float32))
        yield r0, blk.to(dtype)


def _prepare(acts, similarity: str, params: dict, dtype, rows: int | None = None) -> dict:
    """What each function needs from the activations, in one or two streaming passes over rows."""
    n, u = acts.shape
    st: dict = {"acts": acts, "rows": rows}
    if similarity in ("cos", "cos_cubed"):
        mean = torch.zeros(u, dtype=dtype)
        if similarity == "cos_cubed":
            for _, blk in _row_blocks(acts, dtype, rows):
                mean += blk.sum(0) / n
        sq = torch.zeros(u, dtype=dtype)
        for _, blk in _row_blocks(acts, dtype, rows):
            sq += (((blk - mean) ** 3) ** 2 if similarity == "cos_cubed" else blk ** 2).sum(0)
        norm = sq.sqrt()
        st["mean"] = mean
        st["norm"] = norm.clamp_min(params["min_norm"]) if similarity == "cos_cubed" else norm
        return st
    k = min(n, int(params["top_k"]) if "top_k" in params
            else max(2, int(n * params["top_fraction"])))
    best_v = torch.empty((0, u), dtype=dtype)
    best_i = torch.empty((0, u), dtype=torch.long)
    for r0, blk in _row_blocks(acts, dtype, rows):  # running top-k per unit
        v = torch.cat([best_v, blk])
        i = torch.cat([best_i, torch.arange(r0, r0 + len(blk)).unsqueeze(1).expand(-1, u)])
        best_v, pos = v.topk(min(k, len(v)), dim=0)
        best_i = i.gather(0, pos)
    st["values"], st["index"] = best_v.T.contiguous(), best_i.T.contiguous()  # (U, k), decreasing
    if similarity == "rank_reorder":
        t, p = st["values"], params["p"]
        st["baseline"] = ((t[:, :, None] - t[:, None, :]).abs() ** p).mean((1, 2))  # (U,)
    else:
        j = torch.arange(k, dtype=torch.float64)
        if similarity == "soft_wpmi":
            pj = params["p_start"] - j / k * (params["p_start"] - params["p_end"])
        else:
            pj = torch.ones(k, dtype=torch.float64)
        qj = 1 - pj + params["min_prob"]
        st["coef"] = (pj / qj).to(dtype)  # log(q + p x) = log q + log1p(p/q x)
        st["k0"] = float(torch.log(qj).sum())
    return st


def _row_logsumexp(sims: Similarities, a: float, cb: int, dtype) -> torch.Tensor:
    """log sum_c exp(a P[i,c]) for every image, streaming over concept blocks: (N, 1). Terms below
    e^-60 times a block's largest are left out (relative effect < C e^-60): this keeps the
    exponentials out of the slow denormal range, and when a P is peaked (as with CLIP and
    soft_wpmi's a) only a few entries per row are exponentiated at all."""
    n, c = sims.shape
    out = torch.full((n, 1), -math.inf, dtype=dtype)
    for c0 in range(0, c, cb):
        blk = sims.block(c0, min(c, c0 + cb), dtype)
        m = blk.amax(1, keepdim=True)
        keep = blk >= m - 60.0 / a
        if int(keep.count_nonzero()) < 0.2 * keep.numel():
            rows, cols = keep.nonzero(as_tuple=True)
            e = torch.exp(a * (blk[rows, cols] - m[rows, 0]))
            lse = torch.zeros(n, dtype=dtype).index_add_(0, rows, e)[:, None].log_() + a * m
        else:
            lse = (a * (blk - m)).clamp_min_(-60.0).exp_().sum(1, keepdim=True).log_() + a * m
        out = torch.logaddexp(out, lse)
    return out


def _score_block(similarity, params, st, block, log_z, u, ub, dtype) -> torch.Tensor:
    if similarity in ("cos", "cos_cubed"):
        if similarity == "cos_cubed":
            p = (block - block.mean(0, keepdim=True)) ** 3
            p = p / p.norm(dim=0, keepdim=True).clamp_min(params["min_norm"])
        else:
            p = block / block.norm(dim=0, keepdim=True)
        out = torch.zeros((u, block.shape[1]), dtype=block.dtype)
        for r0, a in _row_blocks(st["acts"], block.dtype, st["rows"]):
            a = (a - st["mean"]) ** 3 if similarity == "cos_cubed" else a
            out += (a / st["norm"]).T @ p[r0:r0 + len(a)]
        return out
    if similarity == "rank_reorder":
        return _rank_reorder(params, st, block, ub)
    # Q = softmax over all concepts (log_z: the rows' normalisers), this block's columns
    corr = _wpmi_sums(block, params["a"], log_z, st["index"], st["coef"], ub)
    # log P(c|E) = k0 + corr;  log P(c) = k0 + logsumexp_u(corr) - log U;  k0 cancels when lam = 1
    lam = params["lam"]
    prior = torch.logsumexp(corr, 0, keepdim=True) - math.log(u)
    return corr - lam * prior + (1 - lam) * st["k0"]


def _wpmi_sums(block, a, log_z, index, coef, ub) -> torch.Tensor:
    """out[u, c] = sum_j log1p(coef_j * Q[index[u, j], c]) with Q = exp(a * block - log_z), dense or
    sparse by the density of the entries that matter (coef_j Q >= SKIP); the others count as 0."""
    u, k = index.shape
    n, cb = block.shape
    # coef Q >= SKIP  <=>  block >= (log_z + log(SKIP / coef)) / a: one comparison, no exp
    keep = block >= (log_z + math.log(SKIP / float(coef.max()))) / a
    density = int(keep.count_nonzero()) / keep.numel()
    out = torch.empty((u, cb), dtype=block.dtype)
    if density > 0.1:
        q = torch.where(keep, a * block - log_z, -math.inf).exp_()
        step = max(1, min(ub, (2 ** 24) // max(1, k * cb)))
        for u0 in range(0, u, step):
            g = q[index[u0:u0 + step]]  # (b, k, cb)
            out[u0:u0 + step] = torch.log1p(coef[:, None] * g).sum(1)
        return out
    rows, cols = keep.nonzero(as_tuple=True)  # row-major: a CSR of the entries that matter
    vals = torch.exp(a * block[rows, cols] - log_z[rows, 0])
    counts = torch.bincount(rows, minlength=n)
    starts = torch.cumsum(counts, 0) - counts
    step = max(1, min(u, (2 ** 22) // max(1, int(counts.float().mean() * k) + 1)))
    for u0 in range(0, u, step):
        idx = index[u0:u0 + step].reshape(-1)  # (b*k,) image of each (unit, rank)
        cnt = counts[idx]
        owner = torch.repeat_interleave(torch.arange(len(idx)), cnt)
        offs = torch.arange(int(cnt.sum())) - torch.repeat_interleave(torch.cumsum(cnt, 0) - cnt, cnt)
        pos = starts[idx][owner] + offs
        val = torch.log1p(coef[owner % k] * vals[pos])
        b = idx.numel() // k
        flat = torch.zeros(b * cb, dtype=block.dtype)
        flat.index_add_(0, (owner // k) * cb + cols[pos], val)
        out[u0:u0 + b] = flat.view(b, cb)
    return out


def _rank_reorder(params, st, block, ub) -> torch.Tensor:
    p, scale_p = params["p"], params["scale_p"]
    index, values, baseline = st["index"], st["values"], st["baseline"]
    u, n = index.shape
    cb = block.shape[1]
    out = torch.empty((u, cb), dtype=block.dtype)
    step = max(1, min(ub, (2 ** 22) // max(1, n * cb)))
    for u0 in range(0, u, step):
        g = block[index[u0:u0 + step]]  # (b, n, cb): the concept's scores of the unit's top images
        avg = g.mean(1)
        ranks = g.argsort(1).argsort(1)  # rank of each top image under the concept
        ascending = values[u0:u0 + step].flip(1)
        reorg = ascending[:, :, None].expand_as(g).gather(1, ranks)
        err = ((values[u0:u0 + step, :, None] - reorg).abs() ** p).mean(1)
        out[u0:u0 + step] = -(err / baseline[u0:u0 + step, None] / avg ** scale_p)
    return out.nan_to_num(nan=-math.inf)  # mean similarity <= 0: NaN in the reference, never chosen


# -- on a run: the labeler ---------------------------------------------------------------------
_PARAM_NAMES = sorted({p for d in DEFAULTS.values() for p in d})


@dataclass(frozen=True)
class ClipDissectConfig(LabelerConfig):
    layers: tuple[str, ...] | None = opt(None, "Comma-separated layers (default: every layer "
                                               "recorded with --save-acts).")
    scorer: Any = opt(None, "Image-text scorer: zoo:world-clip, open_clip:M/TAG, hf:..., "
                            "conse:efficientnet-lite0, or a scorer object (default "
                            "conse:mobilenet-v2; zoo:world-clip on a world probe set).")
    concepts: Any = opt(None, "Concept set: words20k, words10k, words3k, imagenet, world, a text "
                              "file (one per line), a list or a ConceptSet (default words20k; "
                              "world with zoo:world-clip).")
    similarity: Literal[SIMILARITIES] = opt(DEFAULT_SIMILARITY, "Similarity function: soft_wpmi, "
                                                                "wpmi, rank_reorder, cos, cos_cubed.")
    top: int = opt(5, "Labels kept per unit (ranked).")
    probe: Any = opt(None, "Probe set, if it moved since recording.", flag="--data")
    logit_scale: float = opt(LOGIT_SCALE, "s in P = s * cos(image, text).")
    params: dict = opt(factory=dict, doc="Overrides of the similarity's parameters as JSON, e.g. "
                                         "'{\"top_k\": 50}' (Python: top_k=50).")
    batch_size: int | None = opt(None, "Images per scorer batch (default: the scorer's).")
    concept_block: int | None = opt(None, "Concepts per block (default: fits ~512 MB).")
    unit_block: int | None = opt(None, "Units per block (default 256).")
    show_progress: bool = opt(False, "Show progress bars.")

    @classmethod
    def from_options(cls, **options):
        """Similarity parameters may be given as options of their own (top_k=50)."""
        params = dict(options.pop("params", None) or {})
        for k in [k for k in options if k in _PARAM_NAMES]:
            params[k] = options.pop(k)
        return super().from_options(params=params, **options)

    def validate(self) -> None:
        if self.top < 1:
            raise self.error("top", "must be at least 1")
        params_for(self.similarity, **self.params)  # unknown or bad parameters -> UserError

    def stored_name(self, method: str) -> str:
        return method if self.similarity == DEFAULT_SIMILARITY else f"{method}-{self.similarity}"


@labeler("clip-dissect", ClipDissectConfig)
def describe_clip_dissect(run, config: ClipDissectConfig) -> Labels:
    """Label the units of `layers` (default: every layer recorded with --save-acts) of a run.

    scorer: an ImageTextScorer or a spec for `load_scorer` (conse:..., open_clip:..., hf:..., zoo:...);
        default (`default_scorer`): zoo:world-clip on a world probe set, else
        `backends.DEFAULT_SCORER` (conse:mobilenet-v2, offline).
    concepts: a ConceptSet or a spec for `load_concepts` (words20k, imagenet, world, a file...);
        default words20k, or world when the scorer is world-clip.
    Refused when most concepts hold words the scorer's tokenizer does not know (`check_vocabulary`).
    params: overrides of the similarity function's defaults (e.g. top_k=50).
    Returns the labels table and what was resolved (scorer key, concept hash, probe fingerprint)."""
    c = config
    layers, scorer, concepts, similarity, top = c.layers, c.scorer, c.concepts, c.similarity, c.top
    probe, logit_scale, batch_size, show_progress = c.probe, c.logit_scale, c.batch_size, \
        c.show_progress
    concept_block, unit_block = c.concept_block, c.unit_block
    import pandas as pd

    from ..recording.replay import probe_for_run
    from ..backends.scorer import DEFAULT_SCORER, ImageTextScorer, load_scorer
    from ..concepts import load_concepts
    from ..recording.progress import Progress
    from .embeddings import image_embeddings, scorer_key, text_embeddings

    params = params_for(similarity, **c.params)
    layers = _layers_with_acts(run, layers)
    probe = probe_for_run(run, probe)
    scorer, concepts, note = default_scorer(probe, scorer, concepts)
    if note:
        print(f"clip-dissect: {note}", file=sys.stderr)
    concept_set = load_concepts(concepts)
    if not isinstance(scorer, ImageTextScorer):
        scorer = load_scorer(scorer or DEFAULT_SCORER)
    check_vocabulary(scorer, concept_set)
    key = scorer_key(scorer)
    keep = _usable_rows(run, layers)
    bar = Progress("clip-dissect: image embeddings", len(keep), enabled=show_progress)
    try:
        img = image_embeddings(run, scorer, probe, keep, key, batch_size, bar.advance)
    finally:
        bar.close()
    txt = text_embeddings(run, scorer, concept_set, key)
    sims = Similarities(torch.from_numpy(img), torch.from_numpy(txt), scale=logit_scale)
    frames = []
    for layer in layers:
        acts = RowSubset(run.acts(layer), keep)
        bar = Progress(f"clip-dissect {layer}", len(concept_set), enabled=show_progress)
        try:
            v, i = top_concepts(acts, sims, similarity, top, concept_block, unit_block,
                                progress=bar.advance, **params)
        finally:
            bar.close()
        n_units, n_top = v.shape
        frames.append(pd.DataFrame({
            "unit": np.repeat([run.unit_id(layer, u) for u in range(n_units)], n_top),
            "rank": np.tile(np.arange(n_top), n_units).astype(np.int64),
            "label": np.asarray(concept_set.texts, dtype=object)[i.reshape(-1)],
            "score": v.reshape(-1).astype(np.float64),
            "concept_index": i.reshape(-1).astype(np.int64)}))
    df = pd.concat(frames, ignore_index=True)
    config = {"similarity": similarity, "params": params, "top": top, "logit_scale": logit_scale,
              "layers": layers, "scorer": key, "concepts": concept_set.describe(),
              "probe_fingerprint": probe.fingerprint(), "n_images": int(len(keep)),
              "paper": "Oikarinen & Weng, CLIP-Dissect, ICLR 2023 (arXiv:2204.10965)"}
    return Labels(df, config)


WORLD_SCORER = "zoo:world-clip"
VOCABULARY_REFUSE = 0.5  # share of concepts with unknown words above which labelling is refused
VOCABULARY_WARN = 0.05


def _is_world(probe) -> bool:
    parts = getattr(probe, "parts", None)
    return all(_is_world(p) for p in parts) if parts else getattr(probe, "kind", "") == "world"


def default_scorer(probe, scorer, concepts) -> tuple:
    """(scorer, concepts, note): what to use when the user gave none. The default scorer
    (conse:mobilenet-v2, an ImageNet classifier) knows nothing of the procedural world's shapes and
    textures, so a world probe set gets zoo:world-clip, the CLIP trained on it, and with it the
    world's concepts (the only words its tokenizer knows). `note` says so in one line ('' if
    nothing was filled in)."""
    from ..backends.scorer import DEFAULT_SCORER

    note = ""
    if scorer is None:
        scorer = WORLD_SCORER if _is_world(probe) else DEFAULT_SCORER
        if scorer == WORLD_SCORER:
            note = (f"world probe set and no scorer given: using {WORLD_SCORER}"
                    + (" with the world concepts" if concepts is None else ""))
    if concepts is None:
        name = scorer if isinstance(scorer, str) else getattr(scorer, "name", "")
        concepts = "world" if name.removeprefix("zoo:") == "world-clip" else "words20k"
    return scorer, concepts, note


def check_vocabulary(scorer, concept_set) -> int:
    """Refuse a concept set most of whose concepts the scorer's tokenizer cannot read (they would
    all embed alike, so the labels would be noise); warn on stderr when more than a few cannot.
    Returns the number of such concepts (0 when the scorer cannot tell)."""
    unknown = scorer.unknown_texts(list(concept_set.texts))
    if not unknown:
        return 0
    n, total = len(unknown), len(concept_set)
    name = getattr(scorer, "name", type(scorer).__name__)
    what = (f"{n} of {total} concepts of '{concept_set.name}' have words {name}'s tokenizer does "
            f"not know (e.g. {', '.join(repr(t) for t in unknown[:3])})")
    hint = "concepts=\"world\"" if name == "world-clip" else "a concept file in its vocabulary"
    if n > VOCABULARY_REFUSE * total:
        raise UserError(f"{what}: they embed as <unk> and their labels would be noise; use {hint} "
                        f"or a scorer that knows these words")
    if n > VOCABULARY_WARN * total:
        print(f"clip-dissect: warning: {what}; those concepts embed as <unk>", file=sys.stderr)
    return n


def _layers_with_acts(run, layers) -> list[str]:
    recorded = list(run.layers)
    if layers is None:
        with_acts = [l for l in recorded if run.has_acts(l)]
        if not with_acts:
            raise UserError(f"{run.path} has no pooled activation matrix (acts): CLIP-Dissect needs "
                            f"one; re-record with --save-acts (Python: save_acts=True)")
        return with_acts
    layers = [layers] if isinstance(layers, str) else list(layers)
    for layer in layers:
        if layer not in run.layers:
            run.parse_unit(f"{layer}:0")  # raises the error with near matches
        run.acts(layer)  # raises "record with --save-acts" when missing
    return layers


def _usable_rows(run, layers) -> np.ndarray:
    """Probe indices of the images that were decoded and have finite activations in every layer."""
    images = run.images
    ok = np.ones(len(images), bool)
    if "status" in images:
        ok &= (images["status"] == "ok").to_numpy()
    for layer in layers:
        acts = run.acts(layer)
        for s in range(0, acts.shape[0], 4096):
            ok[s:s + 4096] &= np.isfinite(np.asarray(acts[s:s + 4096])).all(1)
    keep = np.flatnonzero(ok)
    if len(keep) < 2:
        raise UserError(f"{run.path} has {len(keep)} usable images: CLIP-Dissect needs at least 2")
    return keep
