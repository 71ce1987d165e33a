"""The atlas index and its queries against a brute-force pandas reference over the run's tables."""

import re

import numpy as np
import pandas as pd
import pytest

from neuronatlas.atlas.index import content_key, ensure_index, tokens
from neuronatlas.atlas.queries import AtlasIndex, CompareQuery, UnitQuery
from neuronatlas.errors import UserError
from neuronatlas.run import write_evaluation, write_labels


def norm(s):
    return " ".join(str(s).lower().split())


def best_table(run):
    labels = run.labels()
    first = labels.sort_values(["unit", "method", "rank"]).groupby(["unit", "method"]).head(1)
    first = first[["unit", "method", "label", "score"]]
    first = first.merge(run.evaluation("simulation")[["unit", "method", "pearson"]], how="left")
    return first.merge(run.evaluation("ground_truth")[["unit", "method", "cosine"]], how="left")


def reference(run, q="", layer="", method="", metric="score", min=None, max=None, sort="unit",
              order="asc"):
    """The unit list the queries must return, computed by scanning the run's tables."""
    units = run.units.sort_values("index").reset_index(drop=True)  # one layer: uid = index
    labels, best = run.labels(), best_table(run)
    keep = units
    if method:
        keep = keep[keep.unit.isin(best[best.method == method].unit)]
    if layer:
        keep = keep[keep.layer == layer]
    words = re.findall(r"[a-z0-9]+", q.lower())
    if words:
        lab = labels if not method else labels[labels.method == method]
        docs = lab.groupby(["unit", "method"])["label"].agg(
            lambda s: re.findall(r"[a-z0-9]+", " ".join(s).lower()))
        hits = {u for (u, _m), toks in docs.items()
                if all(any(t.startswith(w) for t in toks) for w in words)}
        keep = keep[keep.unit.isin(hits)]
    value = None
    if method:
        value = best[best.method == method].set_index("unit")[metric]
        v = keep.unit.map(value)
        if min is not None:
            keep = keep[v >= min]
        if max is not None:
            keep = keep[keep.unit.map(value) <= max]
    if sort == "unit":
        out = keep.sort_values("index", ascending=order == "asc")
    else:
        col = keep.unit.map(best[best.method == method].set_index("unit")[sort]) \
            if sort in ("score", "pearson", "cosine") else keep[sort]
        keep = keep.assign(_k=col.to_numpy(), _null=col.isna().to_numpy())
        ordered = keep.sort_values("_k", ascending=order == "asc", kind="stable", na_position="last")
        # ties by unit order (index) within equal keys
        out = ordered.groupby("_k", sort=False, dropna=False, group_keys=False).apply(
            lambda g: g.sort_values("index")) if ordered["_k"].duplicated().any() else ordered
        out = pd.concat([out[~out._null], out[out._null].sort_values("index")])
    return list(out.unit)


QUERIES = [
    {},
    {"q": "circle"},
    {"q": "circ"},
    {"q": "striped circle"},
    {"q": "Star", "method": "netdissect"},
    {"q": "on the right"},
    {"layer": "units", "method": "clip-dissect", "min": 1.0, "max": 2.5},
    {"method": "netdissect", "metric": "pearson", "min": 0.3, "sort": "pearson", "order": "desc"},
    {"sort": "std", "order": "desc"},
    {"method": "clip-dissect", "sort": "cosine"},
    {"method": "netdissect", "sort": "score", "order": "desc", "q": "red"},
]


@pytest.fixture(scope="module")
def index(atlas_run):
    return AtlasIndex(ensure_index(atlas_run)[0])


@pytest.mark.parametrize("params", QUERIES, ids=lambda p: ",".join(f"{k}={v}" for k, v in p.items())
                         or "all")
def test_list_units_equals_brute_force(atlas_run, index, params):
    want = reference(atlas_run, **params)
    got = index.list_units(UnitQuery(**params, per_page=500))
    assert got["total"] == len(want)
    assert [r["unit"] for r in got["rows"]] == want
    # paging: 7 per page, concatenated, gives the same list with nothing repeated or lost
    pages, page = [], 1
    while True:
        res = index.list_units(UnitQuery(**params, per_page=7, page=page))
        pages += [r["unit"] for r in res["rows"]]
        if page >= res["pages"]:
            break
        page += 1
    assert pages == want


def test_search_says_which_labels_matched(atlas_run, index):
    res = index.list_units(UnitQuery(q="stri", method="netdissect", per_page=500))
    labels = atlas_run.labels("netdissect")
    for r in res["rows"]:
        own = labels[labels.unit == r["unit"]].sort_values("rank")
        want = [{"method": "netdissect", "rank": int(x.rank), "label": x.label}
                for x in own.itertuples() if "stri" in x.label]  # "striped" words only here
        assert r["matches"] == want and want


def test_rows_carry_every_methods_top_label(atlas_run, index):
    best = best_table(atlas_run).set_index(["unit", "method"])
    rows = index.list_units(UnitQuery(per_page=500))["rows"]
    assert len(rows) == len(atlas_run.units)
    for r in rows:
        for m, e in r["labels"].items():
            b = best.loc[(r["unit"], m)]
            assert e["label"] == b["label"] and e["score"] == pytest.approx(b["score"])
            assert e["pearson"] == pytest.approx(b["pearson"])


def test_unit_detail_and_agreement(atlas_run, index):
    labels = atlas_run.labels()
    for unit in ("units:0", "units:3", "units:50"):
        d = index.unit(unit)
        for m, entry in d["methods"].items():
            ref = labels[(labels.unit == unit) & (labels.method == m)].sort_values("rank")
            assert [x["label"] for x in entry["labels"]] == list(ref.label)
        (ag,) = d["agreement"]
        la = {norm(x) for x in labels[(labels.unit == unit) & (labels.method == ag["a"])].label}
        lb = {norm(x) for x in labels[(labels.unit == unit) & (labels.method == ag["b"])].label}
        assert ag["jaccard"] == pytest.approx(len(la & lb) / len(la | lb))
        assert ag["same_top1"] == (norm(d["methods"][ag["a"]]["label"])
                                   == norm(d["methods"][ag["b"]]["label"]))
    assert d["truth"] == atlas_run.units.set_index("unit").loc["units:50", "truth"]


def test_compare_matches_the_evaluation(atlas_run, index):
    ag = atlas_run.evaluation("agreement").iloc[0]
    res = index.compare(CompareQuery(a=ag["method"], b=ag["other"], per_page=500))
    assert res["n_units"] == ag["n_units"] and res["same"] == pytest.approx(ag["same_top1"])
    same = index.compare(CompareQuery(a=ag["method"], b=ag["other"], only="same", per_page=500))
    diff = index.compare(CompareQuery(a=ag["method"], b=ag["other"], only="different",
                                      per_page=500))
    assert same["total"] + diff["total"] == res["n_units"]
    assert all(norm(r["a"]["label"]) == norm(r["b"]["label"]) for r in same["rows"])
    assert all(norm(r["a"]["label"]) != norm(r["b"]["label"]) for r in diff["rows"])
    by_b = index.compare(CompareQuery(a=ag["method"], b=ag["other"], sort="b", order="desc"))
    scores = [r["b"]["score"] for r in by_b["rows"]]
    assert scores == sorted(scores, reverse=True)


def test_bad_queries_are_one_line_user_errors(index):
    with pytest.raises(UserError, match="needs a method"):
        UnitQuery(sort="pearson")
    with pytest.raises(UserError, match="needs a method"):
        UnitQuery(min=0.5)
    with pytest.raises(UserError, match="layer 'nope' is not in this run"):
        index.list_units(UnitQuery(layer="nope"))
    with pytest.raises(UserError, match="method 'maia' has no labels"):
        index.list_units(UnitQuery(method="maia"))
    with pytest.raises(UserError, match="page must be a number"):
        UnitQuery.from_params({"page": "two"})
    with pytest.raises(UserError, match="sort must be one of"):
        UnitQuery.from_params({"sort": "drop table units"})
    with pytest.raises(UserError, match="two different methods"):
        index.compare(CompareQuery(a="netdissect", b="netdissect"))
    # quotes and FTS operators in the search box are words, not syntax
    assert index.list_units(UnitQuery(q='"circle" OR NEAR(*')).get("total") is not None


def test_index_is_keyed_by_content(run_copy):
    path, rebuilt = ensure_index(run_copy)
    assert rebuilt and path == run_copy.path / "atlas" / "index.sqlite"
    assert ensure_index(run_copy) == (path, False)
    key = content_key(run_copy)
    labels = run_copy.labels("netdissect")
    labels.loc[(labels.unit == "units:5") & (labels["rank"] == 0), "label"] = "zebra crossing"
    write_labels(run_copy.path, "netdissect", labels, run_copy.label_config("netdissect"))
    assert content_key(run_copy) != key
    assert ensure_index(run_copy) == (path, True)
    hits = AtlasIndex(path).list_units(UnitQuery(q="zebra"))
    assert [r["unit"] for r in hits["rows"]] == ["units:5"]
    summary = run_copy.evaluation("summary")
    write_evaluation(run_copy.path, "summary", summary.iloc[:3])
    assert ensure_index(run_copy)[1]
    assert len(AtlasIndex(path).overview["evaluation"]["summary"]) == 3


def test_tokens_follow_sqlite_unicode61():
    assert tokens("Café-au_lait  STRIPED/2x") == ["cafe", "au", "lait", "striped", "2x"]
    assert np.array_equal(tokens(""), [])
