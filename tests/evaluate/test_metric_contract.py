"""The metric contract (evaluate/base.py): configs with docs and JSON round trip, a registry that
refuses duplicates, and a metric in one new file through the real `evaluate` command and the atlas."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import neuronatlas as na
from neuronatlas.errors import UserError

ROOT = Path(__file__).resolve().parents[2]

TOY = '''
"""label_words: how many words the labels of a method have (shorter is not better; a toy)."""
from dataclasses import dataclass

import pandas as pd

from neuronatlas.config import opt
from neuronatlas.evaluate.base import MetricConfig, MetricResult, metric


@dataclass(frozen=True)
class LabelWordsConfig(MetricConfig):
    rank: int = opt(0, "Which rank's label is counted (0: the label).")

    def validate(self):
        if self.rank < 0:
            raise self.error("rank", "must be >= 0")


@metric("label_words", LabelWordsConfig, order=50)
def score(run, labels, config, shared):
    """Words per label, per unit and method."""
    rows = labels[labels["rank"] == config.rank]
    table = pd.DataFrame({"unit": rows["unit"], "method": rows["method"],
                          "words": [len(str(t).split()) for t in rows["label"]]})
    g = table.groupby("method", sort=True)["words"]
    summary = pd.DataFrame({"metric": "label_words", "method": list(g.groups), "other": None,
                            "kind": "all", "n_units": g.size().to_numpy(),
                            "value": g.mean().to_numpy()})
    return MetricResult(table.reset_index(drop=True), summary)
'''


def write_labels(run, method, rows):
    from neuronatlas.run import write_labels as store  # labels of two made-up methods

    df = pd.DataFrame(rows, columns=["unit", "rank", "label", "score"])
    df.insert(1, "method", method)
    store(run.path, method, df, {"method": method})


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    path = tmp_path_factory.mktemp("metric") / "run"
    run = na.record("zoo:synthetic-units", "world:n=24,size=64,seed=0", path, layers="units",
                    show_progress=False, num_workers=0)
    units = list(run.units["unit"])
    write_labels(run, "short", [(u, 0, "red", 1.0) for u in units])
    write_labels(run, "long", [(u, r, "a big red " * (i % 3 + 1), 1.0 - r)
                               for i, u in enumerate(units) for r in (0, 1)])
    return run


def cli(tmp_path, *args):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]),
           "NEURONATLAS_PLUGINS": "toy_label_words", "COLUMNS": "250"}
    return subprocess.run([sys.executable, "-m", "neuronatlas.cli", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=600)


def test_a_metric_in_one_new_file_runs_through_evaluate_and_the_atlas(labelled, tmp_path):
    (tmp_path / "toy_label_words.py").write_text(TOY)
    r = cli(tmp_path, "evaluate", labelled.path, "--help")
    assert r.returncode == 0, r.stderr
    flat = " ".join(r.stdout.split())
    assert "--rank" in flat and "Which rank's label is counted" in flat
    assert "--label-words" in flat and "--no-label-words" in flat

    r = cli(tmp_path, "evaluate", labelled.path, "--no-simulation", "--embedder", "none",
            "--rank", "0")
    assert r.returncode == 0, r.stderr
    run = na.open_run(labelled.path)
    summary = run.evaluation("summary")
    mine = summary[summary["metric"] == "label_words"].set_index("method")["value"]
    words = [len(("a big red " * (i % 3 + 1)).split()) for i in range(len(run.units))]
    assert mine["short"] == 1.0 and mine["long"] == pytest.approx(sum(words) / len(words))
    assert len(run.evaluation("label_words")) == 2 * len(run.units)
    # the built-in metrics still ran next to it: truth and agreement of the two methods
    assert {"exact", "agreement_same_top1", "label_words"} <= set(summary["metric"])

    r = cli(tmp_path, "evaluate", labelled.path, "--rank", "-1")
    assert r.returncode == 2 and "rank must be >= 0" in r.stderr and "Traceback" not in r.stderr
    r = cli(tmp_path, "evaluate", labelled.path, "--metrics", "label_words,agreemnt")
    assert r.returncode == 2 and "did you mean agreement" in r.stderr

    site = tmp_path / "site"
    r = cli(tmp_path, "atlas", labelled.path, "--export", site, "--images", "none")
    assert r.returncode == 0, r.stderr
    assert '"label_words"' in (site / "data" / "overview.js").read_text()


def test_every_metric_config_documents_and_round_trips_its_fields():
    from dataclasses import fields

    from neuronatlas.evaluate import metrics

    found = metrics()
    assert list(found)[:4] == ["ground_truth", "simulation", "detection", "agreement"]
    for name, m in found.items():
        config = m.config()
        for f in fields(config):
            assert len(f.metadata.get("doc", "")) > 5, (name, f.name)
        assert m.config.from_json(json.loads(json.dumps(config.to_json()))) == config, name


def test_registry_refuses_duplicates_and_evaluate_refuses_unknown_options(labelled):
    from dataclasses import dataclass

    from neuronatlas.config import opt
    from neuronatlas.evaluate import evaluate
    from neuronatlas.evaluate.base import MetricConfig, metric

    @dataclass(frozen=True)
    class C(MetricConfig):
        x: int = opt(1, "An option.")

    with pytest.raises(ValueError, match="already registered"):
        metric("simulation", C)(lambda run, labels, config, shared: None)
    with pytest.raises(UserError, match="no metric takes holdot"):
        evaluate(labelled, holdot=0.3, embedder=None, simulation=False)
    with pytest.raises(UserError, match="holdout must be in"):
        evaluate(labelled, holdout=2.0, embedder=None, simulation=True)


def test_metric_selection(labelled):
    from neuronatlas.evaluate import evaluate

    only = evaluate(labelled, metrics=["agreement"], embedder=None, write=False)
    assert set(only["metric"]) == {"agreement_same_top1", "agreement_cosine"}
    off = evaluate(labelled, embedder=None, simulation=False, switches={"agreement": False},
                   write=False)
    assert not any(m.startswith("agreement") for m in off["metric"]) and "exact" in set(off["metric"])
