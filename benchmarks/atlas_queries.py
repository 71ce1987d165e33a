"""Atlas queries at scale: the SQLite index (FTS5 + indexes + LIMIT/OFFSET) against a naive pandas
scan of the run's tables, on a synthetic run with 100k units, in one process. Prints JSON.

    .venv/bin/python benchmarks/atlas_queries.py [--units 100000] [--methods 2] [--top 5] [--repeat 5]

The run is written with neuronatlas.run's writers (run.json, units.parquet, labels/METHOD.parquet,
evaluation/simulation.parquet): 4 layers, `top` ranked labels per unit and method drawn from a
5,000-word vocabulary (Zipf-like), random scores and simulation correlations.

- naive: the tables in pandas DataFrames, already in memory (the best case for pandas; the cold
  read is timed separately); each query scans them: regex word-prefix match over every label,
  boolean filters, merges, a full sort, then the page slice;
- index: `neuronatlas.atlas.queries.AtlasIndex` on the index `ensure_index` built.
Both must return the same units in the same order (checked); reported per query: median ms of
`repeat` runs and the ratio naive / index.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from neuronatlas import run as rundir
from neuronatlas.atlas.index import ensure_index
from neuronatlas.atlas.queries import AtlasIndex, CompareQuery, UnitQuery


def vocabulary(n: int = 5000) -> list[str]:
    try:
        from wordfreq import top_n_list

        words = [w for w in top_n_list("en", 3 * n) if w.isalpha() and len(w) > 2][:n]
        if len(words) == n:
            return words
    except ImportError:
        pass
    rng = np.random.default_rng(1)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    return sorted({"".join(rng.choice(letters, rng.integers(3, 9))) for _ in range(2 * n)})[:n]


def make_run(path: Path, n_units: int, n_methods: int, top: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    layers = [f"blocks.{i}.mlp.fc1" for i in range(4)]
    per = n_units // len(layers)
    meta = {"format": rundir.FORMAT, "format_version": 1, "status": "complete",
            "key": {"model": {"spec": "synthetic:benchmark", "weights": "none", "seed": 0},
                    "probe": {"kind": "none", "fingerprint": "0", "count": 0}, "k": 5},
            "model": {"spec": "synthetic:benchmark", "family": "none"},
            "probe": {"spec": "none", "kind": "none", "n_images": 0},
            "layers": [{"name": l, "n_units": per, "pooling": "none", "shape": [per],
                        "layout": {"kind": "vector", "grid": None}} for l in layers],
            "summary": {"n_images": 0, "n_ok": 0, "n_unreadable": 0, "n_duplicate": 0}}
    path.mkdir(parents=True)
    rundir.write_json(path / "run.json", meta)
    units = pd.DataFrame({"unit": [f"{l}:{i}" for l in layers for i in range(per)],
                          "layer": np.repeat(layers, per), "index": np.tile(np.arange(per), 4),
                          "count": 1000, "mean": rng.normal(size=per * 4),
                          "std": rng.gamma(2.0, 1.0, per * 4), "min": -1.0, "max": 5.0,
                          "frac_positive": 0.5, "q01": -1.0, "q50": 0.0, "q99": 4.0})
    rundir.write_table(path, "units", units)
    vocab = np.array(vocabulary())
    p = 1.0 / np.arange(1, len(vocab) + 1)
    p /= p.sum()
    sims = []
    for m in range(n_methods):
        name = f"method{m}"
        words = rng.choice(len(vocab), size=(len(units), top, 2), p=p)
        label = np.where(rng.random((len(units), top)) < 0.3,
                         np.char.add(np.char.add(vocab[words[..., 0]], " "), vocab[words[..., 1]]),
                         vocab[words[..., 0]])
        df = pd.DataFrame({"unit": np.repeat(units.unit.to_numpy(), top), "method": name,
                           "rank": np.tile(np.arange(top), len(units)),
                           "label": label.ravel(),
                           "score": np.sort(rng.random((len(units), top)), 1)[:, ::-1].ravel()})
        rundir.write_labels(path, name, df, {"method": name})
        sims.append(pd.DataFrame({"unit": units.unit, "method": name, "label": label[:, 0],
                                  "pearson": rng.uniform(-0.2, 0.9, len(units)), "n_images": 500}))
    rundir.write_evaluation(path, "simulation", pd.concat(sims, ignore_index=True))


class Naive:
    """The same queries as scans over DataFrames."""

    def __init__(self, path: Path):
        t = time.perf_counter()
        run = rundir.open_run(path)
        self.units = run.units.reset_index(drop=True)
        self.units["uid"] = np.arange(len(self.units))
        self.labels = run.labels()
        self.sim = run.evaluation("simulation")
        self.load_s = time.perf_counter() - t

    def best(self, method):
        lab = self.labels[(self.labels.method == method) & (self.labels["rank"] == 0)]
        return lab.merge(self.sim[self.sim.method == method][["unit", "pearson"]], on="unit",
                         how="left").set_index("unit")

    def search(self, text, method=None):
        lab = self.labels if method is None else self.labels[self.labels.method == method]
        words = re.findall(r"[a-z0-9]+", text.lower())
        hit = None
        for w in words:  # each word a prefix of a word of the same (unit, method)'s labels
            m = lab.label.str.contains(rf"\b{re.escape(w)}", regex=True)
            keys = set(zip(lab.unit[m], lab.method[m]))
            hit = keys if hit is None else hit & keys
        return {u for u, _ in hit}

    def units_query(self, q="", layer="", method="", min=None, max=None, sort="unit",
                    order="asc", page=1, per_page=50, metric="score"):
        df = self.units
        if method:
            best = self.best(method)
            df = df[df.unit.isin(best.index)]
        if layer:
            df = df[df.layer == layer]
        if q:
            df = df[df.unit.isin(self.search(q, method or None))]
        if min is not None:
            df = df[df.unit.map(best[metric]) >= min]
        if max is not None:
            df = df[df.unit.map(best[metric]) <= max]
        if sort == "unit":
            df = df.sort_values("uid", ascending=order == "asc")
        else:
            key = df.unit.map(best[sort]) if sort in ("score", "pearson") else df[sort]
            df = df.assign(_k=key).sort_values(["_k", "uid"], ascending=[order == "asc", True],
                                               na_position="last")
        return len(df), list(df.unit.iloc[(page - 1) * per_page:page * per_page])

    def unit(self, unit):
        return self.labels[self.labels.unit == unit].sort_values(["method", "rank"])

    def compare_different(self, a, b, page=1, per_page=50):
        ba, bb = self.best(a), self.best(b)
        both = self.units[self.units.unit.isin(ba.index) & self.units.unit.isin(bb.index)]
        norm = lambda s: s.str.lower().str.split().str.join(" ")  # noqa: E731
        diff = norm(both.unit.map(ba.label)) != norm(both.unit.map(bb.label))
        both = both[diff.to_numpy()].sort_values("uid")
        return len(both), list(both.unit.iloc[(page - 1) * per_page:page * per_page])


def timed(fn, repeat):
    out, times = None, []
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return out, 1000 * statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--units", type=int, default=100_000)
    ap.add_argument("--methods", type=int, default=2)
    ap.add_argument("--top", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "run"
        make_run(path, args.units, args.methods, args.top)
        t = time.perf_counter()
        index_path, _ = ensure_index(path)
        build_s = time.perf_counter() - t
        t = time.perf_counter()
        ensure_index(path)
        key_check_s = time.perf_counter() - t
        t = time.perf_counter()
        ix = AtlasIndex(index_path)
        open_s = time.perf_counter() - t
        naive = Naive(path)
        vocab = vocabulary()
        common, rare = vocab[3], vocab[2000]
        layer = ix.layers[1]
        n_pages = -(-args.units // 50)
        cases = {
            "search common word": ({"q": common}, {}),
            "search rare word": ({"q": rare}, {}),
            "search 2 words + method": ({"q": f"{common[:3]} {vocab[7]}", "method": "method0"}, {}),
            "layer + method + score range, sort score desc": (
                {"layer": layer, "method": "method1", "min": 0.5, "max": 0.9, "sort": "score",
                 "order": "desc"}, {}),
            "sort pearson desc, page 100": ({"method": "method0", "sort": "pearson",
                                             "order": "desc", "page": 100}, {}),
            "sort std, last page": ({"sort": "std", "page": n_pages}, {}),
            "page 1, no filter": ({}, {}),
        }
        results = []
        for name, (params, _) in cases.items():
            (py), ms = timed(lambda: ix.list_units(UnitQuery(**params)), args.repeat)
            (n_naive, naive_units), naive_ms = timed(lambda: naive.units_query(**params),
                                                      args.repeat)
            got = [r["unit"] for r in py["rows"]]
            assert py["total"] == n_naive and got == naive_units, (name, py["total"], n_naive)
            results.append({"query": name, "matches": py["total"], "index_ms": round(ms, 2),
                            "naive_ms": round(naive_ms, 1), "ratio": round(naive_ms / ms, 1)})
        unit = f"{layer}:1234"
        d, ms = timed(lambda: ix.unit(unit), args.repeat)
        ref, naive_ms = timed(lambda: naive.unit(unit), args.repeat)
        assert sum(len(m["labels"]) for m in d["methods"].values()) == len(ref)
        results.append({"query": "one unit's labels", "matches": 1, "index_ms": round(ms, 2),
                        "naive_ms": round(naive_ms, 1), "ratio": round(naive_ms / ms, 1)})
        cmp, ms = timed(lambda: ix.compare(CompareQuery(a="method0", b="method1",
                                                        only="different")), args.repeat)
        (n_naive, naive_units), naive_ms = timed(lambda: naive.compare_different(
            "method0", "method1"), args.repeat)
        assert cmp["total"] == n_naive and [r["unit"] for r in cmp["rows"]] == naive_units
        results.append({"query": "compare: different top labels, page 1",
                        "matches": cmp["total"], "index_ms": round(ms, 2),
                        "naive_ms": round(naive_ms, 1), "ratio": round(naive_ms / ms, 1)})
        print(json.dumps({
            "units": args.units, "methods": args.methods, "labels_per_unit_method": args.top,
            "label_rows": len(naive.labels),
            "index_build_s": round(build_s, 2), "index_mb": round(index_path.stat().st_size / 1e6, 1),
            "index_up_to_date_check_s": round(key_check_s, 3), "index_open_s": round(open_s, 3),
            "naive_load_s": round(naive.load_s, 2), "queries": results}, indent=2))


if __name__ == "__main__":
    main()
