"""Inter-rater agreement: % agreement, Cohen's kappa (plain and weighted), Krippendorff's alpha.

Conventions: missing answers are NaN / None; a pair of raters is compared on the items both
answered; Krippendorff's alpha uses every item with at least two answers (Krippendorff 2011,
"Computing Krippendorff's Alpha-Reliability"). A statistic that is undefined (no pairs, or no
variation at all so chance disagreement is 0) is NaN, never a made-up 1 or 0.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np

METRICS = ("nominal", "ordinal", "interval", "ratio")


def _pairs(a, b) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, dtype=object), np.asarray(b, dtype=object)
    if a.shape != b.shape:
        raise ValueError("both raters need one answer (or None) per item")
    keep = np.array([not _missing(x) and not _missing(y) for x, y in zip(a, b)], dtype=bool)
    return a[keep], b[keep]


def _missing(x) -> bool:
    import pandas as pd

    try:
        return bool(pd.isna(x))  # None, NaN, pd.NA
    except (TypeError, ValueError):
        return False


def percent_agreement(a, b) -> float:
    """Share of items (both answered) on which the two raters give the same answer."""
    a, b = _pairs(a, b)
    return float(np.mean(a == b)) if len(a) else float("nan")


def cohen_kappa(a, b, weights: str | None = None, categories=None) -> float:
    """Cohen's kappa of two raters. weights None (nominal), "linear" or "quadratic" (weighted
    kappa; the distance between categories is their distance in `categories`, which for ratings
    should be the whole scale, e.g. [1, 2, 3, 4, 5], so unused levels still count)."""
    a, b = _pairs(a, b)
    if not len(a):
        return float("nan")
    cats = list(categories) if categories is not None else sorted(set(a) | set(b))
    pos = {c: i for i, c in enumerate(cats)}
    if any(x not in pos for x in np.concatenate([a, b])):
        raise ValueError("an answer is not in `categories`")
    k = len(cats)
    table = np.zeros((k, k))
    for x, y in zip(a, b):
        table[pos[x], pos[y]] += 1
    p = table / table.sum()
    expected = np.outer(p.sum(1), p.sum(0))
    i, j = np.indices((k, k))
    if weights is None:
        w = (i != j).astype(float)
    elif weights == "linear":
        w = np.abs(i - j) / max(k - 1, 1)
    elif weights == "quadratic":
        w = ((i - j) / max(k - 1, 1)) ** 2
    else:
        raise ValueError(f"weights must be None, linear or quadratic (got {weights})")
    chance = float((w * expected).sum())
    return float("nan") if chance == 0 else 1.0 - float((w * p).sum()) / chance


def coincidences(data) -> tuple[np.ndarray, np.ndarray]:
    """(values, coincidence matrix o_ck) of a raters x items matrix with NaN for missing."""
    data = np.asarray(data, dtype=float)
    values = np.unique(data[~np.isnan(data)])
    counts = np.stack([(data == v).sum(0) for v in values], axis=1) if len(values) else \
        np.zeros((data.shape[1], 0))  # (items, values)
    m = counts.sum(1)
    counts = counts[m >= 2]  # items with one answer are not pairable
    m = m[m >= 2]
    o = np.einsum("uc,uk,u->ck", counts, counts, 1.0 / (m - 1))
    o -= np.diag((counts / (m - 1)[:, None]).sum(0))  # a value is not paired with itself
    return values, o


def _delta2(values: np.ndarray, n_c: np.ndarray, metric: str) -> np.ndarray:
    c, k = np.meshgrid(values, values, indexing="ij")
    if metric == "nominal":
        return (c != k).astype(float)
    if metric == "interval":
        return (c - k) ** 2
    if metric == "ratio":
        s = c + k
        return np.where(s == 0, 0.0, ((c - k) / np.where(s == 0, 1, s)) ** 2)
    if metric == "ordinal":
        cum = np.concatenate([[0.0], np.cumsum(n_c)])  # cum[i] = sum of n_g for g < i
        i, j = np.meshgrid(np.arange(len(values)), np.arange(len(values)), indexing="ij")
        lo, hi = np.minimum(i, j), np.maximum(i, j)
        between = cum[hi + 1] - cum[lo]  # sum of n_g for lo <= g <= hi
        return (between - (n_c[i] + n_c[j]) / 2) ** 2
    raise ValueError(f"metric must be one of {', '.join(METRICS)} (got {metric})")


def krippendorff_alpha(data, metric: str = "nominal") -> float:
    """Krippendorff's alpha of a raters x items matrix (NaN = missing). Nominal answers that are not
    numbers (strings) are coded to integers first."""
    data = _numeric(data)
    values, o = coincidences(data)
    n_c = o.sum(1)
    n = n_c.sum()
    if n < 2:
        return float("nan")
    d2 = _delta2(values, n_c, metric)
    observed = (o * d2).sum() / n
    expected = (np.outer(n_c, n_c) * d2).sum() / (n * (n - 1))
    return float("nan") if expected == 0 else float(1.0 - observed / expected)


def _numeric(data) -> np.ndarray:
    arr = np.asarray(data, dtype=object)
    try:
        return np.array([[np.nan if _missing(x) else float(x) for x in row] for row in arr])
    except (TypeError, ValueError):  # strings: code them
        codes: dict = {}
        return np.array([[np.nan if _missing(x) else codes.setdefault(x, len(codes))
                          for x in row] for row in arr], dtype=float)


def pairwise(matrix, raters: list[str], weights: str | None = None, categories=None):
    """One row per pair of raters: rater_a, rater_b, n (items both answered), percent, kappa."""
    import pandas as pd

    rows = []
    for (i, a), (j, b) in combinations(enumerate(raters), 2):
        x, y = _pairs(matrix[i], matrix[j])
        rows.append({"rater_a": a, "rater_b": b, "n": len(x),
                     "percent": percent_agreement(matrix[i], matrix[j]),
                     "kappa": cohen_kappa(matrix[i], matrix[j], weights, categories)
                     if len(x) else float("nan")})
    return pd.DataFrame(rows, columns=["rater_a", "rater_b", "n", "percent", "kappa"])


def fisher_exact(table) -> float:
    """Two-sided p of Fisher's exact test on a 2x2 table [[a, b], [c, d]]: the probability, with
    the margins fixed, of a table no more likely than the observed one (scipy's convention)."""
    from math import comb

    (a, b), (c, d) = [[int(v) for v in row] for row in table]
    row1, col1, n = a + b, a + c, a + b + c + d
    if n == 0:
        return float("nan")

    def p(x):  # hypergeometric probability of top-left cell x
        return comb(col1, x) * comb(n - col1, row1 - x) / comb(n, row1)

    observed = p(a)
    lo, hi = max(0, row1 + col1 - n), min(row1, col1)
    return float(min(1.0, sum(q for q in map(p, range(lo, hi + 1)) if q <= observed * (1 + 1e-7))))
