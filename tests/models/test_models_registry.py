"""Spec parsing, zoo / file dispatch, user errors, and fast offline failures (nothing downloads)."""

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
import torch

from neuronatlas.errors import UserError
from neuronatlas.models import format_layers, load_target, registry
from neuronatlas.models import weights as weights_lookup
from neuronatlas.models.layout import Layout, TokenInfo, infer_layout
from neuronatlas.models.target import Preprocess

torch.set_num_threads(1)


@pytest.mark.parametrize("spec,expected", [
    ("timm:resnet50", ("timm", {"name": "resnet50"})),
    ("torchvision:vit_b_16/IMAGENET1K_V1", ("torchvision", {"name": "vit_b_16", "weights": "IMAGENET1K_V1"})),
    ("torchvision:resnet18", ("torchvision", {"name": "resnet18", "weights": ""})),
    ("open_clip:ViT-B-32/datacomp_xl_s13b_b90k", ("open_clip", {"model": "ViT-B-32", "tag": "datacomp_xl_s13b_b90k"})),
    ("open-clip:ViT-B-32", ("open_clip", {"model": "ViT-B-32", "tag": None})),
    ("open_clip:hf-hub:org/name", ("open_clip", {"model": "hf-hub:org/name", "tag": None})),
    ("hf:openai/clip-vit-base-patch32", ("hf", {"source": "openai/clip-vit-base-patch32", "prompt": None})),
    ("hf:/local/dir", ("hf", {"source": "/local/dir", "prompt": None})),
    ("hf:/d?prompt=is it red?", ("hf", {"source": "/d", "prompt": "is it red?"})),
    ("zoo:mobilenet-v2", ("zoo", {"name": "mobilenet-v2", "prompt": None})),
    ("zoo:world-llava?prompt=a?prompt=b", ("zoo", {"name": "world-llava", "prompt": "a?prompt=b"})),
    ("models/my net.py:build", ("file", {"path": "models/my net.py", "factory": "build"})),
    ("dir/timm:x.py:build", ("file", {"path": "dir/timm:x.py", "factory": "build"})),
])
def test_parse_spec(spec, expected):
    from dataclasses import asdict

    family, parsed = registry.parse_spec(spec)
    assert (family.name, asdict(parsed)) == expected


@pytest.mark.parametrize("spec,says", [
    ("resnet50", "unknown model spec 'resnet50'"), ("keras:resnet50", "unknown model family 'keras'"),
    ("model.py", "unknown model spec"), ("Timn:resnet50", "did you mean timm"),
])
def test_unknown_spec_names_the_valid_forms(spec, says):
    with pytest.raises(UserError) as e:
        load_target(spec)
    msg = str(e.value)
    assert "\n" not in msg and says in msg
    for family in registry.families():  # every family's grammar, so the fix is in the message
        assert family.grammar in msg
    assert "timm:NAME" in msg and "path/to/file.py:factory" in msg


@pytest.mark.parametrize("spec,says", [
    ("timm:", "use timm:NAME[.TAG], e.g. timm:vit_tiny_patch16_224"),
    ("timm:a b", "use timm:NAME[.TAG]"),
    ("torchvision:/X", "use torchvision:NAME[/WEIGHTS]"),
    ("open_clip:ViT-B-32/a/b", "use open_clip:MODEL[/TAG]"),
    ("hf:", "use hf:ORG/NAME or hf:/local/dir"),
    ("zoo:", "known zoo models: "),
    ("zoo:world-llava?prompt= ", "empty prompt"),
    ("model.py:1x", "not a Python function name: use path/to/file.py:factory"),
])
def test_a_malformed_spec_gets_its_familys_grammar(spec, says):
    with pytest.raises(UserError) as e:
        registry.parse_spec(spec)  # syntax only: nothing imported, nothing built
    assert says in str(e.value) and "\n" not in str(e.value)


def test_unknown_zoo_name_lists_the_known_ones(monkeypatch):
    from neuronatlas.models import zoo

    monkeypatch.setitem(zoo.ZOO, "tiny-one", "x:y")
    with pytest.raises(UserError, match="known zoo models: .*tiny-one"):
        load_target("zoo:tiny-on")


def test_zoo_dispatch(monkeypatch, tmp_path):
    (tmp_path / "zoo_entry_mod.py").write_text(
        "import torch\nfrom neuronatlas.models.target import Target, Preprocess\n"
        "def build(weights, random_weights):\n"
        "    m = torch.nn.Conv2d(3, 4, 3)\n"
        "    return Target('x', m, Preprocess(16, (0.5,)*3, (0.5,)*3), m,\n"
        "                  weights='random' if random_weights else 'pkg')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from neuronatlas.models import zoo

    monkeypatch.setitem(zoo.ZOO, "tiny-conv", "zoo_entry_mod:build")
    t = load_target("zoo:tiny-conv", random_weights=True)
    assert t.spec == "zoo:tiny-conv" and t.weights == "random"
    assert t.hook_points == {}  # the root module is not a hook point


# -- path/to/file.py:factory ------------------------------------------------------------------------
FACTORIES = '''
import torch
from torch import nn
from neuronatlas.models.target import Preprocess, Target


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, stride=2, padding=1)
        self.act = nn.ReLU(inplace=True)
        self.mix = nn.Linear(6, 10)  # applied channels-last, like a ConvNeXt MLP
        self.drop = nn.Dropout(0.1)
        self.fc = nn.Linear(10, 3)

    def forward(self, x):
        x = self.act(self.conv(x))
        x = self.drop(self.mix(x.permute(0, 2, 3, 1)))
        return self.fc(x.mean((1, 2)))


def bare():
    return Net()


def pair():
    return Net(), Preprocess(size=32, mean=(0.5,) * 3, std=(0.5,) * 3)


def target(random_weights=False):
    m = Net()
    return Target("ignored", m, Preprocess(size=16, mean=(0.5,) * 3, std=(0.5,) * 3), m,
                  weights="random" if random_weights else "mine")


def not_a_model():
    return 42
'''


@pytest.fixture
def factory_file(tmp_path):
    path = tmp_path / "factories.py"
    path.write_text(FACTORIES)
    return path


def test_file_factory_bare_module_gets_imagenet_preprocessing(factory_file):
    t = load_target(f"{factory_file}:bare")
    assert t.preprocess == Preprocess(224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 256, "bilinear")
    assert "ImageNet 224" in t.family and t.weights == "factory" and not t.model.training
    assert t.extras["preprocess_assumed"]
    hp = t.hook_points
    assert set(hp) == {"conv", "act", "mix", "fc"}  # eval Dropout only aliases `mix`
    assert not t.model.act.inplace  # else a hook on `conv` would read post-ReLU values
    assert hp["conv"].layout == Layout("conv", 6, 112 * 112, (112, 112))
    mix = hp["mix"].layout
    assert hp["mix"].shape == (112, 112, 10)
    assert (mix.kind, mix.n_units, mix.grid, mix.channels_last) == ("conv", 10, (112, 112), True)
    assert hp["fc"].layout.kind == "vector"


def test_channels_last_canonical_and_spatial_map():
    x = torch.randn(2, 5, 5, 7)
    lay = infer_layout(tuple(x.shape), 2, None)
    assert lay.channels_last and lay.n_units == 7
    acts = lay.canonical(x)
    assert acts.shape == (2, 7, 25)
    assert torch.equal(lay.spatial_map(acts), x.permute(0, 3, 1, 2))
    assert Layout.from_json(lay.to_json()) == lay


def test_file_factory_pair_target_and_random(factory_file):
    t = load_target(f"{factory_file}:pair")
    assert t.preprocess.size == 32 and t.hook_points["conv"].layout.grid == (16, 16)
    torch.manual_seed(0)
    r1 = load_target(f"{factory_file}:pair", random_weights=True)
    torch.manual_seed(0)
    r2 = load_target(f"{factory_file}:pair", random_weights=True)
    assert r1.weights == "random" and torch.equal(r1.model.conv.weight, r2.model.conv.weight)
    t = load_target(f"{factory_file}:target", random_weights=True)
    assert t.spec == f"{factory_file}:target" and t.weights == "random"
    assert t.hook_points["conv"].layout.grid == (8, 8)


def test_file_factory_errors(factory_file, tmp_path):
    with pytest.raises(UserError, match="no function 'nope'.*bare, pair, target"):
        load_target(f"{factory_file}:nope")
    with pytest.raises(UserError, match="returned int"):
        load_target(f"{factory_file}:not_a_model")
    with pytest.raises(UserError, match="no file"):
        load_target(f"{tmp_path}/missing.py:build")
    with pytest.raises(UserError, match="do not exist"):
        load_target(f"{factory_file}:bare", weights=str(tmp_path / "nope.pt"))
    with pytest.raises(UserError, match="takes no `weights`"):
        load_target(f"{factory_file}:bare", weights=str(factory_file))


def test_format_layers_one_line_per_hook_point(factory_file):
    t = load_target(f"{factory_file}:pair")
    lines = format_layers(t)
    assert [l.split()[0] for l in lines] == list(t.hook_points)
    conv = lines[0].split()
    assert conv[:6] == ["conv", "(6,", "16,", "16)", "conv", "6"] and "units" in lines[0]
    assert "channels last" in lines[2]


def test_infer_layout_token_cases():
    info = TokenInfo(n_prefix=5, cls_index=0, register_indices=(1, 2, 3, 4), grid=(4, 4))
    full = infer_layout((2, 21, 8), 2, info)
    assert (full.grid, full.cls_index, full.register_indices) == ((4, 4), 0, (1, 2, 3, 4))
    assert infer_layout((2, 16, 8), 2, info).cls_index is None  # patches only (LLaVA projector)
    pooled = infer_layout((2, 1, 8), 2, info)  # attention-pool query: no grid invented
    assert pooled.kind == "tokens" and pooled.grid is None
    seq = infer_layout((50, 2, 8), 2, None)
    assert seq.seq_first and seq.grid == (7, 7) and seq.cls_index == 0
    assert infer_layout((1, 50, 8), 2, None) is None  # position embeddings: no batch axis


# -- weights that are not there: one line, quickly ---------------------------------------------------
@pytest.mark.parametrize("spec", ["timm:resnet18", "open_clip:ViT-B-32/openai",
                                  "hf:openai/clip-vit-base-patch32", "torchvision:resnet18"])
def test_missing_offline_weights_fail_fast_in_one_line(spec):
    start = time.monotonic()
    with pytest.raises(UserError) as e:
        load_target(spec)
    msg = str(e.value)
    assert time.monotonic() - start < 20
    assert "\n" not in msg and spec in msg and "--weights PATH" in msg and "--random-weights" in msg
    assert ".cache" in msg  # where it looked


def test_cache_miss_without_offline_flag_probes_the_network(monkeypatch):
    """Without HF_HUB_OFFLINE the cache is still tried first, then the network only if reachable."""
    from huggingface_hub import constants

    for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "NEURONATLAS_OFFLINE"):
        monkeypatch.delenv(k, raising=False)
    before = constants.HF_HUB_OFFLINE
    probed = []
    monkeypatch.setattr(weights_lookup, "reachable", lambda url, timeout=3.0: probed.append(url) or False)
    with pytest.raises(UserError, match="no weights for timm:resnet18"):
        load_target("timm:resnet18")
    assert probed and constants.HF_HUB_OFFLINE == before


def test_missing_model_names_suggest_near_matches():
    with pytest.raises(UserError, match="did you mean: resnet18"):
        load_target("torchvision:resnet1", random_weights=True)
    with pytest.raises(UserError, match="did you mean: vit_tiny_patch16_224"):
        load_target("timm:vit_tiny_patch16_22", random_weights=True)
    with pytest.raises(UserError, match="unknown pretrained tag 'bogus'.*a1_in1k"):
        load_target("timm:resnet18.bogus", random_weights=True)
    with pytest.raises(UserError, match="choose one of: IMAGENET1K_V1"):
        load_target("torchvision:resnet18/V9", random_weights=True)


@settings(max_examples=40, deadline=None)
@given(n_prefix=st.integers(0, 5), h=st.integers(1, 6), w=st.integers(1, 6), d=st.integers(1, 9),
       seq_first=st.booleans())
def test_token_layout_round_trip(n_prefix, h, w, d, seq_first):
    """canonical + spatial_map == hand reshapes, for any prefix / grid / order."""
    info = TokenInfo(n_prefix, 0 if n_prefix else None, tuple(range(1, n_prefix)), (h, w))
    x = torch.randn(2, n_prefix + h * w, d)
    raw = x.permute(1, 0, 2) if seq_first else x
    lay = infer_layout(tuple(raw.shape), 2, info)
    if lay.seq_first != seq_first:  # a (2, 2, d) tensor is ambiguous; the adapters never make one
        assert n_prefix + h * w == 2
        return
    acts = lay.canonical(raw)
    assert torch.equal(acts, x.transpose(1, 2))
    assert torch.equal(lay.spatial_map(acts), x[:, n_prefix:].reshape(2, h, w, d).permute(0, 3, 1, 2))
