"""worldmodels/arch (inference) apart from worldmodels/train (plans as data, one loop): the committed
weights give the outputs they gave before the split, inference never imports training code, and the
plans are plain data."""

import json
import os
import subprocess
import sys

import pytest
import torch

from neuronatlas.worldmodels import weights_dir

# recorded with the pre-split code (commit 5af461d) on world seed 999, scenes 0-5, rendered at 64 px
CLIP_IMG_3 = [0.0478, 0.1404, -0.1047, 0.067, 0.1032, -0.0979, 0.0684, 0.1193, -0.0412, -0.0086, 0.0711,
              -0.0568, -0.0294, 0.0038, -0.1019, -0.0668, 0.1707, -0.0249]
CLIP_TXT_3 = [0.0953, -0.0045, -0.0516, -0.0363, -0.0148, 0.0394, 0.066, -0.0431, 0.0582]
LLAVA_QUESTIONS = ["is there a red circle?", "what color is the circle?", "what shape is the red thing?",
                   None, "how many objects are there?", "what shape is on the left?"]
LLAVA_ANSWERS = ["no", "white", "triangle", "a small white", "three", "circle"]
LLAVA_CAPTION_0 = ("a medium orange vertically striped star on the left and a large brown vertically "
                   "striped triangle in the center and a small white horizontally striped star on the "
                   "right on a grass background")


def _committed(name):
    if not os.path.isfile(os.path.join(weights_dir(name), "model.safetensors")):
        pytest.skip(f"{name} has no committed weights")


def test_committed_world_models_give_the_outputs_they_gave_before_the_split():
    _committed("world-clip")
    _committed("world-llava")
    from neuronatlas.data.world import caption
    from neuronatlas.models import load_target
    from neuronatlas.worldmodels.arch.llava import answer_batch, generate_caption
    from neuronatlas.worldmodels.train import data as D

    torch.set_num_threads(2)
    pool = D.render_pool(999, 0, 6, None, size=64)
    pixels = pool.pixels(torch.arange(6))
    scorer = load_target("zoo:world-clip").extras["scorer"]
    img = scorer.encode_images(pixels)[:, :3].flatten()
    txt = scorer.encode_texts([caption(s) for s in pool.scenes[:3]])[:, :3].flatten()
    assert torch.allclose(img, torch.tensor(CLIP_IMG_3), atol=1e-4)
    assert torch.allclose(txt, torch.tensor(CLIP_TXT_3), atol=1e-4)
    llava = load_target("zoo:world-llava")
    model, tok = llava.extras["model"], llava.extras["tokenizer"]
    assert answer_batch(model, tok, pixels, LLAVA_QUESTIONS, 3) == LLAVA_ANSWERS
    assert generate_caption(model, tok, pixels[:1]) == [LLAVA_CAPTION_0]


def test_inference_never_imports_training_code():
    """Loading both zoo models, the world-llava chat client and VLM subject, and scoring with
    world-clip leave neuronatlas.worldmodels.train unimported."""
    _committed("world-clip")
    _committed("world-llava")
    code = """
import sys, torch
torch.set_num_threads(1)
from neuronatlas.models import load_target
t = load_target("zoo:world-clip")
t.extras["scorer"].encode_texts(["a red thing"])
load_target("zoo:world-llava")
from neuronatlas.backends.world_llava import WorldLlavaClient
from neuronatlas.vlm.subject import load_subject
WorldLlavaClient()
load_subject("zoo:world-llava")
print(sorted(m for m in sys.modules if m.startswith("neuronatlas.worldmodels")))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(
                             os.path.dirname(os.path.abspath(__file__))))))
    assert out.returncode == 0, out.stderr[-2000:]
    loaded = eval(out.stdout.strip().splitlines()[-1])
    assert "neuronatlas.worldmodels.arch.llava" in loaded
    assert not [m for m in loaded if m.startswith("neuronatlas.worldmodels.train")], loaded


def test_plans_are_data_next_to_the_weights_and_the_committed_ones_made_them():
    """Every plan is read from weights/NAME/plans.json (plain JSON data); the committed plan is the
    one in the committed checkpoint's plan.json, and its input size is the checkpoint's."""
    from neuronatlas.worldmodels.arch.clip import COMMITTED_PATCH, COMMITTED_SIZE
    from neuronatlas.worldmodels.train.plans import (CLIP_PLAN, CLIP_PLANS, LLAVA_PLAN, LLAVA_PLANS, PLAN_FILE,
                                                     PLANS_FILE, read_plans, resolve_plan)

    for name, plans, committed in [("world-clip", CLIP_PLANS, CLIP_PLAN), ("world-llava", LLAVA_PLANS, LLAVA_PLAN)]:
        with open(os.path.join(weights_dir(name), PLANS_FILE)) as f:
            doc = json.load(f)
        assert doc["plans"] == plans and doc["plans"][doc["committed"]] == committed
        assert set(doc["notes"]) == set(plans)  # every plan says what it tried
        assert read_plans(name)[1] == doc["committed"]
        path = os.path.join(weights_dir(name), PLAN_FILE)
        if os.path.isfile(os.path.join(weights_dir(name), "model.safetensors")):
            with open(path) as f:
                assert json.load(f) == json.loads(json.dumps(resolve_plan(name)))
    assert (CLIP_PLANS["v4"], LLAVA_PLANS["v9"]) == (CLIP_PLAN, LLAVA_PLAN)
    assert (CLIP_PLAN["image_size"], CLIP_PLAN["patch"]) == (COMMITTED_SIZE, COMMITTED_PATCH)
    path = os.path.join(weights_dir("world-clip"), "config.json")
    if os.path.isfile(path):
        with open(path) as f:
            vision = json.load(f)["vision_config"]
        assert (vision["image_size"], vision["patch_size"]) == (COMMITTED_SIZE, COMMITTED_PATCH)


def test_a_trained_checkpoint_gets_its_plan_next_to_it(tmp_path, monkeypatch):
    """finish() (what `zoo train` runs after the loop) writes OUT/plan.json, the full plan, with the
    options a plan left out filled in (an earlier llava plan: binding off), next to the checkpoint,
    its metrics and its card. A tiny random world-llava, evaluated on 8 held-out scenes."""
    from neuronatlas.worldmodels.arch.checkpoint import save
    from neuronatlas.worldmodels.arch.clip import TINY, build_model as build_clip
    from neuronatlas.worldmodels.arch.llava import TINY_TEXT, build_model
    from neuronatlas.worldmodels.arch.tokenizer import build_tokenizer
    from neuronatlas.worldmodels.train import commands
    from neuronatlas.worldmodels.train.plans import LLAVA_PLANS, PLAN_FILE, resolve_plan

    torch.set_num_threads(1)
    out = str(tmp_path / "llava")
    save(build_model(build_clip(TINY), TINY_TEXT), build_tokenizer(), out)
    real = commands.evaluate
    monkeypatch.setattr(commands, "evaluate", lambda name, weights: real(name, weights, n=8))
    commands.finish("world-llava", out, [dict(step=1, loss=1.0)], 1.0, 0, 1, LLAVA_PLANS["v2"],
                    log=lambda *a: None)
    with open(os.path.join(out, PLAN_FILE)) as f:
        back = json.load(f)
    assert back == json.loads(json.dumps(resolve_plan("world-llava", LLAVA_PLANS["v2"])))
    assert back["bind_weight"] == 0.0 and back["steps"] == LLAVA_PLANS["v2"]["steps"]
    assert {"metrics.json", "MODEL_CARD.md", "train_log.jsonl"} <= set(os.listdir(out))


def test_zoo_train_through_the_main_cli_names_the_plans():
    from typer.testing import CliRunner

    from neuronatlas.cli import app

    res = CliRunner().invoke(app, ["zoo", "train", "world-llava", "--plan", "v99", "--out", "/nonexistent"])
    assert res.exit_code != 0 and "v9" in res.output and "v99" in res.output
