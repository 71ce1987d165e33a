"""Training smoke tests on tiny configs: a few steps, the loss goes down, runs are deterministic."""

import random

import torch

from neuronatlas.worldmodels import data as D

TINY_PLAN = dict(a1_steps=12, a2_steps=0, b_steps=6, batch=32, lr=3e-3, a1_pool=128, a2_pool=128,
                 b_pool=128, single_pool=64, eval_n=40)


def _tiny_clip(seed=0):
    from neuronatlas.worldmodels.clip import TINY, train_clip

    torch.manual_seed(seed)
    return train_clip(None, seed=seed, cfg=TINY, plan=TINY_PLAN, log=lambda *a: None, eval_every=10 ** 6,
                      workers=1)


def test_clip_training_smoke_loss_decreases_and_is_deterministic():
    model, tok, hist = _tiny_clip()
    a1 = [h["loss"] for h in hist if h["phase"] == "A1"]
    b = [h["con"] for h in hist if h["phase"] == "B"]
    assert len(a1) == 12 and len(b) == 6
    assert sum(a1[-3:]) < sum(a1[:3])
    assert all(c > 0 for c in b)  # the contrastive path ran
    _, _, hist2 = _tiny_clip()
    assert [h["loss"] for h in hist2] == [h["loss"] for h in hist]


def test_llava_training_smoke_loss_decreases():
    from neuronatlas.worldmodels.clip import TINY, build_model as build_clip
    from neuronatlas.worldmodels.llava import TINY_TEXT, answer_batch, batch_loss, build_model, sample_items
    from neuronatlas.worldmodels.tokenizer import build_tokenizer

    tok = build_tokenizer()
    clip = build_clip(TINY)
    model = build_model(clip, TINY_TEXT)
    assert model.config.image_seq_length == 65
    tower = model.model.vision_tower
    assert torch.equal(tower.embeddings.patch_embedding.weight, clip.vision_model.embeddings.patch_embedding.weight)
    pool = D.render_pool(10, 0, 16)
    rng = random.Random(0)
    items = [sample_items(s, rng) for s in pool.scenes]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        loss = batch_loss(model, tok, pool.pixels(torch.arange(16)), items)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    model.eval()
    # the shared-vision training path equals the standard forward with pixel_values
    from neuronatlas.worldmodels.llava import answer_ids, prompt_ids

    q, a = items[0][0]
    p, t = prompt_ids(tok, 65, q), answer_ids(tok, a)
    with torch.no_grad():
        l1 = model(input_ids=torch.tensor([p + t]), pixel_values=pool.pixels(torch.arange(1)),
                   labels=torch.tensor([[-100] * len(p) + t])).loss
        l2 = batch_loss(model, tok, pool.pixels(torch.arange(1)), [[(q, a)]])
    assert torch.allclose(l1, l2, atol=1e-5)
    out = answer_batch(model, tok, pool.pixels(torch.arange(2)), ["is there a red circle?", None], 3)
    assert len(out) == 2 and all(isinstance(o, str) for o in out)


def test_clip_shape_first_plan_runs():
    from neuronatlas.worldmodels.clip import PLAN_V2, TINY, train_clip

    plan = dict(TINY_PLAN, a1_steps=4, a2_steps=2, b_steps=2, heads=PLAN_V2["heads"],
                a1_world=PLAN_V2["a1_world"])
    _, _, hist = train_clip(None, cfg=TINY, plan=plan, log=lambda *a: None, eval_every=10 ** 6, workers=1)
    assert [h["phase"] for h in hist] == ["A1"] * 4 + ["A2"] * 2 + ["B"] * 2
    assert all(h["loss"] > 0 for h in hist)


def test_zoo_cli_eval_and_bad_name():
    import json
    import os

    from typer.testing import CliRunner

    from neuronatlas.worldmodels import weights_dir
    from neuronatlas.worldmodels.train import zoo_app

    runner = CliRunner()
    bad = runner.invoke(zoo_app, ["train", "world-nope"])
    assert bad.exit_code != 0
    if not os.path.isfile(os.path.join(weights_dir("world-clip"), "model.safetensors")):
        return
    res = runner.invoke(zoo_app, ["eval", "world-clip", "--n", "40"])
    assert res.exit_code == 0, res.output
    import re

    out = json.loads(re.findall(r"\{[^{}]*\}", res.output)[-1])  # progress bars aside
    assert out["n"] == 40 and 0 <= out["shape_top1"] <= 1 and out["color_top1"] > 0.8
