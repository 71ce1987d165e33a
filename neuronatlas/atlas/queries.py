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
        self.method_pos = dict(self.con.execute("SELECT name, pos FROM methods"))
        self.n_methods = max(1, len(self.method_pos))
        self._nulls: dict = {}

    @property
    def con(self) -> sqlite3.Connection:
        con = getattr(self._local, "con", None)
        if con is None:
            con = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
            self._local.con = con
        return con

    def _one(self, sql, args=()):
        return self.con.execute(sql, args).fetchone()

    def _docs(self, methods=()) -> str:
        """Units whose labels (of one of `methods`, or any) match: an FTS subquery on rowids."""
        sub = f"SELECT rowid / {self.n_methods} FROM docs WHERE docs MATCH ?"
        if methods:
            positions = ",".join(str(self.method_pos[m]) for m in methods)
            sub += f" AND rowid % {self.n_methods} IN ({positions})"
        return sub

    def _order(self, col: str, order: str, uid: str, method: str | None = None) -> str:
        """ORDER BY col, then unit order; missing values last. SQLite sorts NULL lowest, so only
        an ascending sort over a column that has NULLs needs the (slower) explicit rule."""
        if order == "desc":
            return f"{col} DESC, {uid}"
        table, name = ("best", col.split(".")[1]) if method else ("units", col.split(".")[1])
        key = (table, name, method)
        if key not in self._nulls:
            sql = f"SELECT 1 FROM {table} WHERE {name} IS NULL" + (" AND method = ?" if method
                                                                   else "") + " LIMIT 1"
            self._nulls[key] = self._one(sql, (method,) if method else ()) is not None
        return f"({col} IS NULL), {col}, {uid}" if self._nulls[key] else f"{col}, {uid}"

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
        # with a method, drive the query from `best` (it carries the layer); units only when
        # sorting by a unit statistic
        where, args = [], []
        if query.method:
            frm, uid = "FROM best m", "m.uid"
            if query.sort in ("std", "mean", "max"):
                frm += " JOIN units u ON u.uid = m.uid"
            where.append("m.method = ?")
            args.append(query.method)
        else:
            frm, uid = "FROM units u", "u.uid"
        if query.layer:
            where.append(f"{'m' if query.method else 'u'}.layer = ?")
            args.append(query.layer)
        match = fts_query(query.q)
        if match:
            args.append(match)
            where.append(f"{uid} IN ({self._docs([query.method] if query.method else ())})")
        if query.min is not None:
            where.append(f"m.{query.metric} >= ?")
            args.append(query.min)
        if query.max is not None:
            where.append(f"m.{query.metric} <= ?")
            args.append(query.max)
        base = f"{frm} {('WHERE ' + ' AND '.join(where)) if where else ''}"
        total = self._one(f"SELECT count(*) {base}", args)[0]
        if query.sort == "unit":
            order = f"{uid} {query.order.upper()}"
        elif query.sort in METRICS:
            order = self._order(f"m.{query.sort}", query.order, uid, query.method)
        else:
            order = self._order(f"u.{query.sort}", query.order, uid)
        uids = [r[0] for r in self.con.execute(
            f"SELECT {uid} {base} ORDER BY {order} LIMIT ? OFFSET ?",
            [*args, query.per_page, (query.page - 1) * query.per_page])]
        rows = self.rows(uids)
        if match:
            self._mark_matches(rows, tokens(query.q), query.method)
        return {"query": query.to_dict(), "total": total, "page": query.page,
                "per_page": query.per_page, "pages": max(1, -(-total // query.per_page)),
                "rows": rows}

    def _mark_matches(self, rows: list[dict], words: list[str], method: str) -> None:
        """row["matches"]: the labels (method, rank, label) that contain a searched word, so the
        list can show why a unit matched when its top labels do not say it."""
        if not rows:
            return
        by_uid = {r["uid"]: r for r in rows}
        for r in rows:
            r["matches"] = []
        sql = (f"SELECT uid, method, rank, label FROM labels WHERE uid IN "
               f"({','.join('?' * len(by_uid))})" + (" AND method = ?" if method else "")
               + " ORDER BY uid, method, rank")
        for uid, m, rank, label in self.con.execute(sql, [*by_uid, *([method] if method else [])]):
            if any(t.startswith(w) for t in tokens(label) for w in words):
                by_uid[uid]["matches"].append({"method": m, "rank": rank, "label": label})

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
            parts: dict[int, dict] = {}
            for uid, method, label in self.con.execute(
                    "SELECT uid, method, label FROM labels WHERE uid BETWEEN ? AND ? "
                    "ORDER BY uid, method, rank", (uids[0], uids[-1])):
                parts.setdefault(uid, {}).setdefault(method, []).append(label)
            text = {u: {m: " | ".join(v) for m, v in ms.items()} for u, ms in parts.items()}
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
        where, args = ["p.a = ?", "p.b = ?"], sorted((query.a, query.b))  # stored with a < b
        if query.layer:
            where.append("p.layer = ?")
            args.append(query.layer)
        match = fts_query(query.q)
        if match:
            where.append(f"p.uid IN ({self._docs([query.a, query.b])})")
            args.append(match)

        def cond(extra=()):
            return " WHERE " + " AND ".join([*where, *extra])

        per_layer = [{"layer": l, "n_units": n, "same": s} for l, n, s in self.con.execute(
            f"SELECT p.layer, count(*), avg(p.same) FROM pairs p {cond()} GROUP BY p.layer "
            f"ORDER BY min(p.uid)", args)]
        n = sum(r["n_units"] for r in per_layer)  # one scan: the totals from the layer groups
        same = sum(r["same"] * r["n_units"] for r in per_layer) / n if n else None
        m = query.metric
        joins = ("FROM pairs p JOIN best x ON x.method = ? AND x.uid = p.uid "
                 "JOIN best y ON y.method = ? AND y.uid = p.uid JOIN units u ON u.uid = p.uid")
        jargs = [query.a, query.b, *args]
        scatter = [{"unit": u, "x": x, "y": y, "same": bool(s)} for u, x, y, s in self.con.execute(
            f"SELECT u.unit, x.{m}, y.{m}, p.same {joins} "
            f"{cond([f'x.{m} IS NOT NULL', f'y.{m} IS NOT NULL'])} ORDER BY p.uid LIMIT 2000",
            jargs)]
        only = {"all": [], "same": ["p.same = 1"], "different": ["p.same = 0"]}[query.only]
        total = self._one(f"SELECT count(*) FROM pairs p {cond(only)}", args)[0]
        if query.sort == "unit":
            order = f"p.uid {query.order.upper()}"
        else:
            method, alias = (query.a, "x") if query.sort == "a" else (query.b, "y")
            order = self._order(f"{alias}.{m}", query.order, "p.uid", method)
        rows = [{"unit": u, "layer": layer, "same": bool(s),
                 "a": {"label": la, "score": sa, "pearson": pa, "cosine": ca},
                 "b": {"label": lb, "score": sb, "pearson": pb, "cosine": cb}}
                for u, layer, s, la, sa, pa, ca, lb, sb, pb, cb in self.con.execute(
                    f"SELECT u.unit, u.layer, p.same, x.label, x.score, x.pearson, x.cosine, "
                    f"y.label, y.score, y.pearson, y.cosine {joins} {cond(only)} ORDER BY {order} "
                    f"LIMIT ? OFFSET ?", [*jargs, query.per_page, (query.page - 1) * query.per_page])]
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
