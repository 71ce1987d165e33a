"""Sparse text decomposition: write a vector of CLIP's joint space (a neuron's second-order PC, an
image embedding) as a sparse combination of text embeddings.

    dictionary = TextDictionary.from_embeddings(texts, emb_TD)          # unit-norm atoms
    dec = decompose(vec_D, dictionary, DecomposeConfig(method="omp", n_terms=32))
    dec.terms            # [(text, coefficient), ...] by |coefficient|
    dec.cosine, dec.relative_residual

Atoms are normalised **per atom** (every text embedding, after optional centring over the text set,
has norm 1), which is what orthogonal matching pursuit's greedy step assumes: it picks the atom with
the largest |<atom, residual>|, a cosine only if every atom has the same norm. The second_order_lens
reference instead divided the centred text matrix by its column norms (per embedding dimension), which
reweights dimensions and gives atoms of unequal norms, so OMP ranks texts by length as much as by
direction (tests/lens/test_text_decomposition.py shows it picking the wrong words on a planted combination).

Two solvers, both batched over many vectors:
- `omp`: orthogonal matching pursuit, least squares refit over the selected atoms at each step, stops
  after `n_terms` atoms or when the residual is below `tol` x the vector's norm.
- `lasso`: non-negative lasso, min 1/(2d) ||x - A^T c||^2 + alpha ||c||_1 with c >= 0 (scikit-learn's
  coordinate descent), the SpLiCE-style alternative: only texts that add to the vector.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .. import run as rundir
from ..errors import UserError

METHODS = ("omp", "lasso")


@dataclass(frozen=True)
class DecomposeConfig:
    """How to decompose. `n_terms`: OMP's number of atoms (and how many lasso terms are kept as
    labels); `alpha`: the lasso penalty; `center`: subtract the mean text embedding before normalising
    (removes the direction every text shares, as the reference did); `tol`: OMP stops early when the
    relative residual falls below it."""

    method: str = "omp"
    n_terms: int = 32
    alpha: float = 1e-3
    center: bool = True
    tol: float = 1e-6
    max_iter: int = 5000

    def __post_init__(self):
        if self.method not in METHODS:
            raise UserError(f"unknown decomposition method '{self.method}': use one of "
                            f"{', '.join(METHODS)}")
        if self.n_terms < 1:
            raise UserError(f"n_terms must be at least 1 (got {self.n_terms})")
        if self.alpha <= 0:
            raise UserError(f"alpha must be positive (got {self.alpha})")

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class TextDictionary:
    """Unit-norm text atoms (T, D), the texts they came from, and the centre that was subtracted.

    Texts whose embeddings coincide (e.g. words a small tokenizer maps to the same ids) are kept once
    (the first), since OMP cannot tell them apart; `n_merged` counts the dropped copies."""

    texts: tuple[str, ...]
    atoms_TD: np.ndarray
    center_D: np.ndarray
    n_merged: int = 0

    @classmethod
    def from_embeddings(cls, texts, emb_TD: np.ndarray, center: bool = True) -> "TextDictionary":
        emb = np.asarray(emb_TD, dtype=np.float64)
        texts = tuple(texts)
        if emb.ndim != 2 or emb.shape[0] != len(texts):
            raise UserError(f"text embeddings of shape {emb.shape} do not match {len(texts)} texts")
        emb = emb / _norms(emb)[:, None]
        mean = emb.mean(0) if center else np.zeros(emb.shape[1])
        atoms = emb - mean
        norms = np.linalg.norm(atoms, axis=1)
        keep = norms > 1e-6  # drops a text equal to the centre (inputs are unit length)
        atoms = atoms[keep] / norms[keep, None]
        kept = [t for t, k in zip(texts, keep) if k]
        if not keep.any():
            raise UserError("the text set has no usable atoms (every embedding is the same): use a "
                            "text set the model's tokenizer knows")
        # identical atoms: keep the first (rounded values as the key: equal up to float noise)
        _, first = np.unique(np.round(atoms, 6), axis=0, return_index=True)
        first = np.sort(first)
        n_merged = len(texts) - len(first)
        return cls(tuple(kept[i] for i in first), atoms[first].astype(np.float32), mean.astype(np.float32),
                   n_merged)

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def hash(self) -> str:
        h = hashlib.blake2b(digest_size=12)
        h.update(np.ascontiguousarray(self.atoms_TD).tobytes())
        return h.hexdigest()


def _norms(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=-1)
    return np.where(n > 0, n, 1.0)


@dataclass(frozen=True)
class Decomposition:
    """One vector's decomposition: atom indices and coefficients (by |coefficient|, largest first),
    and how well they rebuild the vector."""

    indices: np.ndarray
    coefs: np.ndarray
    texts: tuple[str, ...]
    cosine: float
    relative_residual: float

    @property
    def terms(self) -> list[tuple[str, float]]:
        return [(t, float(c)) for t, c in zip(self.texts, self.coefs)]


# -- solvers (plain arrays) -------------------------------------------------------------------------
def omp(atoms_TD: np.ndarray, x_ND: np.ndarray, n_terms: int, tol: float = 1e-6
        ) -> tuple[np.ndarray, np.ndarray]:
    """Orthogonal matching pursuit of every row of x over the rows of `atoms_TD` (unit norm).

    Returns (indices (N, k), coefs (N, k)) in selection order; k = min(n_terms, T, D); slots after an
    early stop have index -1 and coefficient 0. Ties go to the lowest atom index."""
    A = np.asarray(atoms_TD, dtype=np.float64)
    X = np.atleast_2d(np.asarray(x_ND, dtype=np.float64))
    n, (t, d) = X.shape[0], A.shape
    if X.shape[1] != d:
        raise UserError(f"vectors have {X.shape[1]} dimensions but the text atoms have {d}: embed the "
                        f"texts with the same CLIP model")
    k = min(n_terms, t, d)
    idx = np.full((n, k), -1, dtype=np.int64)
    coef = np.zeros((n, k))
    Ax = X @ A.T  # (N, T) correlations of the vectors with every atom
    residual = X.copy()
    scale = np.linalg.norm(X, axis=1)
    active = scale > 0
    for step in range(k):
        if not active.any():
            break
        rows = np.flatnonzero(active)
        corr = np.abs(residual[rows] @ A.T)
        if step:  # never pick an atom twice (its correlation is ~0 anyway after the refit)
            np.put_along_axis(corr, idx[rows, :step], -1.0, axis=1)
        idx[rows, step] = corr.argmax(1)
        S = idx[rows, :step + 1]  # (n, s)
        AS = A[S]  # (n, s, D)
        G = AS @ AS.transpose(0, 2, 1)  # Gram of the selected atoms
        b = np.take_along_axis(Ax[rows], S, axis=1)
        c = _solve_spd(G, b)
        coef[rows, :step + 1] = c
        residual[rows] = X[rows] - np.einsum("ns,nsd->nd", c, AS)
        done = np.linalg.norm(residual[rows], axis=1) <= tol * scale[rows]
        active[rows[done]] = False
    return idx, coef


def _solve_spd(G: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Solve G c = b for a batch of small symmetric systems (least squares if one is singular)."""
    try:
        return np.linalg.solve(G, b[..., None])[..., 0]
    except np.linalg.LinAlgError:
        return np.stack([np.linalg.lstsq(g, v, rcond=None)[0] for g, v in zip(G, b)])


def positive_lasso(atoms_TD: np.ndarray, x_ND: np.ndarray, alpha: float, max_iter: int = 5000,
                   tol: float = 1e-8) -> np.ndarray:
    """Non-negative lasso coefficients (N, T): min_c 1/(2D) ||x - A^T c||^2 + alpha ||c||_1, c >= 0."""
    from sklearn.linear_model import Lasso

    A = np.asarray(atoms_TD, dtype=np.float64)
    X = np.atleast_2d(np.asarray(x_ND, dtype=np.float64))
    if X.shape[1] != A.shape[1]:
        raise UserError(f"vectors have {X.shape[1]} dimensions but the text atoms have {A.shape[1]}")
    model = Lasso(alpha=alpha, positive=True, fit_intercept=False, max_iter=max_iter, tol=tol,
                  precompute=True)
    out = np.zeros((X.shape[0], A.shape[0]))
    design = np.asfortranarray(A.T)  # (D samples, T features)
    for i, x in enumerate(X):
        model.fit(design, x)
        out[i] = model.coef_
    return out


# -- the user-facing call ----------------------------------------------------------------------------
def quality(x_ND: np.ndarray, recon_ND: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(cosine(x, reconstruction), ||x - reconstruction|| / ||x||) per row; 0 and 1 for a zero
    reconstruction."""
    x = np.atleast_2d(np.asarray(x_ND, dtype=np.float64))
    r = np.atleast_2d(np.asarray(recon_ND, dtype=np.float64))
    nx, nr = np.linalg.norm(x, axis=1), np.linalg.norm(r, axis=1)
    dot = (x * r).sum(1)
    cos = np.where((nx > 0) & (nr > 0), dot / np.maximum(nx * nr, 1e-300), 0.0)
    rel = np.linalg.norm(x - r, axis=1) / np.where(nx > 0, nx, 1.0)
    return cos, rel


def decompose_many(x_ND: np.ndarray, dictionary: TextDictionary, config: DecomposeConfig = DecomposeConfig()
                   ) -> list[Decomposition]:
    """Decompose every row of x over the dictionary."""
    X = np.atleast_2d(np.asarray(x_ND, dtype=np.float64))
    A = dictionary.atoms_TD.astype(np.float64)
    if config.method == "omp":
        idx, coef = omp(A, X, config.n_terms, config.tol)
    else:
        full = positive_lasso(A, X, config.alpha, config.max_iter)
        order = np.argsort(-full, axis=1, kind="stable")
        idx, coef = order, np.take_along_axis(full, order, axis=1)
        nz = coef > 0
        idx, coef = np.where(nz, idx, -1), np.where(nz, coef, 0.0)
    recon = np.einsum("nk,nkd->nd", coef, A[np.where(idx >= 0, idx, 0)])
    cos, rel = quality(X, recon)
    out = []
    for i in range(len(X)):
        keep = idx[i] >= 0
        ii, cc = idx[i][keep], coef[i][keep]
        order = np.argsort(-np.abs(cc), kind="stable")
        ii, cc = ii[order][:config.n_terms], cc[order][:config.n_terms]
        out.append(Decomposition(ii, cc, tuple(dictionary.texts[j] for j in ii), float(cos[i]),
                                 float(rel[i])))
    return out


def decompose(x_D: np.ndarray, dictionary: TextDictionary, config: DecomposeConfig = DecomposeConfig()
              ) -> Decomposition:
    """Decompose one vector over the dictionary."""
    return decompose_many(np.asarray(x_D)[None], dictionary, config)[0]


# -- dictionaries from a CLIP's text encoder ----------------------------------------------------------
def default_text_set(scorer) -> str:
    """words20k, except for models whose tokenizer only knows a small vocabulary (world-clip), where
    most words would be <unk>: their own concept set."""
    return "world" if getattr(scorer, "name", "") == "world-clip" else "words20k"


def text_dictionary(scorer, concepts=None, center: bool = True, cache_dir: str | Path | None = None,
                    progress: bool = True) -> TextDictionary:
    """Embed a concept set with the scorer's text encoder and build the unit-norm dictionary.

    The embeddings are cached in CACHE_DIR/cache/embeddings/ under the same key as the describe
    methods' (the scorer's weights and the texts' hash), so they are shared with CLIP-Dissect's;
    20k words through a ViT-B text tower take minutes on a CPU, hence the progress bar."""
    import torch

    from ..concepts import load_concepts
    from .embeddings import _key, _load, _save, scorer_key

    cs = load_concepts(concepts or default_text_set(scorer))
    root = Path(cache_dir) if cache_dir else _default_cache_root()
    path = rundir.cache_dir(root, "embeddings") / f"texts-{_key(scorer_key(scorer), cs.hash)}.npy"
    emb = _load(path, len(cs))
    if emb is None:
        texts, chunk = list(cs.texts), 512
        parts = []
        with torch.no_grad():
            for s in _steps(range(0, len(texts), chunk), -(-len(texts) // chunk),
                            f"embed {len(texts)} texts", progress):
                parts.append(scorer.encode_texts(texts[s:s + chunk]).float().cpu().numpy())
        emb = np.concatenate(parts)
        _save(path, emb)
    return TextDictionary.from_embeddings(cs.texts, emb, center=center)


def _default_cache_root() -> Path:
    import os

    return Path(os.environ.get("NEURONATLAS_CACHE") or Path.home() / ".cache" / "neuronatlas") / "lens"


# -- neurons of a second-order result -------------------------------------------------------------
def target_of(result):
    """The Target a second-order result was computed with: the same spec, weights and,
    for random weights, seed, so the text tower matches the vision tower that made the PCs.
    lens.compute.lens_for builds its lens on this target too."""
    import torch

    from ..models import load_target

    cfg = result.meta["config"]
    torch.manual_seed(cfg.get("seed", 0))
    return load_target(result.meta["key"]["model"]["spec"], weights=cfg.get("weights"),
                       random_weights=cfg.get("random_weights", False))


def model_of(result, device=None):
    """(target, scorer) of the CLIP a second-order result was computed with (see target_of), on
    `device` (default: the result's, else cuda when available)."""
    import torch

    from ..backends.clip import scorer_from_target

    target = target_of(result)
    device = device or result.meta["config"].get("device")
    target.to(torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu")))
    return target, scorer_from_target(target)


def decompose_neurons(results, dictionary: TextDictionary, config: DecomposeConfig = DecomposeConfig(),
                      progress: bool = True):
    """Decompose the first PC of every neuron of the given second-order results (one per layer).

    Returns a table: unit, rank, label, score (= coefficient, highest first), cosine,
    relative_residual, n_merged_texts; the first PC's direction is what is decomposed (its length is
    1, so coefficients read as that direction's share per text)."""
    import pandas as pd

    rows = []
    for res in results:
        pcs = np.asarray(res.pc, dtype=np.float64)
        if pcs.shape[1] != dictionary.atoms_TD.shape[1]:
            raise UserError(f"the PCs of {res.layer} have {pcs.shape[1]} dimensions but the text atoms "
                            f"{dictionary.atoms_TD.shape[1]}: embed the texts with the same CLIP")
        block = 64  # a progress step; OMP is batched within it
        for s in _steps(range(0, len(pcs), block), len(pcs) // block + 1, f"decompose {res.layer}",
                        progress):
            for j, dec in enumerate(decompose_many(pcs[s:s + block], dictionary, config)):
                order = np.argsort(-dec.coefs, kind="stable")  # positive terms first
                for r, k in enumerate(order):
                    rows.append((f"{res.layer}:{s + j}", r, dec.texts[k], float(dec.coefs[k]),
                                 dec.cosine, dec.relative_residual))
    df = pd.DataFrame(rows, columns=["unit", "rank", "label", "score", "cosine", "relative_residual"])
    return df


def _steps(it, total: int, desc: str, show: bool):
    if not show:
        return it
    from rich.progress import track

    return track(it, total=total, description=desc, transient=True)


def neuron_terms(labels, units: list[str]) -> list[list[tuple[str, float]]]:
    """[(text, coef), ...] per unit, from a second-order labels table (missing units: empty)."""
    by_unit: dict[str, list] = {u: [] for u in units}
    for u, t, c in zip(labels["unit"], labels["label"], labels["score"]):
        if u in by_unit:
            by_unit[u].append((t, float(c)))
    return [by_unit[u] for u in units]
