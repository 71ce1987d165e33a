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


def _layer_scale_vit():
    """A bare open_clip VisionTransformer with (non-trivial) layer scales on both branches."""
    from types import SimpleNamespace

    from open_clip.transformer import VisionTransformer

    from neuronatlas.models.target import Preprocess

    torch.manual_seed(0)
    v = VisionTransformer(image_size=32, patch_size=8, width=64, layers=4, heads=4, mlp_ratio=8,
                          ls_init_value=0.5, output_dim=16).eval()
    with torch.no_grad():
        for blk in v.transformer.resblocks:
            blk.ls_1.gamma.normal_()
            blk.ls_2.gamma.normal_()
    return SimpleNamespace(model=v, forward=v, preprocess=Preprocess(32, (0.5,) * 3, (0.5,) * 3))


@pytest.fixture(scope="module", params=["b32", "world", "layer-scale"])
def case(request, b32_target, world_clip_target):
    target = {"b32": b32_target, "world": world_clip_target}.get(request.param) or _layer_scale_vit()
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


def test_transformers_checkpoint_directory_and_vision_only_models(tmp_path, frozen_intervention):
    """hf:DIR (a saved CLIPModel), CLIPVisionModelWithProjection and a bare CLIPVisionModel."""
    import transformers

    from neuronatlas.lens import SecondOrderConfig, compute_second_order
    from tests.conftest import tiny_hf_clip_target

    target = tiny_hf_clip_target(seed=1, vision_layers=3)
    target.model.save_pretrained(tmp_path / "ckpt")
    cfg = SecondOrderConfig(layer="0", top_k=3, num_workers=0)
    res = compute_second_order(f"hf:{tmp_path / 'ckpt'}", "world:n=6,size=32", tmp_path / "run", cfg,
                               show_progress=False)
    assert res.layer == "vision_model.encoder.layers.0.mlp.activation_fn" and len(res.heads) == 4
    px = _pixels(target, n=2).double()
    vcfg = target.model.config.vision_config
    for cls in (transformers.CLIPVisionModelWithProjection, transformers.CLIPVisionModel):
        torch.manual_seed(2)
        model = cls(vcfg if cls is transformers.CLIPVisionModel else
                    transformers.CLIPVisionConfig(**{**vcfg.to_dict(), "projection_dim": 8})).double().eval()
        vit = ClipViT.from_model(model)
        with torch.no_grad():
            out = model(pixel_values=px)
        ref = out.image_embeds if hasattr(out, "image_embeds") else out.pooler_output
        assert torch.allclose(vit.forward(px), ref, atol=1e-10)
        lens = SecondOrderLens(vit, 0)
        co = lens.coefficients(px)
        truth = frozen_intervention(vit, px, 0, [5], co.scale)
        assert torch.allclose(lens.effects(co, [5])[:, 0], truth, atol=1e-8 * truth.abs().max().item())
