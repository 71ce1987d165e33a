"""The atlas index: one SQLite file with the run's units, labels and scores, and a full-text index
over the labels, so lists of 100k units are searched, filtered, sorted and paged by the database.

    RUN/atlas/index.sqlite     (or ~/.cache/neuronatlas/atlas/RUNHASH/ when the run is read-only)

It is keyed by the content of the tables it is built from (`Run.table_files`): relabelling or
re-evaluating the run changes the key and the next open rebuilds it; nothing stale is served.

Tables: units (one row per unit, `uid` = position in layer order), labels (every ranked label),
best (one row per unit and method: the rank-0 label with its score, simulation pearson and
ground-truth metrics), pairs (per pair of methods a < b and unit: same top label), docs
(contentless FTS5: one document per unit and method = all that method's labels, rowid = uid *
n_methods + method position), meta (key, overview JSON).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import sqlite3
import unicodedata
from itertools import groupby
from pathlib import Path

import numpy as np

from ..run import Run, atlas_dir, open_run

INDEX_VERSION = 4
UNIT_STATS = ("count", "mean", "std", "min", "max", "frac_positive", "q01", "q50", "q99")


def content_key(run: Run) -> str:
    h = hashlib.blake2b(f"atlas-index-{INDEX_VERSION}".encode(), digest_size=16)
    for path in run.table_files():
        h.update(str(path.relative_to(run.path)).encode() + b"\0")
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def normalize(text) -> str:
    """Lower-case and collapse spaces (the same rule as evaluate's exact match)."""
    return " ".join(str(text).lower().split())


def tokens(text: str) -> list[str]:
    """Words as SQLite's unicode61 tokenizer sees them: letters and digits, lower-cased, without
    diacritics. The static export's JavaScript search uses the same rule."""
    text = unicodedata.normalize("NFD", str(text).lower())
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    return re.findall(r"[^\W_]+", text)


def _num(v):
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) or math.isinf(f) else f


def index_path(run: Run) -> Path:
    """RUN/atlas/index.sqlite, or a per-user cache when the run directory cannot be written."""
    d = atlas_dir(run.path)
    try:
        d.mkdir(parents=True, exist_ok=True)
        probe = d / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
        return d / "index.sqlite"
    except OSError:
        digest = hashlib.blake2b(str(run.path.resolve()).encode(), digest_size=8).hexdigest()
        cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
        d = cache / "neuronatlas" / "atlas" / digest
        d.mkdir(parents=True, exist_ok=True)
        return d / "index.sqlite"


def _stored_key(path: Path) -> str | None:
    if not path.exists():
        return None
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            row = con.execute("SELECT value FROM meta WHERE key = 'content_key'").fetchone()
        finally:
            con.close()
        return row[0] if row else None
    except sqlite3.Error:
        return None


def ensure_index(run: Run | str | Path, path: Path | None = None) -> tuple[Path, bool]:
    """The index of `run`, built when missing or stale. Returns (path, rebuilt)."""
    run = open_run(run) if not isinstance(run, Run) else run
    path = Path(path) if path is not None else index_path(run)
    key = content_key(run)
    if _stored_key(path) == key:
        return path, False
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        tmp.unlink()
    build_index(run, tmp, key)
    os.replace(tmp, path)
    return path, True


SCHEMA = """
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE units(uid INTEGER PRIMARY KEY, unit TEXT NOT NULL UNIQUE, layer TEXT NOT NULL,
    idx INTEGER NOT NULL, count INTEGER, mean REAL, std REAL, min REAL, max REAL,
    frac_positive REAL, q01 REAL, q50 REAL, q99 REAL, truth TEXT, truth_kind TEXT,
    truth_concepts TEXT);
CREATE TABLE labels(uid INTEGER NOT NULL, method TEXT NOT NULL, rank INTEGER, label TEXT,
    score REAL, extras TEXT);
CREATE TABLE best(uid INTEGER NOT NULL, method TEXT NOT NULL, layer TEXT, label TEXT, norm TEXT,
    score REAL, pearson REAL, exact INTEGER, top5 INTEGER, cosine REAL, PRIMARY KEY(method, uid));
CREATE TABLE methods(pos INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE pairs(a TEXT NOT NULL, b TEXT NOT NULL, uid INTEGER NOT NULL, layer TEXT,
    same INTEGER, PRIMARY KEY(a, b, uid)) WITHOUT ROWID;
CREATE VIRTUAL TABLE docs USING fts5(text, content = '', detail = none, prefix = '2 3',
    tokenize = 'unicode61 remove_diacritics 2');
"""

INDEXES = """
CREATE INDEX units_layer ON units(layer, uid);
CREATE INDEX labels_uid ON labels(uid, method, rank);
CREATE INDEX best_uid ON best(uid);
CREATE INDEX best_layer ON best(method, layer, uid);
CREATE INDEX pairs_same ON pairs(a, b, same, uid);
CREATE INDEX pairs_layer ON pairs(a, b, layer, same);
""" + "".join(  # both directions, ties by unit order: ORDER BY col [DESC], uid walks an index
    f"CREATE INDEX units_{c}{n} ON units({c}{d}, uid);\n"
    for c in ("std", "mean", "max") for n, d in (("", ""), ("_desc", " DESC"))) + "".join(
    f"CREATE INDEX best_{c}{n} ON best(method, {c}{d}, uid, layer);\n"  # covering: no lookups
    for c in ("score", "pearson", "cosine") for n, d in (("", ""), ("_desc", " DESC"))) + "".join(
    f"CREATE INDEX best_layer_{c} ON best(method, layer, {c}, uid);\n"  # a layer + score range
    for c in ("score", "pearson", "cosine"))


def _nums(series) -> list:
    """A column as Python floats, NaN / inf as None (SQL NULL)."""
    import pandas as pd

    v = np.asarray(pd.to_numeric(series, errors="coerce"), dtype=np.float64)
    return [x if math.isfinite(x) else None for x in v.tolist()]


def _texts(series) -> list:
    return [None if x is None or (isinstance(x, float) and math.isnan(x)) else str(x)
            for x in series.astype(object).tolist()]


def _flags(series) -> list:
    v = series.astype(object).tolist()
    return [None if x is None or (isinstance(x, float) and math.isnan(x)) else int(bool(x))
            for x in v]


def build_index(run: Run, path: Path, key: str) -> None:
    con = sqlite3.connect(path)
    try:
        con.executescript("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;" + SCHEMA)
        units = run.units.copy()
        order = {name: i for i, name in enumerate(run.layers)}
        units["_order"] = units["layer"].map(order)
        units = units.sort_values(["_order", "index"], kind="stable").reset_index(drop=True)
        uid = {u: i for i, u in enumerate(units["unit"])}
        for c in ("truth", "truth_kind", "truth_concepts", *UNIT_STATS):
            if c not in units.columns:
                units[c] = None
        columns = [list(range(len(units))), _texts(units["unit"]), _texts(units["layer"]),
                   units["index"].astype("int64").tolist(),
                   *[_nums(units[c]) for c in UNIT_STATS],
                   *[_texts(units[c]) for c in ("truth", "truth_kind", "truth_concepts")]]
        con.executemany(f"INSERT INTO units VALUES ({','.join('?' * 16)})", zip(*columns))

        labels = run.labels()
        labels = labels[labels["unit"].isin(uid)]
        labels = labels.assign(uid=labels["unit"].map(uid).astype("int64")).sort_values(
            ["uid", "method", "rank"], kind="stable").reset_index(drop=True)
        extra_cols = [c for c in labels.columns if c not in ("unit", "method", "rank", "label",
                                                             "score", "uid")]
        extras = labels[extra_cols].to_json(orient="records", lines=True).splitlines() \
            if extra_cols and len(labels) else [None] * len(labels)
        lab_uid, lab_method = labels["uid"].tolist(), _texts(labels["method"])
        lab_label = _texts(labels["label"])
        con.executemany("INSERT INTO labels VALUES (?,?,?,?,?,?)", zip(
            lab_uid, lab_method, labels["rank"].astype("int64").tolist(), lab_label,
            _nums(labels["score"]), extras))
        methods = run.label_methods()
        con.executemany("INSERT INTO methods VALUES (?,?)", enumerate(methods))
        _fill_best(con, run, labels, units["layer"].tolist())
        con.execute("INSERT INTO pairs SELECT a.method, b.method, a.uid, u.layer, a.norm = b.norm "
                    "FROM best a JOIN best b ON b.uid = a.uid AND a.method < b.method "
                    "JOIN units u ON u.uid = a.uid")
        pos, n_methods = {m: i for i, m in enumerate(methods)}, max(1, len(methods))
        con.executemany("INSERT INTO docs(rowid, text) VALUES (?,?)", (
            (u * n_methods + pos[m], " | ".join(label for _, _, label in group))
            for (u, m), group in groupby(zip(lab_uid, lab_method, lab_label),
                                         key=lambda t: (t[0], t[1]))))
        con.executescript(INDEXES)
        meta = {"content_key": key, "overview": json.dumps(_overview(con, run), default=_json)}
        con.executemany("INSERT INTO meta VALUES (?,?)", meta.items())
        con.commit()
        con.execute("ANALYZE")
    finally:
        con.close()


def _fill_best(con, run: Run, labels, layer_of: list) -> None:
    """One row per (unit, method): its rank-0 label with the method's score and the evaluation's
    per-unit scores. `labels` is sorted by uid, method, rank."""
    if not len(labels):
        return
    first = labels.drop_duplicates(["uid", "method"])[["uid", "unit", "method", "label", "score"]]
    names = run.evaluation_names()
    if "simulation" in names:
        sim = run.evaluation("simulation")[["unit", "method", "pearson"]]
        first = first.merge(sim, on=["unit", "method"], how="left")
    if "ground_truth" in names:
        gt = run.evaluation("ground_truth")
        gt = gt[[c for c in ("unit", "method", "exact", "top5", "cosine") if c in gt.columns]]
        first = first.merge(gt, on=["unit", "method"], how="left")
    for c in ("pearson", "exact", "top5", "cosine"):
        if c not in first.columns:
            first[c] = np.nan
    label = _texts(first["label"])
    uids = first["uid"].astype("int64").tolist()
    con.executemany("INSERT INTO best VALUES (?,?,?,?,?,?,?,?,?,?)", zip(
        uids, _texts(first["method"]), [layer_of[u] for u in uids], label,
        [normalize(x) for x in label], _nums(first["score"]), _nums(first["pearson"]),
        _flags(first["exact"]), _flags(first["top5"]), _nums(first["cosine"])))


def _json(v):
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return _num(v)
    return str(v)


def _records(df) -> list[dict]:
    return [{k: (_num(v) if isinstance(v, (float, np.floating)) else v) for k, v in r.items()}
            for r in df.to_dict("records")]


def _overview(con, run: Run) -> dict:
    """Everything the overview page shows, computed once at build time."""
    meta = run.meta
    methods = []
    for m in run.label_methods():
        n_units, n_labels = con.execute("SELECT count(DISTINCT uid), count(*) FROM labels WHERE "
                                        "method = ?", (m,)).fetchone()
        try:
            config = run.label_config(m)
        except (OSError, ValueError):
            config = {}
        methods.append({"name": m, "n_units": n_units, "n_labels": n_labels, "config": config})
    evaluation = {}
    for name in ("summary", "agreement"):
        if name in run.evaluation_names():
            evaluation[name] = _records(run.evaluation(name))
    per_layer = [dict(zip(("layer", "method", "n_units", "score", "pearson", "exact", "top5",
                           "cosine"), r)) for r in con.execute(
        "SELECT u.layer, b.method, count(*), avg(b.score), avg(b.pearson), avg(b.exact), "
        "avg(b.top5), avg(b.cosine) FROM best b JOIN units u USING(uid) "
        "GROUP BY u.layer, b.method ORDER BY min(u.uid), b.method")]
    model = meta.get("model", {})
    return {
        "run": run.path.name, "path": str(run.path), "status": meta.get("status"),
        "model": {"spec": meta["key"]["model"].get("spec"),
                  "weights": meta["key"]["model"].get("weights"),
                  "family": model.get("family") or model.get("adapter"),
                  "preprocess": model.get("preprocess")},
        "probe": {**meta.get("probe", {}), **meta.get("summary", {})},
        "layers": [{"name": l["name"], "n_units": l["n_units"], "kind": l["layout"]["kind"],
                    "pooling": l["pooling"], "shape": l.get("shape"),
                    "grid": l["layout"].get("grid")} for l in meta["layers"]],
        "k": meta["key"].get("k"), "created": meta.get("created"), "finished": meta.get("finished"),
        "n_units": con.execute("SELECT count(*) FROM units").fetchone()[0],
        "has_truth": con.execute("SELECT count(*) FROM units WHERE truth IS NOT NULL")
                        .fetchone()[0] > 0,
        "methods": methods, "evaluation": evaluation, "per_layer": per_layer,
        "metrics": [c for c in ("score", "pearson", "cosine")
                    if con.execute(f"SELECT 1 FROM best WHERE {c} IS NOT NULL LIMIT 1").fetchone()],
    }
