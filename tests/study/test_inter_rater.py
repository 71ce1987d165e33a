"""Agreement statistics against textbook values and an independent brute-force implementation."""

from itertools import permutations

import numpy as np
import pytest

from neuronatlas.study.inter_rater import (cohen_kappa, fisher_exact, krippendorff_alpha, pairwise,
                                         percent_agreement)

nan = np.nan
# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", the 4 observers x 12 units
# example with missing values; the paper gives alpha = .743 nominal, .815 ordinal, .849 interval,
# .797 ratio (unit 12 has a single value and is not pairable).
KRIPPENDORFF = [[1, 2, 3, 3, 2, 1, 4, 1, 2, nan, nan, nan],
                [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, nan, 3],
                [nan, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, nan],
                [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, nan]]


@pytest.mark.parametrize("metric, value", [("nominal", 0.743), ("ordinal", 0.815),
                                           ("interval", 0.849), ("ratio", 0.797)])
def test_krippendorff_alpha_on_the_papers_example(metric, value):
    assert krippendorff_alpha(KRIPPENDORFF, metric) == pytest.approx(value, abs=5e-4)
    assert krippendorff_alpha(KRIPPENDORFF, metric) == pytest.approx(
        brute_alpha(KRIPPENDORFF, metric), abs=1e-12)


def test_cohen_kappa_on_a_2x2_table():
    # 50 items: both yes 20, A yes / B no 5, A no / B yes 10, both no 15.
    # p_o = 35/50 = .7; p_e = .5 * .6 + .5 * .4 = .5; kappa = (.7 - .5) / (1 - .5) = .4
    a = ["y"] * 25 + ["n"] * 25
    b = ["y"] * 20 + ["n"] * 5 + ["y"] * 10 + ["n"] * 15
    assert percent_agreement(a, b) == pytest.approx(0.7)
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    assert cohen_kappa(a, a) == pytest.approx(1.0)


def test_weighted_kappa_by_hand():
    # 3 categories, 4 items: pairs (1,1) (1,2) (2,3) (3,3).
    # p = [[.25,.25,0],[0,0,.25],[0,0,.25]]; row marginals (.5,.25,.25), column (.25,.25,.5).
    # linear weights w = |i-j|/2: observed = .25*.5 + .25*.5 = .25;
    # expected = sum r_i c_j w_ij = .5*(.25*.5 + .5*1) + .25*(.25*.5 + .5*.5) + .25*(.25*1 + .25*.5)
    #          = .3125 + .09375 + .09375 = .5  -> kappa = 1 - .25/.5 = .5
    a, b = [1, 1, 2, 3], [1, 2, 3, 3]
    assert cohen_kappa(a, b, "linear", [1, 2, 3]) == pytest.approx(0.5)
    # quadratic w = ((i-j)/2)^2: observed = .25*.25*2 = .125; expected = .5*(.25*.25 + .5*1)
    #   + .25*(.25*.25 + .5*.25) + .25*(.25*1 + .25*.25) = .28125 + .046875 + .078125 = .40625
    assert cohen_kappa(a, b, "quadratic", [1, 2, 3]) == pytest.approx(1 - 0.125 / 0.40625)
    # distances come from the whole scale: with answers 1, 2, 5 only, 2-vs-5 is 3 steps, not 1
    x, y = [1, 2, 2, 5, 1, 5], [2, 2, 5, 5, 2, 2]
    assert cohen_kappa(x, y, "linear", [1, 2, 3, 4, 5]) == pytest.approx(
        brute_kappa(x, y, "linear", [1, 2, 3, 4, 5]))
    assert cohen_kappa(x, y, "linear", [1, 2, 3, 4, 5]) != pytest.approx(
        cohen_kappa(x, y, "linear"))


def test_missing_answers_are_skipped_pairwise():
    a = [1, 0, None, 1, nan, 0]
    b = [1, 1, 1, None, 0, 0]
    assert percent_agreement(a, b) == pytest.approx(2 / 3)
    assert cohen_kappa(a, b) == pytest.approx(brute_kappa([1, 0, 0], [1, 1, 0]))
    assert np.isnan(percent_agreement([None], [1]))
    assert np.isnan(cohen_kappa([1, 1], [1, 1]))  # no variation: chance agreement is 1


def test_pairwise_table():
    m = np.array([[1, 0, 1, None], [1, 0, 0, 1], [None, 0, 1, 1]], dtype=object)
    t = pairwise(m, ["a", "b", "c"])
    assert list(zip(t.rater_a, t.rater_b)) == [("a", "b"), ("a", "c"), ("b", "c")]
    assert list(t.n) == [3, 2, 3]
    assert t.percent.tolist() == pytest.approx([2 / 3, 1.0, 2 / 3])


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("metric", ["nominal", "ordinal", "interval", "ratio"])
def test_alpha_matches_brute_force_on_random_data(seed, metric):
    rng = np.random.default_rng(seed)
    data = rng.integers(1, 6, (rng.integers(2, 5), rng.integers(3, 15))).astype(float)
    data[rng.random(data.shape) < 0.3] = nan
    got, want = krippendorff_alpha(data, metric), brute_alpha(data, metric)
    assert (np.isnan(got) and np.isnan(want)) or got == pytest.approx(want, abs=1e-10)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("weights", [None, "linear", "quadratic"])
def test_kappa_matches_brute_force_on_random_data(seed, weights):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 30))
    a = rng.integers(1, 6, n)
    b = np.where(rng.random(n) < 0.5, a, rng.integers(1, 6, n))
    got = cohen_kappa(list(a), list(b), weights, [1, 2, 3, 4, 5])
    assert got == pytest.approx(brute_kappa(a, b, weights, [1, 2, 3, 4, 5]), abs=1e-10)


def test_two_raters_alpha_is_close_to_kappa_for_large_n():
    # For two raters without missing data, nominal alpha = Scott's pi corrected by n/(n-1);
    # with equal marginals pi equals kappa.
    rng = np.random.default_rng(0)
    a = rng.integers(0, 2, 4000)
    b = np.where(rng.random(4000) < 0.8, a, 1 - a)
    assert krippendorff_alpha([a, b]) == pytest.approx(cohen_kappa(a, b), abs=0.01)


# -- independent implementations: loops over pairable values, straight from the definitions ---------
def brute_alpha(data, metric):
    """1 - D_o / D_e, where D_o averages delta^2 over all ordered pairs of values within a unit (each
    unit weighted 1/(m_u - 1)) and D_e over all ordered pairs of pairable values anywhere."""
    data = np.asarray(data, dtype=float)
    units = [[v for v in col if not np.isnan(v)] for col in data.T]
    units = [u for u in units if len(u) >= 2]
    values = [v for u in units for v in u]
    n = len(values)
    freq = {v: values.count(v) for v in set(values)}

    def delta2(c, k):
        if metric == "nominal":
            return float(c != k)
        if metric == "interval":
            return (c - k) ** 2
        if metric == "ratio":
            return ((c - k) / (c + k)) ** 2 if c + k else 0.0
        lo, hi = min(c, k), max(c, k)  # ordinal
        between = sum(f for g, f in freq.items() if lo <= g <= hi)
        return (between - (freq[c] + freq[k]) / 2) ** 2

    d_o = sum(delta2(u[i], u[j]) / (len(u) - 1) for u in units
              for i, j in permutations(range(len(u)), 2)) / n
    d_e = sum(delta2(values[i], values[j]) for i, j in permutations(range(n), 2)) / (n * (n - 1))
    return float("nan") if d_e == 0 else 1 - d_o / d_e


def brute_kappa(a, b, weights=None, cats=None):
    cats = cats or sorted(set(a) | set(b))
    n, k = len(a), len(cats)

    def w(x, y):
        i, j = cats.index(x), cats.index(y)
        return {None: float(i != j), "linear": abs(i - j) / (k - 1),
                "quadratic": ((i - j) / (k - 1)) ** 2}[weights]

    observed = sum(w(x, y) for x, y in zip(a, b)) / n
    expected = sum(w(x, y) for x in a for y in b) / (n * n)  # independent marginals
    return 1 - observed / expected


def test_fisher_exact_by_hand_and_against_scipy():
    from math import comb

    # [[3, 1], [1, 3]]: margins 4/4 of 8; P(x) = C(4,x) C(4,4-x) / C(8,4) = 1,16,36,16,1 over 70;
    # tables no more likely than x=3 (16/70): x = 0, 1, 3, 4 -> 34/70
    assert fisher_exact([[3, 1], [1, 3]]) == pytest.approx(34 / 70)
    assert comb(8, 4) == 70
    assert fisher_exact([[2, 2], [2, 2]]) == pytest.approx(1.0)
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    for _ in range(30):
        t = rng.integers(0, 15, (2, 2))
        assert fisher_exact(t) == pytest.approx(stats.fisher_exact(t).pvalue, rel=1e-9)
