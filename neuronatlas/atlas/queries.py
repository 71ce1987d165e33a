"""Queries over the atlas index, shared by the server (per request) and the static export (which
dumps the same rows and details for the browser; its JavaScript mirrors `UnitQuery` exactly).

Search: every word of the query must begin a word of one method's labels of the unit (all ranks);
with a method chosen, of that method's labels. Filters: layer, method (units it labelled), a range
of one metric of that method (score = the method's own score of its top label, pearson =
simulation score, cosine = ground-truth cosine). Sorting puts missing values last and breaks ties
by unit order. Pages are LIMIT/OFFSET over indexed columns.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from ..errors import UserError
from .index import tokens

METRICS = ("score", "pearson", "cosine")
UNIT_SORTS = ("unit", "std", "mean", "max") + METRICS
MAX_PER_PAGE = 500


class UnitNotFound(KeyError):
    pass


@dataclass(frozen=True)
class UnitQuery:
    q: str = ""
    layer: str = ""
    method: str = ""
    metric: str = "score"
    min: float | None = None
    max: float | None = None
    sort: str = "unit"
    order: str = "asc"
    page: int = 1
    per_page: int = 50

    def __post_init__(self):
        if self.metric not in METRICS:
            raise UserError(f"metric must be one of {', '.join(METRICS)} (got {self.metric!r})")
        if self.sort not in UNIT_SORTS:
            raise UserError(f"sort must be one of {', '.join(UNIT_SORTS)} (got {self.sort!r})")
        if self.order not in ("asc", "desc"):
            raise UserError(f"order must be asc or desc (got {self.order!r})")
        if self.page < 1 or not 1 <= self.per_page <= MAX_PER_PAGE:
            raise UserError(f"page must be >= 1 and per_page within 1..{MAX_PER_PAGE}")
        if (self.min is not None or self.max is not None or self.sort in METRICS) \
                and not self.method:
            raise UserError("filtering or sorting by a score needs a method: choose one")

    @classmethod
    def from_params(cls, params: dict) -> "UnitQuery":
        return cls(**_coerce(cls, params))

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class CompareQuery:
    a: str
    b: str
    q: str = ""
    layer: str = ""
    only: str = "all"  # all | same | different
    metric: str = "score"
    sort: str = "unit"  # unit | a | b
    order: str = "asc"
    page: int = 1
    per_page: int = 50

    def __post_init__(self):
        if self.only not in ("all", "same", "different"):
            raise UserError(f"only must be all, same or different (got {self.only!r})")
        if self.metric not in METRICS:
            raise UserError(f"metric must be one of {', '.join(METRICS)} (got {self.metric!r})")
        if self.sort not in ("unit", "a", "b") or self.order not in ("asc", "desc"):
            raise UserError("sort must be unit, a or b and order asc or desc")
        if self.page < 1 or not 1 <= self.per_page <= MAX_PER_PAGE:
            raise UserError(f"page must be >= 1 and per_page within 1..{MAX_PER_PAGE}")

    @classmethod
    def from_params(cls, params: dict) -> "CompareQuery":
        return cls(**_coerce(cls, params))


def _coerce(cls, params: dict) -> dict:
    out = {}
    for f in fields(cls):
        v = params.get(f.name)
        if v is None or v == "":
            continue
        try:
            if f.name in ("page", "per_page"):
                v = int(v)
            elif f.name in ("min", "max"):
                v = float(v)
            else:
                v = str(v)
        except ValueError:
            raise UserError(f"{f.name} must be a number (got {v!r})") from None
        out[f.name] = v
    return out


def fts_query(text: str) -> str | None:
    """User text -> an FTS5 query: every word as a prefix, all required. None: no words."""
    words = tokens(text)
    return " AND ".join(f'"{w}"*' for w in words) if words else None


class AtlasIndex:
    """Read-only access to an atlas index file (one SQLite connection per thread)."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self._local = threading.local()
        self.overview = json.loads(self._one("SELECT value FROM meta WHERE key='overview'")[0])
        self.methods = [m["name"] for m in self.overview["methods"]]
        self.layers = [l["name"] for l in self.overview["layers"]]

    @property
    def con(self) -> sqlite3.Connection:
        con = getattr(self._local, "con", None)
        if con is None:
            con = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
            self._local.con = con
        return con

    def _one(self, sql, args=()):
        return self.con.execute(sql, args).fetchone()

    def _check(self, layer: str = "", methods=()) -> None:
        if layer and layer not in self.layers:
            raise UserError(f"layer {layer!r} is not in this run; layers: {', '.join(self.layers)}")
        for m in methods:
            if m and m not in self.methods:
                raise UserError(f"method {m!r} has no labels in this run; methods: "
                                f"{', '.join(self.methods) or 'none'}")

    # -- the unit list ------------------------------------------------------------------------------
    def list_units(self, query: UnitQuery) -> dict:
        self._check(query.layer, [query.method])
        joins, where, args = [], [], []
        if query.method:
            joins.append("JOIN best m ON m.uid = u.uid AND m.method = ?")
            args.append(query.method)
        if query.layer:
            where.append("u.layer = ?")
            args.append(query.layer)
        match = fts_query(query.q)
        if match:
            sub = "SELECT uid FROM docs WHERE docs MATCH ?"
            args.append(match)
            if query.method:
                sub += " AND method = ?"
                args.append(query.method)
            where.append(f"u.uid IN ({sub})")
        if query.min is not None:
            where.append(f"m.{query.metric} >= ?")
            args.append(query.min)
        if query.max is not None:
            where.append(f"m.{query.metric} <= ?")
            args.append(query.max)
        base = f"FROM units u {' '.join(joins)} {('WHERE ' + ' AND '.join(where)) if where else ''}"
        total = self._one(f"SELECT count(*) {base}", args)[0]
        col = {"unit": "u.uid"}.get(query.sort, f"m.{query.sort}" if query.sort in METRICS
                                    else f"u.{query.sort}")
        order = f"({col} IS NULL), {col} {query.order.upper()}, u.uid" if col != "u.uid" \
            else f"u.uid {query.order.upper()}"
        uids = [r[0] for r in self.con.execute(
            f"SELECT u.uid {base} ORDER BY {order} LIMIT ? OFFSET ?",
            [*args, query.per_page, (query.page - 1) * query.per_page])]
        return {"query": query.to_dict(), "total": total, "page": query.page,
                "per_page": query.per_page, "pages": max(1, -(-total // query.per_page)),
                "rows": self.rows(uids)}

    def rows(self, uids: list[int]) -> list[dict]:
        """List rows of these units (in this order): stats and every method's top label."""
        if not uids:
            return []
        marks = ",".join("?" * len(uids))
        units = {r[0]: r for r in self.con.execute(
            f"SELECT uid, unit, layer, idx, std, mean, max, truth FROM units WHERE uid IN ({marks})",
            uids)}
        best: dict[int, dict] = {}
        for r in self.con.execute(f"SELECT uid, method, label, score, pearson, cosine, exact FROM "
                                  f"best WHERE uid IN ({marks}) ORDER BY method", uids):
            best.setdefault(r[0], {})[r[1]] = {"label": r[2], "score": r[3], "pearson": r[4],
                                               "cosine": r[5], "exact": r[6]}
        return [{"uid": u, "unit": units[u][1], "layer": units[u][2], "index": units[u][3],
                 "std": units[u][4], "mean": units[u][5], "max": units[u][6],
                 "truth": units[u][7], "labels": best.get(u, {})} for u in uids]

    def all_rows(self, batch: int = 5000):
        """Every unit's list row in unit order, with its searchable text per method (export)."""
        n = self._one("SELECT count(*) FROM units")[0]
        for a in range(0, n, batch):
            uids = list(range(a, min(n, a + batch)))
            rows = self.rows(uids)
            text: dict[int, dict] = {}
            for uid, method, doc in self.con.execute(
                    "SELECT uid, method, text FROM docs WHERE uid BETWEEN ? AND ?",
                    (uids[0], uids[-1])):
                text.setdefault(int(uid), {})[method] = doc
            for r in rows:
                r["text"] = text.get(r["uid"], {})
            yield rows

    # -- one unit -----------------------------------------------------------------------------------
    def uid_of(self, unit: str) -> int:
        row = self._one("SELECT uid FROM units WHERE unit = ?", (unit,))
        if row is None:
            raise UnitNotFound(unit)
        return row[0]

    def unit(self, unit: str) -> dict:
        """Stats, truth, every method's ranked labels with its scores, and agreement between
        methods (same top label, overlap of their label sets)."""
        uid = self.uid_of(unit)
        cols = ["uid", "unit", "layer", "idx", "count", "mean", "std", "min", "max",
                "frac_positive", "q01", "q50", "q99", "truth", "truth_kind", "truth_concepts"]
        r = dict(zip(cols, self._one(f"SELECT {','.join(cols)} FROM units WHERE uid = ?", (uid,))))
        r["index"] = r.pop("idx")
        methods: dict[str, dict] = {}
        for m, rank, label, score, extras in self.con.execute(
                "SELECT method, rank, label, score, extras FROM labels WHERE uid = ? "
                "ORDER BY method, rank", (uid,)):
            entry = methods.setdefault(m, {"labels": []})
            entry["labels"].append({"rank": rank, "label": label, "score": score,
                                    "extras": json.loads(extras) if extras else {}})
        for m, label, score, pearson, exact, top5, cosine in self.con.execute(
                "SELECT method, label, score, pearson, exact, top5, cosine FROM best WHERE uid = ?",
                (uid,)):
            methods.setdefault(m, {"labels": []}).update(
                {"label": label, "score": score, "pearson": pearson, "exact": exact,
                 "top5": top5, "cosine": cosine})
        r["methods"] = methods
        r["agreement"] = agreement(methods)
        return r

    # -- two methods side by side -----------------------------------------------------------------
    def compare(self, query: CompareQuery) -> dict:
        self._check(query.layer, [query.a, query.b])
        if query.a == query.b:
            raise UserError("choose two different methods to compare")
        args: list = [query.a, query.b]
        where = []
        if query.layer:
            where.append("u.layer = ?")
            args.append(query.layer)
        match = fts_query(query.q)
        if match:
            where.append("u.uid IN (SELECT uid FROM docs WHERE docs MATCH ? AND method IN (?, ?))")
            args += [match, query.a, query.b]
        joins = ("FROM units u JOIN best a ON a.uid = u.uid AND a.method = ? "
                 "JOIN best b ON b.uid = u.uid AND b.method = ?")

        def sql(conds):
            return joins + (" WHERE " + " AND ".join(conds) if conds else "")

        base = sql(where)
        per_layer = [{"layer": l, "n_units": n, "same": s} for l, n, s in self.con.execute(
            f"SELECT u.layer, count(*), avg(a.norm = b.norm) {base} GROUP BY u.layer "
            f"ORDER BY min(u.uid)", args)]
        n, same = self._one(f"SELECT count(*), avg(a.norm = b.norm) {base}", args)
        m = query.metric
        scatter = [{"unit": u, "x": x, "y": y, "same": bool(s)} for u, x, y, s in self.con.execute(
            f"SELECT u.unit, a.{m}, b.{m}, a.norm = b.norm "
            f"{sql(where + [f'a.{m} IS NOT NULL', f'b.{m} IS NOT NULL'])} "
            f"ORDER BY u.uid LIMIT 2000", args)]
        if query.only != "all":
            base = sql(where + ["a.norm = b.norm" if query.only == "same" else "a.norm != b.norm"])
        total = self._one(f"SELECT count(*) {base}", args)[0]
        col = {"unit": "u.uid", "a": f"a.{m}", "b": f"b.{m}"}[query.sort]
        order = f"({col} IS NULL), {col} {query.order.upper()}, u.uid"
        rows = [{"unit": u, "layer": layer, "same": bool(s),
                 "a": {"label": la, "score": sa, "pearson": pa, "cosine": ca},
                 "b": {"label": lb, "score": sb, "pearson": pb, "cosine": cb}}
                for u, layer, s, la, sa, pa, ca, lb, sb, pb, cb in self.con.execute(
                    f"SELECT u.unit, u.layer, a.norm = b.norm, a.label, a.score, a.pearson, "
                    f"a.cosine, b.label, b.score, b.pearson, b.cosine {base} ORDER BY {order} "
                    f"LIMIT ? OFFSET ?", [*args, query.per_page, (query.page - 1) * query.per_page])]
        return {"query": asdict(query), "n_units": n, "same": same, "per_layer": per_layer,
                "scatter": scatter, "total": total, "page": query.page,
                "per_page": query.per_page, "pages": max(1, -(-total // query.per_page)),
                "rows": rows}


def agreement(methods: dict[str, dict]) -> list[dict]:
    """Per pair of methods on one unit: same top label (normalised) and the Jaccard overlap of
    their whole label lists."""
    from itertools import combinations

    from .index import normalize

    out = []
    for a, b in combinations(sorted(methods), 2):
        la = {normalize(x["label"]) for x in methods[a]["labels"]}
        lb = {normalize(x["label"]) for x in methods[b]["labels"]}
        same = normalize(methods[a].get("label", "")) == normalize(methods[b].get("label", ""))
        out.append({"a": a, "b": b, "same_top1": same,
                    "jaccard": len(la & lb) / len(la | lb) if la | lb else None,
                    "shared": sorted(la & lb)})
    return out
