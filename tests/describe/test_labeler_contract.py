"""The labeler contract (describe/base.py): configs with docs, JSON round trip and one-line errors;
the registry refuses duplicates; a labeler in one new file runs through the real CLI, the
evaluation and the atlas."""

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

import neuronatlas as na
from neuronatlas.errors import UserError

ROOT = Path(__file__).resolve().parents[2]

# a whole labeler, as a user would write it in a file of their own
TOY = '''
"""caption-words: a unit's labels are the commonest words in the captions of its top exemplars."""
from collections import Counter
from dataclasses import dataclass

import pandas as pd

from neuronatlas.config import opt
from neuronatlas.describe.base import LabelerConfig, labeler


@dataclass(frozen=True)
class CaptionWordsConfig(LabelerConfig):
    k: int = opt(5, "Top exemplars whose captions vote.")
    top: int = opt(3, "Labels kept per unit.")
    stopwords: tuple[str, ...] = opt(("a", "an", "the", "on", "and", "with", "of"),
                                     "Words that never become labels.")

    def validate(self):
        if self.k < 1:
            raise self.error("k", "must be at least 1")


@labeler("caption-words", CaptionWordsConfig)
def label(run, config):
    """Label each unit with the commonest caption words of its top exemplars."""
    captions = run.images.set_index("index")["label"]
    rows = []
    for unit in run.units["unit"]:
        words = Counter(w for i in run.topk(unit, config.k)["index"]
                        for w in str(captions[i]).lower().replace(",", " ").split()
                        if w not in config.stopwords)
        ranked = sorted(words.items(), key=lambda x: (-x[1], x[0]))[:config.top]
        for r, (w, n) in enumerate(ranked):
            rows.append({"unit": unit, "rank": r, "label": w, "score": n / config.k})
    return pd.DataFrame(rows)
'''


def expected_caption_words(run, k, stopwords, top=3):
    """The same labels, computed here independently."""
    captions = dict(zip(run.images["index"], run.images["label"]))
    out = {}
    for unit in run.units["unit"]:
        c = Counter()
        for i in run.topk(unit, k)["index"]:
            c.update(w for w in str(captions[i]).lower().replace(",", " ").split()
                     if w not in stopwords)
        out[unit] = [w for w, _ in sorted(c.items(), key=lambda x: (-x[1], x[0]))[:top]]
    return out


@pytest.fixture(scope="module")
def syn_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("contract") / "run"
    return na.record("zoo:synthetic-units", "world:n=40,size=64,seed=0", path, layers="units",
                     show_progress=False, num_workers=0)


def cli(tmp_path, *args):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]),
           "NEURONATLAS_PLUGINS": "toy_caption_words", "COLUMNS": "250"}
    return subprocess.run([sys.executable, "-m", "neuronatlas.cli", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=600)


def test_a_labeler_in_one_new_file_runs_through_cli_evaluation_and_atlas(syn_run, tmp_path):
    (tmp_path / "toy_caption_words.py").write_text(TOY)
    run = syn_run.path
    r = cli(tmp_path, "describe", run, "--method", "caption-words", "--help")
    assert r.returncode == 0, r.stderr
    for text in ("--k", "--top", "--stopwords", "Top exemplars whose captions vote",
                 "Words that never become labels", "commonest caption words"):
        assert text in " ".join(r.stdout.split()), text
    assert "--quantile" not in r.stdout  # netdissect's options are not caption-words'

    r = cli(tmp_path, "describe", run, "--method", "caption-words", "--k", "4", "--stopwords",
            "a,the,on")
    assert r.returncode == 0, r.stderr
    assert "labelled 111 units with caption-words" in r.stdout
    done = na.open_run(run)
    labels = done.labels("caption-words")
    want = expected_caption_words(done, 4, {"a", "the", "on"})
    got = {u: list(g.sort_values("rank")["label"]) for u, g in labels.groupby("unit")}
    assert got == {u: w for u, w in want.items() if w}
    stored = done.label_config("caption-words")
    assert stored["method"] == "caption-words"
    assert stored["config"] == {"k": 4, "top": 3, "stopwords": ["a", "the", "on"]}

    r = cli(tmp_path, "describe", run, "--method", "caption-words", "--k", "0")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "k must be at least 1" in r.stderr
    r = cli(tmp_path, "describe", run, "--method", "caption-words", "--quantile", "0.1")
    assert r.returncode == 2 and "--quantile only apply to" in r.stderr
    assert "--method netdissect" in r.stderr and "not caption-words" in r.stderr

    r = cli(tmp_path, "evaluate", run, "--no-simulation")
    assert r.returncode == 0, r.stderr
    gt = na.open_run(run).evaluation("ground_truth")
    mine = gt[gt["method"] == "caption-words"]
    assert len(mine) == labels["unit"].nunique()
    top1 = labels[labels["rank"] == 0].set_index("unit")["label"]
    assert (mine.set_index("unit")["label"] == top1[mine["unit"]]).all()

    site = tmp_path / "site"
    r = cli(tmp_path, "atlas", run, "--export", site, "--images", "none")
    assert r.returncode == 0, r.stderr
    overview = (site / "data" / "overview.js").read_text()
    assert '"caption-words"' in overview and '"stopwords"' in overview


def test_every_labeler_config_documents_and_round_trips_its_fields():
    from dataclasses import fields

    from neuronatlas.describe import labelers

    found = labelers()
    assert {"clip-dissect", "netdissect", "vlm", "second-order"} <= set(found)
    for name, lab in found.items():
        config = lab.config()
        for f in fields(config):
            assert len(f.metadata.get("doc", "")) > 5, (name, f.name)
        again = lab.config.from_json(json.loads(json.dumps(config.to_json())))
        assert again == config, name


def test_configs_convert_and_refuse_values_with_one_line_errors():
    from neuronatlas.describe import make_config

    c = make_config("clip-dissect", similarity="wpmi", top_k=50, top="3", layers="a,b")
    assert c.params == {"top_k": 50} and c.top == 3 and c.layers == ("a", "b")
    assert c.stored_name("clip-dissect") == "clip-dissect-wpmi"
    assert type(c).from_json(json.dumps(c.to_json())) == c
    v = make_config("vlm", vlm="zoo:world-llava", mode="grid", units=["units:1", "units:2"])
    assert v.units == ("units:1", "units:2") and v.stored_name("vlm") == "vlm-grid"
    for method, options, words in [
        ("clip-dissect", {"top": 0}, ["clip-dissect", "top", "at least 1", "--top"]),
        ("clip-dissect", {"top": "many"}, ["top must be an integer", "'many'"]),
        ("clip-dissect", {"similarity": "dot"}, ["similarity must be one of", "soft_wpmi"]),
        ("clip-dissect", {"simlarity": "cos"}, ["does not take simlarity", "did you mean similarity"]),
        ("netdissect", {"quantile": 2.0}, ["quantile", "between 0 and 1"]),
        ("netdissect", {"bins": 7}, ["bins", "even"]),
        ("vlm", {"k": 0}, ["k", "at least 1"]),
        ("second-order", {"solver": "sgd"}, ["solver must be one of omp, lasso"]),
    ]:
        with pytest.raises(UserError) as e:
            make_config(method, **options)
        msg = str(e.value)
        assert "\n" not in msg and all(w in msg for w in words), (msg, words)


def test_the_registry_refuses_a_second_labeler_of_the_same_name():
    from dataclasses import dataclass

    from neuronatlas.config import opt
    from neuronatlas.describe import base, labelers

    @dataclass(frozen=True)
    class OneConfig(base.LabelerConfig):
        top: int = opt(1, "Labels kept per unit.")

    with pytest.raises(ValueError, match="already registered"):
        base.labeler("netdissect", OneConfig)(lambda run, config: None)
    assert labelers()["netdissect"].label.__module__ == "neuronatlas.describe.netdissect"

    class Loose(base.LabelerConfig):  # not a frozen dataclass of its own
        pass

    with pytest.raises(TypeError):
        base.labeler("loose", dataclass(Loose))
    with pytest.raises(TypeError, match="docstring"):
        opt(1)


def test_describe_help_lists_each_methods_own_options():
    from dataclasses import fields

    from typer.testing import CliRunner

    from neuronatlas.cli import app
    from neuronatlas.describe import labelers

    runner = CliRunner()
    for name, lab in labelers().items():
        r = runner.invoke(app, ["describe", "--method", name, "--help"], env={"COLUMNS": "200"})
        assert r.exit_code == 0, r.output
        for f in fields(lab.config):
            if f.metadata.get("cli", True):
                assert lab.config.flag(f.name) in r.output, (name, f.name)
    # README's and docs' flags keep their names
    r = runner.invoke(app, ["describe", "--method", "vlm", "--help"], env={"COLUMNS": "200"})
    for flag in ("--vlm", "--llm", "--mode", "--heatmap", "--no-heatmap", "--prompts",
                 "--concurrency", "--k", "--layers", "--data"):
        assert flag in r.output
    r = runner.invoke(app, ["describe", "--help"], env={"COLUMNS": "200"})
    for flag in ("--scorer", "--concepts", "--similarity", "--top", "--layers", "--data"):
        assert flag in r.output
