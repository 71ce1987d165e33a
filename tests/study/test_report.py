"""The study report on simulated annotators whose answers follow the synthetic units' ground truth,
and the three commands end to end from the command line."""

import csv
import subprocess
import sys
from itertools import combinations

import numpy as np
import pandas as pd
import pytest

from neuronatlas.study import import_responses, study_report
from neuronatlas.study.inter_rater import cohen_kappa
from neuronatlas.study.schema import COLUMNS
from tests.conftest import missing_tool


def simulated_answers(doc, run, annotator):
    """What a careful person would say: the true concept for real units, nothing for controls.
    ben disagrees on the first 4 grids; cat skips every third grid."""
    truth = run.units.set_index("unit")
    answers = {}
    for n, item in enumerate(doc["items"]):
        if annotator == "cat" and n % 3 == 0:
            continue
        if item.control:
            a = {"interpretable": "n", "consistency": "1", "complexity": "1", "specificity": "1",
                 "polysemantic": "n"}
        else:
            t = truth.loc[item.unit]
            poly = t.truth_kind == "or"
            a = {"interpretable": "y", "description": t.truth, "consistency": "5",
                 "complexity": "2" if t.truth_kind == "mono" else "4", "specificity": "4",
                 "polysemantic": "y" if poly else "n", "n_concepts": "2" if poly else "",
                 "feature_type": "shape"}
        if annotator == "ben" and n < 4:
            a["interpretable"] = "y" if a["interpretable"] == "n" else "n"
            a["consistency"] = "3"
        answers[item.id] = a
    return answers


def write_sheet(path, answers, annotator):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        for i, a in answers.items():
            w.writerow({"id": i, "image": f"{i}.png", "annotator": annotator, **a})
    return path


@pytest.fixture(scope="module")
def reported(exports, study_run, tmp_path_factory):
    from neuronatlas.backends.text import load_text_embedder

    doc = exports["A"]
    root = tmp_path_factory.mktemp("report")
    answers = {a: simulated_answers(doc, study_run, a) for a in ("ann", "ben", "cat")}
    files = [write_sheet(root / f"{a}.csv", ans, a) for a, ans in answers.items()]
    import_responses(files, doc["mapping_path"], root / "study")
    try:
        embedder = load_text_embedder("zoo:minilm", cache_dir=False)
    except Exception as exc:  # the wheel is part of the zoo install
        missing_tool(f"zoo:minilm unavailable: {exc}")
    tables = study_report(root / "study", embedder=embedder)
    return doc, answers, tables, root / "study" / "report"


def test_agreement_matches_a_direct_count(reported):
    doc, answers, tables, _ = reported
    ids = [i.id for i in doc["items"]]
    agree = tables["agreement"].set_index("field")
    pairs = tables["pairwise"].set_index(["field", "rater_a", "rater_b"])
    kappas, same, both = [], 0, 0
    for a, b in combinations(sorted(answers), 2):
        x = [answers[a].get(i, {}).get("interpretable") for i in ids]
        y = [answers[b].get(i, {}).get("interpretable") for i in ids]
        shared = [(p, q) for p, q in zip(x, y) if p and q]
        same += sum(p == q for p, q in shared)
        both += len(shared)
        row = pairs.loc[("interpretable", a, b)]
        assert row.n == len(shared)
        assert row.percent == pytest.approx(np.mean([p == q for p, q in shared]))
        kappas.append(cohen_kappa([p for p, _ in shared], [q for _, q in shared]))
        assert row.kappa == pytest.approx(kappas[-1])
    assert agree.loc["interpretable", "percent"] == pytest.approx(same / both)
    assert agree.loc["interpretable", "kappa"] == pytest.approx(np.mean(kappas))
    assert agree.loc["interpretable", "n_items"] == len(ids)  # ann and ben answered all
    assert 0 < agree.loc["interpretable", "alpha_nominal"] < 1
    assert agree.loc["consistency", "kappa_weights"] == "quadratic"
    assert not np.isnan(agree.loc["consistency", "alpha_ordinal"])


def test_per_layer_rates_and_controls(reported, study_run):
    doc, answers, tables, out = reported
    layers = tables["layers"].set_index("group")
    items = {i.id: i for i in doc["items"]}
    real = [a for ans in answers.values() for i, a in ans.items() if not items[i].control]
    ctrl = [a for ans in answers.values() for i, a in ans.items() if items[i].control]
    want = np.mean([a["interpretable"] == "y" for a in real])
    assert layers.loc["real", "interpretable"] == pytest.approx(want)
    assert layers.loc["real", "interpretable_lo"] < want < layers.loc["real", "interpretable_hi"]
    assert layers.loc["control", "interpretable"] == pytest.approx(
        np.mean([a["interpretable"] == "y" for a in ctrl]))
    assert layers.loc["real", "polysemantic"] == pytest.approx(
        np.mean([a["polysemantic"] == "y" for a in real]))
    assert layers.loc["real", "n_answers"] == len(real)
    controls = tables["controls"].set_index("group")
    assert controls.loc["real", "interpretable"] > controls.loc["control", "interpretable"]
    assert controls.loc["real", "fisher_p_interpretable"] < 0.01
    for name in ("agreement", "pairwise", "layers", "controls", "methods"):
        assert (out / f"{name}.parquet").exists() and (out / f"{name}.csv").exists()
    assert pd.read_csv(out / "layers.csv").shape[0] == 2
    assert (out / "layers.png").read_bytes()[:4] == b"\x89PNG"
    md = (out / "report.md").read_text()
    assert "Agreement between annotators" in md and "layers.png" in md
    assert "<table" in (out / "report.html").read_text()


def test_descriptions_are_compared_with_each_method(reported):
    _, _, tables, _ = reported
    methods = tables["methods"].set_index("method")
    assert set(methods.index) == {"netdissect", "truth"}
    # the simulated people wrote the true labels: identical text, cosine 1, always the closest
    assert methods.loc["truth", "cosine"] == pytest.approx(1.0, abs=1e-5)
    assert methods.loc["truth", "rank_auc"] > 0.95
    # NetDissect recovers the mono units, so its labels are closer to the unit's own description
    # than the labels of other units are
    nd = methods.loc["netdissect"]
    assert nd.n > 0 and nd.cosine > nd.cosine_other and nd.rank_auc > 0.6


def test_export_import_report_from_the_command_line(study_run, tmp_path):
    cli = [sys.executable, "-m", "neuronatlas.cli", "study"]
    out, mapping = tmp_path / "grids", tmp_path / "keys" / "mapping.json"
    r = subprocess.run([*cli, "export", str(study_run.path), "--out", str(out / "x"), "--mapping",
                        str(out / "x" / "m.json"), "--units", "units:0"], capture_output=True,
                       text=True)
    assert r.returncode == 2 and "inside" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = subprocess.run([*cli, "export", str(study_run.path), "--out", str(out), "--mapping",
                        str(mapping), "--units", "units:0,units:7,units:50,units:80", "--k", "5",
                        "--controls", "0.2", "--no-heatmap", "--seed", "3"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert len(list(out.glob("*.png"))) == 5 and mapping.exists()
    with open(out / "sheet.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for n, row in enumerate(rows):
        row.update(annotator="zed", interpretable="y" if n % 2 else "n", consistency=str(1 + n))
    with open(tmp_path / "zed.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(rows)
    rows[0]["interpretable"] = "y"
    with open(tmp_path / "yan.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows([{**r, "annotator": "yan"} for r in rows])
    r = subprocess.run([*cli, "import", str(tmp_path / "zed.csv"), str(tmp_path / "yan.csv"),
                        "--mapping", str(mapping), "--out", str(tmp_path / "study")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "imported 10 answers from 2 annotators" in r.stdout
    r = subprocess.run([*cli, "report", str(tmp_path / "study"), "--embedder", "nope"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    # 4 of 5 agree; kappa from the 2x2 table by hand: zed n,y,n,y,n  yan y,y,n,y,n
    # p_o = .8, p_e = (3/5)(2/5) + (2/5)(3/5) = .48, kappa = .32 / .52
    assert f"kappa {0.32 / 0.52:.3f}" in r.stdout
    md = (tmp_path / "study" / "report" / "report.md").read_text()
    assert "label agreement skipped: unknown text embedder 'nope'" in md


def test_layer_table_keeps_the_run_order_and_counts_each_layer(tmp_path):
    from neuronatlas.study.report import layer_table, plot_layers

    rows = []
    for layer, n_yes, n_poly in (("blocks.10", 3, 2), ("blocks.2", 1, 0), ("blocks.9", 4, 1)):
        for j in range(4):
            rows.append({"id": f"{layer}-{j}", "layer": layer, "control": False,
                         "interpretable": j < n_yes, "polysemantic": j < n_poly,
                         **{r: 3 for r in ("consistency", "complexity", "specificity")}})
    rows.append({"id": "c", "layer": "blocks.9", "control": True, "interpretable": False,
                 "polysemantic": None, "consistency": None, "complexity": None, "specificity": None})
    df = pd.DataFrame(rows)
    df["interpretable"] = df["interpretable"].astype("boolean")
    df["polysemantic"] = df["polysemantic"].astype("boolean")
    t = layer_table(df, ["blocks.2", "blocks.9", "blocks.10"])
    assert list(zip(t.layer, t.group)) == [("blocks.2", "real"), ("blocks.9", "real"),
                                           ("blocks.9", "control"), ("blocks.10", "real")]
    real = t[t.group == "real"].set_index("layer")
    assert real.interpretable.to_dict() == {"blocks.2": 0.25, "blocks.9": 1.0, "blocks.10": 0.75}
    assert real.polysemantic.to_dict() == {"blocks.2": 0.0, "blocks.9": 0.25, "blocks.10": 0.5}
    ctrl = t[t.group == "control"].iloc[0]
    assert ctrl.interpretable == 0 and ctrl.polysemantic_n == 0 and np.isnan(ctrl.polysemantic)
    assert plot_layers(t, tmp_path / "l.png").stat().st_size > 1000
