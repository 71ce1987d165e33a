"""The model-family contract: a family is one module that registers itself, owns its spec grammar and
builds the Target. A toy family added from outside (an installed plugin, found by its entry point)
records through the real CLI; a bad spec is one line through the real CLI; a name is owned once."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import neuronatlas as na
from neuronatlas.errors import UserError
from neuronatlas.models import load_target, registry
from neuronatlas.models.family import FAMILIES, BuildOptions, ModelFamily, model_family, unregister
from neuronatlas.models.target import Preprocess, Target

torch.set_num_threads(1)
CLI = [sys.executable, "-m", "neuronatlas.cli"]

# A family outside the package: `toy:conv/C` is a real random conv net with C output channels,
# seeded by C (a family owns what its spec means: here the width and the seed).
TOY = '''
from dataclasses import dataclass

import torch
from torch import nn

from neuronatlas.errors import UserError
from neuronatlas.models.family import BuildOptions, ModelFamily, model_family
from neuronatlas.models.target import Preprocess, Target


@dataclass(frozen=True)
class ToySpec:
    channels: int


def net(channels):
    torch.manual_seed(channels)
    return nn.Sequential(nn.Conv2d(3, channels, 3, stride=2, padding=1), nn.ReLU())


@model_family
class Toy(ModelFamily):
    name = "toy"
    grammar = "toy:conv/CHANNELS"
    example = "toy:conv/4"

    def parse(self, rest):
        kind, _, n = rest.partition("/")
        if kind != "conv" or not n.isdigit() or int(n) < 1:
            raise UserError(f"bad toy spec 'toy:{rest}': use {self.grammar}, e.g. {self.example}")
        return ToySpec(int(n))

    def build(self, spec, how):
        m = net(spec.channels)
        return Target(how.spec, m, Preprocess(16, (0.5,) * 3, (0.5,) * 3, interpolation="bilinear"),
                      m, weights="random" if how.random_weights else f"seed {spec.channels}",
                      family="toy")
'''


@pytest.fixture
def plugin_dir(tmp_path):
    """An installed plugin: its module and a dist-info whose entry point names it (what
    `pip install` of a package declaring [project.entry-points."neuronatlas.model_families"] writes)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "toy_family.py").write_text(TOY)
    info = site / "toy_family-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-family\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{registry.ENTRY_POINT_GROUP}]\ntoy = toy_family\n")
    return site


def cli(*args, site=None):
    path = os.pathsep.join(p for p in (str(site) if site else "", os.environ.get("PYTHONPATH", ""))
                           if p)
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": path})


def test_a_plugin_family_records_through_the_cli(plugin_dir, tmp_path):
    out = tmp_path / "run"
    r = cli("record", "toy:conv/5", "--data", "world:n=12,size=16,seed=1", "--layers", "1",
            "--out", out, "--k", "3", "--batch-size", "5", "--save-acts", "--quiet", site=plugin_dir)
    assert r.returncode == 0, r.stderr
    run = na.open_run(out)
    assert run.meta["model"]["family"] == "toy" and run.meta["model"]["spec"] == "toy:conv/5"
    assert run.meta["model"]["weights"] == "seed 5"
    # the recording is the toy net's: brute force over the same images (mean over positions)
    sys.path.insert(0, str(plugin_dir))
    try:
        import toy_family
    finally:
        sys.path.remove(str(plugin_dir))
    model = toy_family.net(5).eval()
    probe = na.open_probe("world:n=12,size=16,seed=1")
    pre = Preprocess(16, (0.5,) * 3, (0.5,) * 3, interpolation="bilinear")
    with torch.no_grad():
        want = model(torch.stack([pre(probe.read_image(i)) for i in range(12)])).mean((2, 3))
    np.testing.assert_allclose(run.acts("1"), want.numpy(), rtol=1e-5, atol=1e-6)
    top = run.topk("1:2", 3)["index"].tolist()
    assert top == np.argsort(-want[:, 2].numpy(), kind="stable")[:3].tolist()
    # the same plugin's grammar errors come through the CLI as one line
    r = cli("layers", "toy:conv/x", site=plugin_dir)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert r.stderr.strip() == "error: bad toy spec 'toy:conv/x': use toy:conv/CHANNELS, e.g. toy:conv/4"
    # and `layers --help` lists its grammar with the built-in ones (no hand-kept list of forms)
    r = cli("layers", "--help", site=plugin_dir)
    helptext = " ".join(r.stdout.replace("│", " ").split())
    assert r.returncode == 0 and "toy:conv/CHANNELS" in helptext and "timm:NAME[.TAG]" in helptext


@pytest.mark.parametrize("spec, says", [
    ("keras:resnet50", "unknown model family 'keras'"),
    ("tim:resnet50", "did you mean timm"),
    ("timm:", "bad timm spec 'timm:': use timm:NAME[.TAG]"),
])
def test_a_bad_spec_is_one_line_through_the_cli(spec, says, tmp_path):
    r = cli("record", spec, "--data", "world:n=4,size=16", "--layers", "x", "--out", tmp_path / "r")
    assert r.returncode != 0
    assert "Traceback" not in r.stderr + r.stdout
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], r.stderr
    if "family" in says:  # an unknown family lists the known ones, with their grammar
        for grammar in ("timm:NAME", "hf:ORG/NAME", "zoo:NAME", "path/to/file.py:factory"):
            assert grammar in lines[0]
    assert not (tmp_path / "r").exists()  # nothing created for a spec that cannot build


def test_a_family_name_is_owned_once():
    registry.load_families()

    with pytest.raises(ValueError, match="'timm' is registered twice"):
        @model_family
        class OtherTimm(ModelFamily):
            name = "timm"
            grammar = "timm:SOMETHING"
    assert type(FAMILIES["timm"]).__module__ == "neuronatlas.models.timm_adapter"

    with pytest.raises(ValueError, match="'open_clip' is registered twice"):  # an alias clashes too
        @model_family
        class Sneaky(ModelFamily):
            name = "sneaky"
            aliases = ("open-clip",)
            grammar = "sneaky:X"
    assert "sneaky" not in FAMILIES  # refused whole: no half-registered family

    with pytest.raises(ValueError, match="needs a name and a grammar"):
        @model_family
        class Nameless(ModelFamily):
            pass


def test_an_in_process_family_dispatches_and_unregisters():
    @model_family
    class Echo(ModelFamily):
        name = "echo"
        grammar = "echo:WIDTH"
        example = "echo:3"

        def parse(self, rest):
            if not rest.isdigit():
                raise UserError(f"bad echo spec: use {self.grammar}")
            return int(rest)

        def build(self, spec, how: BuildOptions):
            m = torch.nn.Conv2d(3, spec, 1)
            return Target(how.spec, m, Preprocess(8, (0.5,) * 3, (0.5,) * 3), m, family="echo")

    try:
        t = load_target("Echo:3", random_weights=True, device="cpu")  # prefixes are case-insensitive
        assert t.family == "echo" and t.spec == "Echo:3" and t.model.out_channels == 3
        assert "echo:WIDTH" in registry.forms()
        with pytest.raises(UserError, match="bad echo spec"):
            load_target("echo:x")
    finally:
        unregister("echo")
    with pytest.raises(UserError, match="unknown model family 'echo'"):
        load_target("echo:3")


def test_parse_is_syntax_only(monkeypatch):
    """Parsing a spec imports no model library (a typo is caught before seconds of imports)."""
    code = textwrap.dedent("""
        import sys
        from neuronatlas.models import registry
        for s in ["timm:resnet50", "open_clip:ViT-B-32/openai", "hf:a/b", "torchvision:resnet18"]:
            registry.parse_spec(s)
        print(sorted(m for m in ("timm", "open_clip", "transformers") if m in sys.modules))
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
