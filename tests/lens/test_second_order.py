"""The second-order lens against brute force: the library's own forward, a frozen-statistics
intervention, and the reference's per-image, per-head loop."""

import copy

import pytest
import torch

from neuronatlas.errors import UserError
from neuronatlas.lens import ClipViT, SecondOrderLens, naive_effects

NEURONS = [0, 7, 301]


def _pixels(target, n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = target.preprocess.size
    return torch.randn(n, 3, s, s, generator=g)


@pytest.fixture(scope="module", params=["b32", "world"])
def case(request, b32_target, world_clip_target):
    target = b32_target if request.param == "b32" else world_clip_target
    vit = ClipViT.from_target(target)
    layer = vit.n_layers - 3  # two later blocks on B/32: keeps the brute force cheap
    # a float64 copy: the brute-force embedding difference cancels ~5 digits in float32
    vit64 = ClipViT.from_model(copy.deepcopy(target.model).double())
    return request.param, target, vit, vit64, layer


def test_forward_equals_the_library(case):
    _, target, vit, vit64, _ = case
    px = _pixels(target)
    with torch.no_grad():
        ref = target.forward(px)
    assert torch.allclose(vit.forward(px), ref, atol=1e-4 * ref.abs().max().item())
    assert torch.allclose(vit64.forward(px.double()).float(), ref, atol=1e-4 * ref.abs().max().item())


def test_trace_matches_forward(case):
    _, target, vit, _, layer = case
    px = _pixels(target)
    tr = vit.trace(px, layer)
    assert torch.allclose(tr.embedding, vit.forward(px), atol=1e-6)
    assert tr.acts_BTN.shape[-1] == vit.n_neurons and set(tr.attn_cls) == set(range(layer + 1, vit.n_layers))
    assert torch.allclose(tr.attn_cls[layer + 1].sum(-1), torch.ones(1), atol=1e-5)


@pytest.mark.parametrize("scale", ["norm100", "none"])
def test_effect_equals_frozen_intervention(case, scale, frozen_intervention):
    """With attention and LN std frozen, removing a neuron's write from the later heads' values
    changes the embedding by exactly its analytic second-order effect."""
    _, target, _, vit, layer = case
    lens = SecondOrderLens(vit, layer, scale=scale)
    px = _pixels(target, n=3, seed=1).double()
    co = lens.coefficients(px)
    eff = lens.effects(co, NEURONS)
    for j, n in enumerate(NEURONS):
        truth = frozen_intervention(vit, px, layer, [n], co.scale)
        tol = 1e-4 * truth.abs().max().item()
        assert truth.abs().max() > 0
        assert torch.allclose(eff[:, j], truth, atol=tol), (eff[:, j] - truth).abs().max()
    # linear: the effect of a group of neurons is the sum of their effects
    truth = frozen_intervention(vit, px, layer, NEURONS, co.scale)
    assert torch.allclose(eff.sum(1), truth, atol=1e-4 * truth.abs().max().item())


def test_equals_the_reference_loop_in_float64(case):
    """Summing over heads and layers through the factored form == the per-image, per-head loop."""
    _, target, _, vit, layer = case
    lens = SecondOrderLens(vit, layer)
    px = _pixels(target, n=2, seed=2).double()
    ours = lens.effects(lens.coefficients(px), NEURONS)
    ref = naive_effects(lens, px, NEURONS)
    assert torch.allclose(ours, ref, rtol=1e-9, atol=1e-12 * ref.abs().max().item())
    per_head = lens.effects_per_head(px, NEURONS)
    assert torch.allclose(per_head.sum(2), ours, atol=1e-12 * ref.abs().max().item())


def test_token_maps_sum_to_the_projected_effect(case):
    _, target, vit, _, layer = case
    lens = SecondOrderLens(vit, layer)
    px = _pixels(target, n=2, seed=3)
    eff = lens.effects(lens.coefficients(px), NEURONS)
    d = torch.randn(vit.out_dim, generator=torch.Generator().manual_seed(0))
    maps = lens.token_maps(px, d, NEURONS)
    T = lens.trace(px).acts_BTN.shape[1]
    assert maps.shape == (2, len(NEURONS), T)
    assert torch.allclose(maps.sum(-1), eff @ d, atol=1e-4 * (eff @ d).abs().max().item())
    per_image = torch.stack([d, -2 * d])  # one direction per image
    maps2 = lens.token_maps(px, per_image, NEURONS)
    assert torch.allclose(maps2[1], -2 * maps[1], atol=1e-5 * maps.abs().max().item())
    with pytest.raises(UserError, match="direction must have shape"):
        lens.token_maps(px, torch.zeros(3, vit.out_dim), NEURONS)


def test_unit_layer_names_are_hook_points(b32_target, world_clip_target):
    for target, name in ((b32_target, "visual.transformer.resblocks.9.mlp.gelu"),
                         (world_clip_target, "vision_model.encoder.layers.2.mlp.activation_fn")):
        vit = ClipViT.from_target(target)
        idx = int(name.split(".")[-3])
        assert vit.unit_layer(idx) == name and name in target.hook_points
        assert vit.layer_index(name) == idx == vit.layer_index(str(idx))
        assert vit.layer_index(name.rsplit(".", 1)[0] + (".c_fc" if "resblocks" in name else ".fc1")) == idx
    assert ClipViT.from_target(b32_target).layer_index(-2) == 10


def test_bad_layers_and_models(b32_target):
    vit = ClipViT.from_target(b32_target)
    with pytest.raises(UserError, match="out of range.*12 blocks"):
        vit.layer_index(12)
    with pytest.raises(UserError, match="last block"):
        vit.layer_index(11)
    with pytest.raises(UserError, match="did you mean.*resblocks.9.mlp.gelu"):
        vit.layer_index("visual.transformer.resblocks.9.mlp.gelu_x")
    with pytest.raises(UserError, match="unknown effect scale"):
        SecondOrderLens(vit, 3, scale="unit")
    with pytest.raises(UserError, match="not a CLIP vision transformer"):
        ClipViT.from_model(torch.nn.Sequential(torch.nn.Linear(2, 2)), spec="tiny")
