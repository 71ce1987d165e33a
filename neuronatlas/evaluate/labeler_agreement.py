"""Agreement between two labelers on the same units: the fraction of units given the same top-1 label
(lower-cased, spaces collapsed) and the mean text-embedding cosine of their top-1 labels."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np

from ..config import Any, opt
from .base import MetricConfig, MetricResult, metric
from .ground_truth import label_cosines, normalize


def top1(labels):
    """(unit, method) -> the rank-0 label: columns unit, method, label."""
    return (labels.sort_values(["unit", "method", "rank"], kind="stable")
            .groupby(["unit", "method"], sort=True).head(1)[["unit", "method", "label"]])


def agreement_table(labels, embedder=None):
    """One row per pair of methods: method, other, n_units (labelled by both), same_top1, cosine."""
    import pandas as pd

    first = top1(labels)
    methods = sorted(first["method"].unique())
    rows = []
    for a, b in combinations(methods, 2):
        la = first[first.method == a][["unit", "label"]]
        lb = first[first.method == b][["unit", "label"]]
        both = la.merge(lb, on="unit", suffixes=("_a", "_b"))
        same = [normalize(x) == normalize(y) for x, y in zip(both.label_a, both.label_b)]
        cos = label_cosines(both.label_a, both.label_b, embedder)
        rows.append({"method": a, "other": b, "n_units": len(both),
                     "same_top1": float(np.mean(same)) if same else np.nan,
                     "cosine": float(np.mean(cos)) if len(cos) else np.nan})
    return pd.DataFrame(rows, columns=["method", "other", "n_units", "same_top1", "cosine"])


# -- the metric ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AgreementConfig(MetricConfig):
    embedder: Any = opt("zoo:minilm", "Text embedder for the cosine of two methods' top labels "
                                      "(None: no cosines).")


def _two_methods(run, labels, config, shared) -> bool:
    """with labels of two methods or more"""
    return labels["method"].nunique() > 1


@metric("agreement", AgreementConfig, applies=_two_methods, order=40)
def score(run, labels, config: AgreementConfig, shared) -> MetricResult:
    """For every pair of methods: the same top-1 label, and the cosine of the two."""
    import pandas as pd

    ag = agreement_table(labels, shared.embedder(config.embedder))
    parts = [pd.DataFrame({"metric": name, "method": ag["method"], "other": ag["other"],
                           "kind": "all", "n_units": ag["n_units"], "value": ag[col]})
             for name, col in (("agreement_same_top1", "same_top1"), ("agreement_cosine", "cosine"))]
    return MetricResult(ag, pd.concat(parts, ignore_index=True))
