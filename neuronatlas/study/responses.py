"""Import annotators' responses (the filled sheet CSV or the form's JSON download), validate every
row, and join them with the mapping.

    STUDY/responses.parquet     one row per (annotator, grid id) with an answer, validated values
    STUDY/annotations.parquet   the same joined with the mapping (unit, layer, extreme, control...)
    STUDY/study.json            where the mapping and the run are, which files were read

A row whose answer fields are all empty counts as "not answered" (missing data for the agreement
statistics), not as an error. Anything else that does not fit the schema is a UserError that names
the file and the row, before anything is written.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from ..errors import UserError
from ..run import write_json
from .export import mapping_table, read_mapping
from .form import RESPONSES_FORMAT
from .schema import ANSWERS, BINARY, COLUMNS, FALSE_WORDS, FEATURE_TYPES, RATINGS, TRUE_WORDS


def _files(inputs) -> list[Path]:
    files: list[Path] = []
    for p in map(Path, [inputs] if isinstance(inputs, (str, Path)) else inputs):
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.suffix.lower() in (".csv", ".json"))
            if not found:
                raise UserError(f"{p} holds no .csv or .json response files")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise UserError(f"no response file or folder at {p}")
    return files


def _read_csv(path: Path) -> list[tuple[str, dict]]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        first = f.readline()
        f.seek(0)
        # spreadsheets in some locales save with ';'
        delimiter = ";" if first.count(";") > first.count(",") else ","
        reader = csv.DictReader(f, delimiter=delimiter)
        header = reader.fieldnames or []
        if "id" not in header:
            raise UserError(f"{path} has no 'id' column: send back the sheet.csv of the study "
                            f"(columns {', '.join(COLUMNS)})")
        unknown = [c for c in header if c not in COLUMNS]
        if unknown:
            raise UserError(f"{path} has unknown columns {', '.join(unknown)}; the sheet's columns "
                            f"are {', '.join(COLUMNS)}")
        # line numbers as a spreadsheet shows them: the header is line 1
        return [(f"{path.name} line {n + 2}", row) for n, row in enumerate(reader)]


def _read_json(path: Path) -> list[tuple[str, dict]]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != RESPONSES_FORMAT:
        raise UserError(f"{path} is not a response file from the study form (format "
                        f"{RESPONSES_FORMAT})")
    rows = []
    for n, r in enumerate(doc.get("responses", [])):
        if not isinstance(r, dict):
            raise UserError(f"{path.name} response {n + 1} is not an object")
        unknown = [c for c in r if c not in COLUMNS]
        if unknown:
            raise UserError(f"{path.name} response {n + 1} has unknown fields {', '.join(unknown)}")
        rows.append((f"{path.name} response {n + 1}", {"annotator": doc.get("annotator", ""), **r}))
    return rows


def _text(v) -> str:
    return "" if v is None else str(v).strip()


def _whole(v: str) -> int | None:
    """'4' or '4.0' (spreadsheets) -> 4; anything else (empty, '2.5', 'high') -> None."""
    try:
        x = float(v)
    except ValueError:
        return None
    return int(x) if x.is_integer() else None


def _parse_row(where: str, row: dict, default_annotator: str, known: set[str]) -> dict | None:
    rid = _text(row.get("id"))
    if not rid:
        raise UserError(f"{where}: the id is empty; keep the id column as exported")
    if rid not in known:
        raise UserError(f"{where}: unknown id '{rid}' (not in this study's mapping): was the "
                        f"response made for another export?")
    if all(_text(row.get(c)) == "" for c in ANSWERS):
        return None  # not answered
    out = {"id": rid, "annotator": _text(row.get("annotator")) or default_annotator}
    for c in BINARY:
        v = _text(row.get(c)).lower()
        if v and v not in TRUE_WORDS | FALSE_WORDS:
            raise UserError(f"{where}: {c} must be y or n (got '{row.get(c)}')")
        out[c] = None if not v else v in TRUE_WORDS
    for c in RATINGS:
        v = _text(row.get(c))
        x = _whole(v)
        if v and (x is None or not 1 <= x <= 5):
            raise UserError(f"{where}: {c} must be a whole number from 1 to 5 (got '{v}')")
        out[c] = x
    v = _text(row.get("n_concepts"))
    n = _whole(v)
    if v and (n is None or n < 1):
        raise UserError(f"{where}: n_concepts must be a whole number of at least 1 (got '{v}')")
    if n is not None and n > 1 and out["polysemantic"] is False:
        raise UserError(f"{where}: polysemantic is n but n_concepts is {n}; fix one of them")
    out["n_concepts"] = n
    ft = _text(row.get("feature_type")).lower()
    if ft and ft not in FEATURE_TYPES:
        raise UserError(f"{where}: feature_type '{ft}' is not one of {', '.join(FEATURE_TYPES)}")
    out["feature_type"] = ft or None
    out["description"] = _text(row.get("description")) or None
    out["notes"] = _text(row.get("notes")) or None
    return out


def read_responses(inputs, mapping: str | Path):
    """Validated responses (a DataFrame: id, annotator, the answer fields, source)."""
    import pandas as pd

    doc = read_mapping(mapping)
    known = {i.id for i in doc["items"]}
    rows, seen = [], {}
    for path in _files(inputs):
        raw = _read_json(path) if path.suffix.lower() == ".json" else _read_csv(path)
        for where, row in raw:
            parsed = _parse_row(where, row, path.stem, known)
            if parsed is None:
                continue
            key = (parsed["annotator"], parsed["id"])
            if key in seen:
                raise UserError(f"{where}: annotator '{key[0]}' already answered id {key[1]} "
                                f"({seen[key]}); keep one answer per grid")
            seen[key] = where
            rows.append({**parsed, "source": where})
    if not rows:
        raise UserError("the response files hold no answers (every row is empty)")
    df = pd.DataFrame(rows)
    for c in RATINGS + ("n_concepts",):
        df[c] = df[c].astype("Int64")
    for c in BINARY:
        df[c] = df[c].astype("boolean")
    return df


def import_responses(inputs, mapping: str | Path, out: str | Path):
    """Validate, join with the mapping, and write STUDY (see the module docstring). Returns the
    joined annotations table."""
    from ..run import write_table

    df = read_responses(inputs, mapping)
    doc = read_mapping(mapping)
    joined = df.merge(mapping_table(doc), on="id", how="left", validate="many_to_one")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_table(out, "responses", df)
    write_table(out, "annotations", joined)
    write_json(out / "study.json", {
        "format": "neuronatlas-study", "version": 1, "mapping": str(Path(mapping).resolve()),
        "run": doc["run"], "files": sorted({s.rsplit(" ", 2)[0] for s in df["source"]}),
        "n_responses": len(df), "annotators": sorted(df["annotator"].unique()),
        "n_items": doc["n_items"], "n_controls": doc["n_controls"]})
    return joined
