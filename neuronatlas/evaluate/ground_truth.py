"""Agreement of labels with known true labels (synthetic units; classifier units and class names).

Per (unit, method), from the method's ranked labels (rank 0 = its label) and the unit's truth:

- exact:   the label is the truth (after lower-casing and collapsing spaces), or names the same world
           concept id (labelers that output a `concept` column, e.g. netdissect);
- top5:    the truth is among the method's top-5 labels (same matching);
- partial: the label is one of the truth's concepts (e.g. "red" for "red AND circle"), or a formula
           naming one of them; for a mono unit partial equals exact;
- concept_credit: partial credit per concept: |named & true| / |named | true| over the concepts a
           label names without negation (1 for an exact match, 1/2 for "red" on "red OR circle",
           1/3 for "red OR square" on it);

Formulas (compositional NetDissect's labels, `describe/formulas.py`: "circle OR red", concept
column "shape:circle OR color:red") are exact when they are the truth up to order: a chain of one
operator over the same concepts as an OR / AND unit's ("red OR circle" == "circle OR red").
- cosine:  cosine similarity of the label's and the truth's text embeddings (MiniLM by default), as
           in the CLIP-Dissect paper's evaluation;
- clip_cosine: the same in a CLIP's text space (an ImageTextScorer's `encode_texts`, e.g.
           `zoo:world-clip`), when `clip_scorer` is given (the paper reports both).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import Any, opt
from ..describe.formulas import canonical as canonical_formula
from ..describe.formulas import parse as parse_formula
from ..describe.formulas import positive_leaves
from .base import MetricConfig, MetricResult, metric

TRUTH_COLUMNS = ("unit", "truth")


def normalize(text) -> str:
    return " ".join(str(text).lower().split())


def _phrases(concepts: str | None) -> tuple[set[str], set[str]]:
    """(concept ids, their phrases) of a truth's "|"-joined concept ids."""
    if not concepts or not isinstance(concepts, str):
        return set(), set()
    ids = set(concepts.split("|"))
    try:
        from ..data.world import CONCEPTS

        phrases = {normalize(CONCEPTS[c].phrase) for c in ids if c in CONCEPTS}
    except ImportError:  # pragma: no cover
        phrases = set()
    return ids, phrases


_KIND_OP = {"mono": "LEAF", "or": "OR", "and": "AND"}


def _is_formula(text) -> bool:
    return isinstance(text, str) and bool(parse_formula(text)[1])


def _matches(label, concept, truth: str, concepts: str | None, kind=None) -> bool:
    if normalize(label) == normalize(truth):
        return True
    ids, phrases = _phrases(concepts)
    op = _KIND_OP.get(kind) if len(ids) > 1 else "LEAF"
    if _is_formula(concept) and op:
        return canonical_formula(concept) == (op, frozenset(ids))
    if _is_formula(label) and op:
        got = canonical_formula(label)
        return got is not None and got[0] == op and {normalize(x) for x in got[1]} == phrases
    return len(ids) == 1 and (concept in ids or normalize(label) in {normalize(i) for i in ids})


def _named(label, concept, ids: set[str], phrases: set[str]) -> tuple[set[str], set[str]]:
    """(what the label names, the truth) in one vocabulary: concept ids when the label has them."""
    if isinstance(concept, str) and concept:
        return positive_leaves(concept), ids
    return {normalize(x) for x in positive_leaves(str(label))}, phrases


def _credit(label, concept, ids: set[str], phrases: set[str]) -> float:
    named, true = _named(label, concept, ids, phrases)
    return len(named & true) / len(named | true) if true else float("nan")


def ground_truth_table(labels, truth, embedder=None, top: int = 5, clip_scorer=None):
    """One row per (unit, method) with a truth: unit, method, kind, truth, label, exact, top5,
    partial, cosine (NaN without an embedder), and clip_cosine when `clip_scorer` (an
    ImageTextScorer) is given. `labels`: columns unit, method, rank, label
    (+ optional concept); `truth`: columns unit, truth (+ optional kind / truth_kind, concepts /
    truth_concepts)."""
    import pandas as pd

    truth = truth.rename(columns={"truth_kind": "kind", "truth_concepts": "concepts"})
    truth = truth[truth["truth"].notna()]
    cols = [c for c in ("unit", "truth", "kind", "concepts") if c in truth.columns]
    merged = labels.merge(truth[cols], on="unit", how="inner")
    if "concept" not in merged.columns:
        merged["concept"] = None
    if "concepts" not in merged.columns:
        merged["concepts"] = None
    if "kind" not in merged.columns:
        merged["kind"] = "unknown"
    rows = []
    for (unit, method), g in merged.groupby(["unit", "method"], sort=True):
        g = g.sort_values("rank", kind="stable")
        first = g.iloc[0]
        hits = [_matches(r.label, r.concept, r.truth, r.concepts, r.kind) for r in g.itertuples()]
        ids, phrases = _phrases(first.concepts)
        named, true = _named(first.label, first.concept, ids, phrases)
        partial = hits[0] or normalize(first.label) in phrases or first.concept in ids \
            or bool(named & true)
        rows.append({"unit": unit, "method": method, "kind": first.kind, "truth": first.truth,
                     "label": first.label, "exact": bool(hits[0]), "top5": bool(any(hits[:top])),
                     "partial": bool(partial),
                     "concept_credit": _credit(first.label, first.concept, ids, phrases)})
    table = pd.DataFrame(rows, columns=["unit", "method", "kind", "truth", "label", "exact", "top5",
                                        "partial", "concept_credit"])
    table["cosine"] = label_cosines(table["label"], table["truth"], embedder) if len(table) else []
    if clip_scorer is not None:
        table["clip_cosine"] = (label_cosines(table["label"], table["truth"],
                                              ScorerTextEmbedder(clip_scorer)) if len(table) else [])
    return table


class ScorerTextEmbedder:
    """An ImageTextScorer's text tower as a text embedder (`embed(texts)` -> (n, d) tensor)."""

    def __init__(self, scorer):
        self.scorer = scorer

    def embed(self, texts):
        import torch

        with torch.no_grad():
            return self.scorer.encode_texts(list(texts)).float().cpu()


def label_cosines(a, b, embedder=None) -> np.ndarray:
    """Cosine of the text embeddings of a[i] and b[i] (NaN everywhere without an embedder)."""
    a, b = [str(x) for x in a], [str(x) for x in b]
    if embedder is None or not a:
        return np.full(len(a), np.nan)
    texts = sorted(set(a) | set(b))
    vecs = embedder.embed(texts).double().numpy()
    vecs = vecs / np.linalg.norm(vecs, axis=1, keepdims=True).clip(1e-12)
    pos = {t: i for i, t in enumerate(texts)}
    return np.array([float(vecs[pos[x]] @ vecs[pos[y]]) for x, y in zip(a, b)])


def summarize_ground_truth(table):
    """Per method and kind (and "all"): n_units and the mean of exact, top5, partial, cosine (and
    clip_cosine when the table has it)."""
    import pandas as pd

    metrics = ["exact", "top5", "partial", "concept_credit", "cosine"] + (
        ["clip_cosine"] if "clip_cosine" in table.columns else [])
    metrics = [m for m in metrics if m in table.columns]
    if not len(table):
        return pd.DataFrame(columns=["method", "kind", "n_units", *metrics])
    every = table.assign(kind="all")
    both = pd.concat([every, table], ignore_index=True)
    out = both.groupby(["method", "kind"], sort=True)[metrics].mean().reset_index()
    out.insert(2, "n_units", both.groupby(["method", "kind"], sort=True).size().to_numpy())
    return out


# -- the metric ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GroundTruthConfig(MetricConfig):
    embedder: Any = opt("zoo:minilm", "Text embedder for the label-truth cosine (None: no cosines).")
    top: int = opt(5, "Labels of each unit searched for the truth (the top5 metric).")
    clip_scorer: Any = opt(None, "Image-text scorer whose text space gives the clip_cosine metric "
                                 "(e.g. zoo:world-clip; 'scorer': the simulation scorer).")

    def validate(self) -> None:
        if self.top < 1:
            raise self.error("top", "must be at least 1")


def _has_truth(run, labels, config, shared) -> bool:
    """when the units have true labels"""
    return shared.truth is not None


@metric("ground_truth", GroundTruthConfig, applies=_has_truth, order=10)
def score(run, labels, config: GroundTruthConfig, shared) -> MetricResult:
    """exact, top5, partial, concept_credit, cosine (and clip_cosine) against the units' true
    labels."""
    import pandas as pd

    clip = shared.scorer(config.clip_scorer) if config.clip_scorer is not None else None
    gt = ground_truth_table(labels, shared.truth, shared.embedder(config.embedder), config.top,
                            clip_scorer=clip)
    s = summarize_ground_truth(gt)
    names = ("exact", "top5", "partial", "concept_credit", "cosine") + (
        ("clip_cosine",) if clip is not None else ())
    summary = pd.concat([pd.DataFrame({"metric": m, "method": s["method"], "other": None,
                                       "kind": s["kind"], "n_units": s["n_units"],
                                       "value": s[m]}) for m in names], ignore_index=True)
    return MetricResult(gt, summary)
