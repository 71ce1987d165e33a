"""torchvision and timm adapters on real architectures with random weights."""

import pytest
import torch

from neuronatlas.errors import UserError
from neuronatlas.models import format_layers, load_target
from neuronatlas.models.layout import Layout

torch.set_num_threads(1)


def raw_output(target, name, x):
    """The module's output during target.forward, copied at hook time."""
    got = {}
    module = dict(target.model.named_modules())[name]
    h = module.register_forward_hook(
        lambda _m, _i, out: got.setdefault("x", (out[0] if isinstance(out, tuple) else out).clone()))
    try:
        with torch.no_grad():
            target.forward(x)
    finally:
        h.remove()
    return got["x"]


def check_round_trip(target, name, n_prefix=0):
    """canonical() and spatial_map() agree with hand-written reshapes of the raw output."""
    point = target.hook_points[name]
    x = torch.randn(2, 3, target.preprocess.size, target.preprocess.size)
    raw = raw_output(target, name, x)
    assert tuple(raw.shape[1:]) == point.shape
    acts = point.layout.canonical(raw)
    h, w = point.layout.grid
    if point.layout.kind == "conv":
        assert torch.equal(acts, raw.reshape(2, raw.shape[1], -1))
        assert torch.equal(point.layout.spatial_map(acts), raw)
    else:
        assert torch.equal(acts, raw.permute(0, 2, 1))
        patches = raw[:, n_prefix:, :].reshape(2, h, w, -1).permute(0, 3, 1, 2)
        assert torch.equal(point.layout.spatial_map(acts), patches)


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return load_target("torchvision:resnet18", random_weights=True)


@pytest.fixture(scope="module")
def vit_tiny():
    torch.manual_seed(0)
    return load_target("timm:vit_tiny_patch16_224", random_weights=True)


def test_torchvision_resnet(resnet):
    t = resnet
    assert (t.family, t.weights, t.spec) == ("torchvision", "random", "torchvision:resnet18")
    assert t.device.type == "cpu" and not t.model.training and t.tokens is None
    assert t.preprocess.to_json() == {"size": 224, "mean": (0.485, 0.456, 0.406),
                                      "std": (0.229, 0.224, 0.225), "resize": 256,
                                      "interpolation": "bilinear"}
    assert len(t.class_names) == 1000 and t.class_names[0] == "tench"
    hp = t.hook_points
    assert hp["layer4"].shape == (512, 7, 7)
    assert hp["layer4"].layout == Layout("conv", 512, 49, (7, 7))
    assert hp["conv1"].layout.grid == (112, 112)
    assert hp["fc"].layout == Layout("vector", 1000, 1)
    assert hp["layer1.0.relu"].calls == 2 and hp["layer4"].calls == 1  # a shared ReLU
    assert "relu" in hp  # in-place ReLU made out-of-place, so it is its own hook point
    check_round_trip(t, "layer4")
    check_round_trip(t, "layer2.0.conv1")


def test_torchvision_vit_tokens():
    t = load_target("torchvision:vit_b_16", random_weights=True)  # built, never run
    assert t.tokens.grid == (14, 14) and t.tokens.cls_index == 0
    assert t.preprocess.size == 224 and t.preprocess.resize == 256


def test_timm_vit_tiny(vit_tiny):
    t = vit_tiny
    assert t.family == "timm" and t.weights == "random"
    p = t.preprocess
    assert (p.size, p.resize, p.mean, p.std, p.interpolation) == (224, 248, (0.5,) * 3, (0.5,) * 3,
                                                                    "bicubic")
    assert t.class_names[:2] == ["tench", "goldfish"] and len(t.class_names) == 1000
    fc1 = t.hook_points["blocks.9.mlp.fc1"]
    assert fc1.shape == (197, 768)
    assert fc1.layout == Layout("tokens", 768, 197, (14, 14), 0, ())
    assert t.hook_points["patch_embed"].layout.cls_index is None  # patches only
    assert t.hook_points["head"].layout.kind == "vector"
    assert "blocks.0.ls1" not in t.hook_points and "pos_drop" not in t.hook_points  # identities
    chosen = t.select("blocks.*.mlp.fc1")
    assert [c.name for c in chosen] == [f"blocks.{i}.mlp.fc1" for i in range(12)]
    assert [c.name for c in t.select("head,blocks.0.attn.qkv")] == ["blocks.0.attn.qkv", "head"]
    check_round_trip(t, "blocks.9.mlp.fc1", n_prefix=1)


def test_unknown_layer_lists_near_matches(vit_tiny):
    with pytest.raises(UserError) as e:
        vit_tiny.select("blocks.9.mlp.fc3")
    msg = str(e.value)
    assert "did you mean" in msg and "blocks.9.mlp.fc1" in msg and "neuronatlas layers" in msg


def test_format_layers_timm(vit_tiny):
    lines = format_layers(vit_tiny)
    line = next(l for l in lines if l.startswith("blocks.9.mlp.fc1 "))
    assert line.split()[:6] == ["blocks.9.mlp.fc1", "(197,", "768)", "tokens", "768", "units"]
    assert "grid 14x14" in line and "cls 0" in line


def test_timm_registers_without_cls():
    torch.manual_seed(0)
    t = load_target("timm:vit_wee_patch16_reg1_gap_256", random_weights=True)
    assert t.preprocess.size == 256
    fc1 = t.hook_points["blocks.3.mlp.fc1"].layout
    assert (fc1.n_positions, fc1.grid, fc1.cls_index, fc1.register_indices) == (257, (16, 16), None,
                                                                                 (0,))
    check_round_trip(t, "blocks.3.mlp.fc1", n_prefix=1)


def test_timm_cls_and_four_registers():
    """A DINOv2-with-registers ViT (built small: img_size 56 -> a 4x4 grid)."""
    import timm

    from neuronatlas.models.timm_adapter import target_from_timm_model

    torch.manual_seed(0)
    m = timm.create_model("vit_small_patch14_reg4_dinov2", pretrained=False, img_size=56)
    t = target_from_timm_model(m, spec="timm:vit_small_patch14_reg4_dinov2")
    assert t.preprocess.size == 56 and t.preprocess.mean == (0.485, 0.456, 0.406)
    lay = t.hook_points["blocks.5.mlp.fc1"].layout
    assert (lay.n_positions, lay.grid, lay.cls_index, lay.register_indices) == (21, (4, 4), 0,
                                                                                (1, 2, 3, 4))
    assert t.class_names is None  # no classifier head
    check_round_trip(t, "blocks.5.mlp.fc1", n_prefix=5)


def test_timm_weights_file_round_trip(tmp_path):
    import timm

    torch.manual_seed(0)
    m = timm.create_model("resnet10t", pretrained=False)
    path = tmp_path / "r10.pth"
    torch.save(m.state_dict(), path)
    t = load_target("timm:resnet10t", weights=str(path))
    assert t.weights == str(path)
    assert torch.equal(t.model.fc.weight, m.fc.weight)


def test_torchvision_weights_file(tmp_path, resnet):
    path = tmp_path / "r18.pth"
    torch.save({"state_dict": resnet.model.state_dict()}, path)
    t = load_target("torchvision:resnet18", weights=str(path))
    assert t.weights == str(path) and torch.equal(t.model.fc.weight, resnet.model.fc.weight)
    bad = tmp_path / "bad.pth"
    torch.save({"fc.weight": torch.zeros(3, 3)}, bad)
    with pytest.raises(UserError, match="do not fit torchvision:resnet18"):
        load_target("torchvision:resnet18", weights=str(bad))
