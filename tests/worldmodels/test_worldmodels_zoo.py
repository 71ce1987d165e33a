"""The committed world models: load offline through load_target, hook points look right, and they
reproduce their model-card metrics on a small held-out sample (within a tolerance)."""

import json
import os

import pytest
import torch

from neuronatlas.worldmodels import weights_dir

TOL = 0.08  # absolute: a sample of ~200 items


def _card_metrics(name):
    path = os.path.join(weights_dir(name), "metrics.json")
    if not os.path.isfile(path):
        pytest.skip(f"{name} has no committed weights yet")
    with open(path) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def clip_target():
    _card_metrics("world-clip")
    from neuronatlas.models import load_target

    torch.set_num_threads(2)
    return load_target("zoo:world-clip", device="cpu")


@pytest.fixture(scope="module")
def llava_target():
    _card_metrics("world-llava")
    from neuronatlas.models import load_target

    torch.set_num_threads(2)
    return load_target("zoo:world-llava", device="cpu")


def test_world_clip_loads_with_vision_mlp_hook_points(clip_target):
    from neuronatlas.backends.scorer import ImageTextScorer

    t = clip_target
    size = t.extras["model"].config.vision_config.image_size
    assert t.spec == "zoo:world-clip" and t.preprocess.size == size and size in (32, 48, 64)
    fc1 = [n for n in t.hook_points if n.endswith("mlp.fc1")]
    assert fc1 == [f"vision_model.encoder.layers.{i}.mlp.fc1" for i in range(4)]
    for n in fc1:
        p = t.hook_points[n]
        assert p.layout.kind == "tokens" and p.layout.grid == (8, 8) and p.layout.cls_index == 0
        assert p.shape == (65, 512)
    assert isinstance(t.extras["scorer"], ImageTextScorer)
    assert {"tokenizer", "model"} <= set(t.extras)
    n_params = sum(p.numel() for p in t.model.parameters())
    assert 1e6 < n_params < 3e6


def test_world_clip_reproduces_card_metrics(clip_target):
    from neuronatlas.worldmodels.train.metrics import clip_eval_pool, clip_zero_shot, image_size

    card = _card_metrics("world-clip")
    model = clip_target.extras["model"]
    m = clip_zero_shot(model, clip_target.extras["tokenizer"], clip_eval_pool(200, size=image_size(model)))
    assert abs(m["color_top1"] - card["color_top1"]) <= TOL, (m, card)
    assert abs(m["shape_top1"] - card["shape_top1"]) <= TOL, (m, card)


def test_world_clip_scorer_ranks_the_right_caption_first():
    """Held-out single-object images rendered at 64 px (the scorer's preprocess resizes them), each
    against its own caption and the captions of 7 other held-out images."""
    _card_metrics("world-clip")
    from neuronatlas.data.world import SceneOptions, caption, render_image, sample_scene
    from neuronatlas.models import load_target

    scorer = load_target("zoo:world-clip", device="cpu").extras["scorer"]
    scenes = [sample_scene(999, i, SceneOptions(n_objects=(1, 1))) for i in range(2000, 2064)]
    images = [render_image(s, 64) for s in scenes]
    caps = [caption(s) for s in scenes]
    emb_i = scorer.encode_pil(images)
    emb_t = scorer.encode_texts(caps)
    assert emb_i.shape == (64, scorer.dim) and torch.allclose(emb_i.norm(dim=-1), torch.ones(64), atol=1e-4)
    hits = 0
    for k in range(64):
        group = [k] + [(k + j * 8 + 1) % 64 for j in range(7)]
        sims = scorer.similarity(emb_i[k:k + 1], emb_t[group])[0]
        hits += int(sims.argmax().item() == 0)
    assert hits / 64 >= 0.6, hits


def test_world_llava_loads_with_vision_mlp_hook_points(llava_target):
    t = llava_target
    size = t.extras["model"].config.vision_config.image_size
    assert t.spec == "zoo:world-llava" and t.preprocess.size == size
    fc1 = [n for n in t.hook_points if n.endswith("mlp.fc1")]
    vision = [n for n in fc1 if "vision_tower" in n]
    assert vision == [f"model.vision_tower.encoder.layers.{i}.mlp.fc1" for i in range(4)]
    p = t.hook_points[vision[0]]
    assert p.layout.kind == "tokens" and p.layout.grid == (8, 8) and p.layout.cls_index == 0
    out = t.forward(torch.zeros(2, 3, size, size))
    assert out.shape[:2] == (2, 65)
    n_params = sum(p.numel() for p in t.model.parameters())
    assert 1e6 < n_params < 4e6


def test_world_llava_reproduces_card_metrics(llava_target):
    from neuronatlas.worldmodels.train.metrics import image_size, llava_eval_pool, llava_qa

    card = _card_metrics("world-llava")
    model = llava_target.extras["model"]
    m = llava_qa(model, llava_target.extras["tokenizer"], llava_eval_pool(60, size=image_size(model)))
    for k in ("presence", "color", "shape"):
        assert m[f"{k}_n"] >= 60
        assert abs(m[f"{k}_acc"] - card[f"{k}_acc"]) <= TOL + 0.02, (k, m, card)
