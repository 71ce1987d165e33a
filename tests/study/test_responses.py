"""Importing responses: the sheet CSV and the form's JSON, validation, the join with the mapping."""

import csv
import json
import re
import shutil
import subprocess

import pandas as pd
import pytest

from neuronatlas.errors import UserError
from neuronatlas.study import import_responses
from neuronatlas.study.responses import read_responses
from tests.conftest import missing_tool
from neuronatlas.study.schema import COLUMNS


def fill_sheet(src, dst, answers, annotator=""):
    """Copy the exported sheet, filling rows: answers maps id -> {column: value}."""
    with open(src, newline="") as f:
        rows = list(csv.DictReader(f))
    with open(dst, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        for r in rows:
            r.update({"annotator": annotator, **answers.get(r["id"], {})})
            w.writerow(r)
    return dst


GOOD = {"interpretable": "y", "description": 'red things, "mostly" circles', "consistency": "4",
        "complexity": "2", "specificity": "3", "polysemantic": "n", "feature_type": "Color"}


def test_sheet_import_joins_with_the_mapping(exports, tmp_path):
    doc = exports["A"]
    ids = [i.id for i in doc["items"]]
    sheet = doc["dir"] / "sheet.csv"
    fill_sheet(sheet, tmp_path / "alice.csv", {ids[0]: GOOD, ids[1]: {"interpretable": "no"}})
    fill_sheet(sheet, tmp_path / "b.csv", {ids[0]: {**GOOD, "polysemantic": "yes",
                                                     "n_concepts": "2"}}, annotator="bob")
    joined = import_responses([tmp_path / "alice.csv", tmp_path / "b.csv"],
                              doc["mapping_path"], tmp_path / "study")
    assert len(joined) == 3  # empty rows are "not answered", not answers
    assert set(joined["annotator"]) == {"alice", "bob"}  # file stem when the column is empty
    first = joined[(joined.annotator == "alice") & (joined.id == ids[0])].iloc[0]
    item = doc["items"][0]
    assert first.unit == item.unit and first.layer == item.layer and bool(first.control) == item.control
    assert first.interpretable and first.consistency == 4 and first.feature_type == "color"
    assert first.description == 'red things, "mostly" circles'
    assert joined[(joined.annotator == "alice") & (joined.id == ids[1])].iloc[0].interpretable == False  # noqa
    stored = pd.read_parquet(tmp_path / "study" / "annotations.parquet")
    assert len(stored) == 3 and {"unit", "layer", "extreme", "control"} <= set(stored.columns)
    meta = json.loads((tmp_path / "study" / "study.json").read_text())
    assert meta["annotators"] == ["alice", "bob"] and meta["n_responses"] == 3


@pytest.mark.parametrize("bad, message", [
    ({"consistency": "7"}, r"line \d+: consistency must be a whole number from 1 to 5 \(got '7'\)"),
    ({"complexity": "2.5"}, r"line \d+: complexity must be a whole number"),
    ({"specificity": "high"}, r"line \d+: specificity must be a whole number"),
    ({"interpretable": "maybe"}, r"line \d+: interpretable must be y or n"),
    ({"feature_type": "vibes"}, r"feature_type 'vibes' is not one of"),
    ({"polysemantic": "n", "n_concepts": "3"}, r"polysemantic is n but n_concepts is 3"),
    ({"n_concepts": "0"}, r"n_concepts must be a whole number of at least 1"),
])
def test_bad_rows_are_refused_naming_the_row(exports, tmp_path, bad, message):
    doc = exports["A"]
    ids = [i.id for i in doc["items"]]
    path = fill_sheet(doc["dir"] / "sheet.csv", tmp_path / "carol.csv",
                      {ids[0]: GOOD, ids[3]: {**GOOD, **bad}})
    with pytest.raises(UserError, match=message) as err:
        import_responses([path], doc["mapping_path"], tmp_path / "study")
    # the row number is the spreadsheet line of ids[3]: header is line 1
    with open(path, newline="") as f:
        line = 2 + [r["id"] for r in csv.DictReader(f)].index(ids[3])
    assert f"carol.csv line {line}:" in str(err.value)
    assert not (tmp_path / "study").exists()  # nothing written


def test_unknown_ids_duplicates_and_foreign_files(exports, tmp_path):
    a, b = exports["A"], exports["B"]
    foreign = b["items"][0].id
    path = fill_sheet(b["dir"] / "sheet.csv", tmp_path / "dan.csv", {foreign: GOOD})
    with pytest.raises(UserError, match=f"unknown id '{foreign}'"):
        read_responses([path], a["mapping_path"])
    ids = [i.id for i in a["items"]]
    one = fill_sheet(a["dir"] / "sheet.csv", tmp_path / "one.csv", {ids[0]: GOOD}, "erin")
    two = fill_sheet(a["dir"] / "sheet.csv", tmp_path / "two.csv", {ids[0]: GOOD}, "erin")
    with pytest.raises(UserError, match="already answered"):
        read_responses([one, two], a["mapping_path"])
    (tmp_path / "x.csv").write_text("grid,answer\n1,y\n")
    with pytest.raises(UserError, match="no 'id' column"):
        read_responses([tmp_path / "x.csv"], a["mapping_path"])
    (tmp_path / "x.json").write_text('{"hello": 1}')
    with pytest.raises(UserError, match="not a response file"):
        read_responses([tmp_path / "x.json"], a["mapping_path"])
    empty = fill_sheet(a["dir"] / "sheet.csv", tmp_path / "empty.csv", {})
    with pytest.raises(UserError, match="no answers"):
        read_responses([empty], a["mapping_path"])


def test_form_serialisers_round_trip_through_the_importer(exports, tmp_path):
    """The form's own JavaScript (run under node) writes CSV and JSON that the importer reads back
    unchanged, including commas, quotes and newlines in the description."""
    node = shutil.which("node")
    if node is None:
        missing_tool("node is not installed")
    doc = exports["A"]
    page = (doc["dir"] / "form.html").read_text()
    lib = re.search(r'<script id="study-lib">(.*?)</script>', page, re.S).group(1)
    consts = re.search(r"<script>\s*(var COLUMNS.*?)</script>", page, re.S).group(1)
    ids = [i.id for i in doc["items"]]
    answers = {ids[0]: {**GOOD, "description": 'stripes, "zebra"\nand bars', "n_concepts": "2",
                        "polysemantic": "y"},
               ids[2]: {"interpretable": "n", "notes": "no idea"}}
    script = lib + consts + f"""
var fs = require("fs"), answers = {json.dumps(answers)};
fs.writeFileSync({json.dumps(str(tmp_path / 'r.csv'))}, toCSV(COLUMNS, "fay", IDS, answers));
fs.writeFileSync({json.dumps(str(tmp_path / 'r.json'))}, toJSON(FORMAT, "gus", IDS, answers));
"""
    (tmp_path / "run.js").write_text(script)
    subprocess.run([node, str(tmp_path / "run.js")], check=True, timeout=60)
    got_csv = read_responses([tmp_path / "r.csv"], doc["mapping_path"]).set_index("id")
    got_json = read_responses([tmp_path / "r.json"], doc["mapping_path"]).set_index("id")
    assert set(got_csv.annotator) == {"fay"} and set(got_json.annotator) == {"gus"}
    for got in (got_csv, got_json):
        assert sorted(got.index) == sorted([ids[0], ids[2]])
        assert got.loc[ids[0], "description"] == 'stripes, "zebra"\nand bars'
        assert got.loc[ids[0], "polysemantic"] and got.loc[ids[0], "n_concepts"] == 2
        assert not got.loc[ids[2], "interpretable"] and got.loc[ids[2], "notes"] == "no idea"


def test_form_renders_every_grid_in_a_browser_from_file_url(exports, tmp_path):
    """Headless Chromium opens form.html from file:// (no server) and its script builds one item
    per grid with the grid's image and every field."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        missing_tool("chromium is not installed")
    doc = exports["A"]
    form = doc["dir"] / "form.html"
    out = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu",
                          f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
                          form.resolve().as_uri()], capture_output=True, text=True, timeout=120)
    dom = out.stdout
    ids = [i.id for i in doc["items"]]
    assert dom.count('class="item"') == len(ids), out.stderr[-2000:]
    for i in ids:
        assert f'src="{i}.png"' in dom
    for i in ids:  # the script named each grid's radio groups after its id
        assert dom.count(f'name="{i}-consistency"') == 5 and dom.count(f'name="{i}-interpretable"') == 2
    assert f"0 of {len(ids)} answered" in dom


def test_semicolon_sheets_from_spreadsheets_are_read(exports, tmp_path):
    doc = exports["A"]
    ids = [i.id for i in doc["items"]]
    comma = fill_sheet(doc["dir"] / "sheet.csv", tmp_path / "c.csv", {ids[5]: GOOD}, "hal")
    with open(comma, newline="") as f:
        rows = list(csv.reader(f))
    with open(tmp_path / "hal.csv", "w", newline="") as f:
        csv.writer(f, delimiter=";").writerows(rows)
    got = read_responses([tmp_path / "hal.csv"], doc["mapping_path"])
    assert got.id.tolist() == [ids[5]] and got.description.item() == GOOD["description"]
