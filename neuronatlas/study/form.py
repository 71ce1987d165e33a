"""What annotators fill in: a CSV sheet and a self-contained HTML form (works from file://, no
server, no external script). Both list only grid ids; every other word in them is the same for
every study, so nothing in them can reveal a unit.

The form keeps answers in the browser's localStorage while the annotator works and offers them as
a CSV or JSON download (the file the annotator sends back). Its serialisers live in the
<script id="study-lib"> block, which has no DOM access, so tests can run it under node.
"""

from __future__ import annotations

import csv
import html
import json
from pathlib import Path

from .schema import COLUMNS, FEATURE_TYPES, HELP, RATINGS

RESPONSES_FORMAT = "neuronatlas-study-responses"


def write_sheet(path: Path, ids: list[str]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        for i in ids:
            w.writerow([i, f"{i}.png"] + [""] * (len(COLUMNS) - 2))


def write_readme(path: Path) -> None:
    path.write_text(README, encoding="utf-8")


README = """Blind interpretability study
============================

Each PNG in this folder is a grid of images that strongly drive one unit of a neural network, or a
control grid. Nothing in this folder says which unit a grid belongs to; please do not try to find
out, and do not discuss grids with other annotators until everyone has finished.

Open form.html in a web browser (double-click it; no internet is needed). Enter your name, answer
the questions for each grid, and press "Download CSV" (or "Download JSON") at the end. Send that
file back. Your answers are kept in the browser while you work, so you can close it and continue.

Alternatively, fill in sheet.csv in a spreadsheet (one row per grid, the image column names the
file) and send it back. Fields:
""" + "".join(f"  {name}: {text}\n" for name, text in HELP.items())


def _radio(name: str, values, labels=None) -> str:
    labels = labels or values
    return "".join(f'<label><input type="radio" data-field="{name}" value="{v}"> {l}</label> '
                   for v, l in zip(values, labels))


def _item_template() -> str:
    rows = [
        f'<p>{html.escape(HELP["interpretable"])}<br>{_radio("interpretable", ["y", "n"], ["yes", "no"])}</p>',
        f'<p>{html.escape(HELP["description"])}<br>'
        f'<textarea data-field="description" rows="2" cols="70"></textarea></p>',
    ]
    for r in RATINGS:
        rows.append(f'<p>{html.escape(HELP[r])}<br>{_radio(r, list("12345"))}</p>')
    rows.append(f'<p>{html.escape(HELP["polysemantic"])}<br>'
                f'{_radio("polysemantic", ["y", "n"], ["yes", "no"])} '
                f'{html.escape(HELP["n_concepts"])} '
                f'<input type="number" min="2" max="20" data-field="n_concepts" style="width:4em"></p>')
    options = "".join(f'<option value="{t}">{t}</option>' for t in FEATURE_TYPES)
    rows.append(f'<p>Feature type: <select data-field="feature_type"><option value=""></option>'
                f'{options}</select></p>')
    rows.append(f'<p>{html.escape(HELP["notes"])}<br>'
                f'<input type="text" data-field="notes" size="70"></p>')
    return "\n".join(rows)


LIB_JS = r"""
// Pure functions (no DOM): serialise the answers for download. COLUMNS is the sheet's header.
function csvCell(v) {
  var s = (v === undefined || v === null) ? "" : String(v);
  return /[",\r\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
}
function toCSV(columns, annotator, ids, answers) {
  var lines = [columns.map(csvCell).join(",")];
  ids.forEach(function (id) {
    var a = answers[id] || {};
    lines.push(columns.map(function (c) {
      if (c === "id") return csvCell(id);
      if (c === "image") return csvCell(id + ".png");
      if (c === "annotator") return csvCell(annotator);
      return csvCell(a[c]);
    }).join(","));
  });
  return lines.join("\r\n") + "\r\n";
}
function toJSON(format, annotator, ids, answers) {
  return JSON.stringify({format: format, annotator: annotator, responses: ids.map(function (id) {
    var a = answers[id] || {}, r = {id: id};
    Object.keys(a).forEach(function (k) { r[k] = a[k]; });
    return r;
  })}, null, 1);
}
"""

UI_JS = r"""
(function () {
  var key = "neuronatlas-study-" + IDS[0] + "-" + IDS.length;
  var state = JSON.parse(localStorage.getItem(key) || '{"annotator": "", "answers": {}}');
  var list = document.getElementById("items"), tpl = document.getElementById("item-template");
  IDS.forEach(function (id, n) {
    var div = document.createElement("div");
    div.className = "item"; div.dataset.id = id;
    div.innerHTML = '<h3>' + (n + 1) + ' / ' + IDS.length + '</h3><img alt="grid" src="' + id +
      '.png">' + tpl.innerHTML;
    div.querySelectorAll("[data-field]").forEach(function (el) {
      if (el.type === "radio") el.name = id + "-" + el.dataset.field;
      var a = state.answers[id] || {}, v = a[el.dataset.field];
      if (v !== undefined) {
        if (el.type === "radio") el.checked = (el.value === String(v)); else el.value = v;
      }
      el.addEventListener("change", save); el.addEventListener("input", save);
    });
    list.appendChild(div);
  });
  var who = document.getElementById("annotator");
  who.value = state.annotator; who.addEventListener("input", save);
  function collect() {
    var answers = {};
    document.querySelectorAll(".item").forEach(function (div) {
      var a = {};
      div.querySelectorAll("[data-field]").forEach(function (el) {
        if (el.type === "radio") { if (el.checked) a[el.dataset.field] = el.value; }
        else if (el.value !== "") a[el.dataset.field] = el.value;
      });
      answers[div.dataset.id] = a;
    });
    return answers;
  }
  function save() {
    state = {annotator: who.value, answers: collect()};
    localStorage.setItem(key, JSON.stringify(state));
    var done = IDS.filter(function (id) { return state.answers[id].interpretable; }).length;
    document.getElementById("done").textContent = done + " of " + IDS.length + " answered";
  }
  function download(text, name, type) {
    var a = document.createElement("a");
    a.href = URL.createObjectURL(new Blob([text], {type: type}));
    a.download = name; document.body.appendChild(a); a.click(); a.remove();
  }
  function need() {
    if (!who.value.trim()) { alert("Please enter your name first."); return false; }
    return true;
  }
  var stem = function () { return "responses-" + who.value.trim().replace(/[^A-Za-z0-9_-]+/g, "_"); };
  document.getElementById("csv").onclick = function () {
    if (need()) download(toCSV(COLUMNS, who.value.trim(), IDS, collect()), stem() + ".csv", "text/csv");
  };
  document.getElementById("json").onclick = function () {
    if (need()) download(toJSON(FORMAT, who.value.trim(), IDS, collect()), stem() + ".json",
                         "application/json");
  };
  save();
})();
"""

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Interpretability study</title>
<style>
body {{ font-family: sans-serif; max-width: 60em; margin: 1em auto; }}
.item {{ border-top: 1px solid #aaa; padding: 0.5em 0 1em; }}
.item img {{ max-width: 100%; }}
#bar {{ position: sticky; top: 0; background: #fff; padding: 0.5em 0; border-bottom: 1px solid #ccc; }}
</style></head>
<body>
<h1>Interpretability study</h1>
<p>Each grid shows images that strongly drive one unit of a neural network, or a control grid.
Answer the questions under every grid, then press Download and send the file back. Your answers are
kept in this browser while you work.</p>
<div id="bar">Your name: <input id="annotator" type="text">
<button id="csv">Download CSV</button> <button id="json">Download JSON</button>
<span id="done"></span></div>
<template id="item-template">
{template}
</template>
<div id="items"></div>
<script id="study-lib">{lib}</script>
<script>
var COLUMNS = {columns};
var FORMAT = {fmt};
var IDS = {ids};
</script>
<script>{ui}</script>
</body></html>
"""


def write_form(path: Path, ids: list[str]) -> None:
    page = PAGE.format(template=_item_template(), lib=LIB_JS, ui=UI_JS,
                       columns=json.dumps(list(COLUMNS)), fmt=json.dumps(RESPONSES_FORMAT),
                       ids=json.dumps(list(ids)))
    path.write_text(page, encoding="utf-8")
