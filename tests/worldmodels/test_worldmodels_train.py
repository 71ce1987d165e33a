"""Training smoke tests on tiny configs: a few steps, the loss goes down, runs are deterministic."""

import random

import torch

from neuronatlas.worldmodels.train import data as D

HEADS = dict(slot=1.0, patch=1.0, present=1.0)
TINY_PLAN = dict(
    image_size=32, patch=4, batch=32, lr=3e-3, warmup=4,
    pools=dict(single=dict(offset=500, n=64, world=dict(n_objects=[1, 1])), full=dict(offset=0, n=128, world=None)),
    phases=[dict(name="A", steps=12, mix=dict(single=0.5, full=0.5), heads=HEADS),
            dict(name="B", steps=6, mix=dict(single=0.25, full=0.75), heads=HEADS, contrastive=True)],
    eval_n=40, eval_every=10 ** 6, checkpoint_every=5)


def _tiny_clip(seed=0, out_dir=None, **kw):
    from neuronatlas.worldmodels.arch.clip import TINY
    from neuronatlas.worldmodels.train.clip import train_clip

    torch.manual_seed(seed)
    return train_clip(out_dir, seed=seed, cfg=TINY, plan=TINY_PLAN, log=lambda *a: None, workers=1, **kw)


def test_clip_training_smoke_loss_decreases_and_is_deterministic():
    model, tok, hist = _tiny_clip()
    a1 = [h["loss"] for h in hist if h["phase"] == "A"]
    b = [h["con"] for h in hist if h["phase"] == "B"]
    assert len(a1) == 12 and len(b) == 6
    assert sum(a1[-3:]) < sum(a1[:3])
    assert all(c > 0 for c in b)  # the contrastive path ran
    _, _, hist2 = _tiny_clip()
    assert [h["loss"] for h in hist2] == [h["loss"] for h in hist]


def test_llava_training_smoke_loss_decreases():
    from neuronatlas.worldmodels.arch.clip import TINY, build_model as build_clip
    from neuronatlas.worldmodels.arch.llava import TINY_TEXT, answer_batch, build_model
    from neuronatlas.worldmodels.train.llava import batch_loss, sample_items
    from neuronatlas.worldmodels.arch.tokenizer import build_tokenizer

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
    from neuronatlas.worldmodels.arch.llava import answer_ids, prompt_ids

    q, a = items[0][0]
    p, t = prompt_ids(tok, 65, q), answer_ids(tok, a)
    with torch.no_grad():
        l1 = model(input_ids=torch.tensor([p + t]), pixel_values=pool.pixels(torch.arange(1)),
                   labels=torch.tensor([[-100] * len(p) + t])).loss
        l2 = batch_loss(model, tok, pool.pixels(torch.arange(1)), [[(q, a)]])
    assert torch.allclose(l1, l2, atol=1e-5)
    out = answer_batch(model, tok, pool.pixels(torch.arange(2)), ["is there a red circle?", None], 3)
    assert len(out) == 2 and all(isinstance(o, str) for o in out)


def test_clip_training_resumes_exactly_after_interruption(tmp_path):
    """A run stopped at step 13 (its last state checkpoint: step 10) and resumed ends with the same
    losses and weights as an uninterrupted run; the supervised tower is saved for world-llava."""
    import os

    from safetensors.torch import load_file

    from neuronatlas.worldmodels.arch.checkpoint import TOWER_FILE
    from neuronatlas.worldmodels.train.resume import RESUME_FILE

    _, _, ref = _tiny_clip(out_dir=str(tmp_path / "ref"))
    assert os.path.isfile(tmp_path / "ref" / TOWER_FILE) and not os.path.isfile(tmp_path / "ref" / RESUME_FILE)
    out = str(tmp_path / "cut")
    _, _, part = _tiny_clip(out_dir=out, stop_at=13)
    assert len(part) == 13 and os.path.isfile(os.path.join(out, RESUME_FILE))
    import pytest

    from neuronatlas.errors import UserError

    with pytest.raises(UserError, match="another plan"):  # another run's state is not continued
        _tiny_clip(seed=1, out_dir=out)
    _, _, resumed = _tiny_clip(out_dir=out)
    assert [h["loss"] for h in resumed] == [h["loss"] for h in ref]
    assert not os.path.isfile(os.path.join(out, RESUME_FILE))
    a = load_file(str(tmp_path / "ref" / "model.safetensors"))
    b = load_file(os.path.join(out, "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


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
    text = res.output[res.output.rindex('{"color_top1"'):]  # progress bars aside
    out = json.loads(text.splitlines()[0])
    assert out["n"] == 40 and 0 <= out["shape_top1"] <= 1 and out["color_top1"] > 0.8
    by_size = out["by"]["size"]
    assert sum(g["n"] for g in by_size.values()) == 40
    hits = sum(g["shape_top1"] * g["n"] for g in by_size.values())
    assert abs(hits / 40 - out["shape_top1"]) < 0.01  # the breakdown partitions the headline


def test_llava_trains_from_world_clip_warmup_tower(tmp_path):
    """world-llava starts from the tower world-clip saved after its supervised phase (config in the
    file's metadata), trains with the auxiliary scene heads, and keeps the validated checkpoint."""
    import os

    from neuronatlas.worldmodels.arch.checkpoint import TOWER_FILE, load_tower
    from neuronatlas.worldmodels.arch.llava import TINY_TEXT
    from neuronatlas.worldmodels.train.llava import train_llava
    from neuronatlas.worldmodels.train.plans import LLAVA_PLANS

    PLAN_V2 = LLAVA_PLANS["v2"]

    clip_dir = str(tmp_path / "clip")
    _tiny_clip(out_dir=clip_dir)
    vcfg, state = load_tower(os.path.join(clip_dir, TOWER_FILE))
    assert vcfg.hidden_size == 32 and vcfg.image_size == 32
    out = str(tmp_path / "llava")
    from neuronatlas.worldmodels.train.plans import LLAVA_PLAN as PLAN, resolve_llava_plan as resolve_plan

    # an earlier plan trains as it did: options it leaves out (binding, ...) are off, not the default's
    assert PLAN["bind_weight"] and not resolve_plan(PLAN_V2)["bind_weight"] and resolve_plan() == dict(
        resolve_plan(PLAN))
    plan = dict(PLAN_V2, steps=6, batch=8, pool=32, eval_n=8, eval_every=3, checkpoint_every=4, warmup=2)
    model, _, hist = train_llava(out, clip_weights=clip_dir, plan=plan, text=TINY_TEXT, log=lambda *a: None,
                                 workers=1)
    assert len(hist) == 6 and all(h["sup"] > 0 for h in hist)
    assert "val" in hist[2] and "val" in hist[5]
    assert os.path.isfile(os.path.join(out, "model.safetensors"))
    assert not os.path.isfile(os.path.join(out, "resume.pt"))
    # the tower started from the saved one (patch embedding rows equal before training moved them)
    from neuronatlas.worldmodels.arch.llava import build_model

    fresh = build_model(None, TINY_TEXT, vision_config=vcfg, tower_state=state)
    assert torch.equal(fresh.model.vision_tower.embeddings.patch_embedding.weight,
                       state["embeddings.patch_embedding.weight"])


def test_every_clip_plan_runs_its_phases():
    """Each named schedule (shrunk: 2 steps per phase, tiny pools) runs its phases in order at its
    own input size, with the contrastive loss only where the plan asks for it."""
    from neuronatlas.worldmodels.arch.clip import TINY
    from neuronatlas.worldmodels.train.clip import train_clip
    from neuronatlas.worldmodels.train.plans import CLIP_PLANS as PLANS

    for name, plan in PLANS.items():
        small = dict(plan, batch=8, eval_n=8, eval_every=10 ** 6,
                     pools={k: dict(p, n=16) for k, p in plan["pools"].items()},
                     phases=[dict(ph, steps=2) for ph in plan["phases"]])
        model, _, hist = train_clip(None, cfg=TINY, plan=small, log=lambda *a: None, workers=1)
        assert [h["phase"] for h in hist] == [ph["name"] for ph in plan["phases"] for _ in range(2)], name
        assert all((h["con"] > 0) == bool(ph.get("contrastive")) for h, ph in
                   zip(hist, [ph for ph in plan["phases"] for _ in range(2)])), name
        assert model.config.vision_config.image_size == plan["image_size"]


def test_llava_starting_towers_and_plans():
    """Every world-llava plan names a starting tower; "final" is the committed world-clip's tower, and
    "warmup" without a saved tower is a one-line UserError naming the fix."""
    import os

    import pytest

    from neuronatlas.errors import UserError
    from neuronatlas.worldmodels import weights_dir
    from neuronatlas.worldmodels.train.llava import starting_tower
    from neuronatlas.worldmodels.train.plans import LLAVA_PLANS as PLANS

    assert {p["tower"] for p in PLANS.values()} <= {"final", "warmup"}
    if os.path.isfile(os.path.join(weights_dir("world-clip"), "model.safetensors")):
        from safetensors.torch import load_file

        vcfg, state = starting_tower(None, "final")
        saved = load_file(os.path.join(weights_dir("world-clip"), "model.safetensors"))
        key = "embeddings.patch_embedding.weight"
        assert torch.equal(state[key], saved["vision_model." + key]) and vcfg.hidden_size == 128
    with pytest.raises(UserError, match="--clip-weights"):
        starting_tower(os.path.dirname(__file__), "warmup")


def test_llava_question_first_rows_equal_single_forwards(tmp_path):
    """Question-first prompts: `<bos> question <image>*65`; a batch of several questions per image
    gives the token-weighted mean of one standard forward per (image, question) row (each with its
    own image), greedy answers read at the last image token, and the order survives save/load."""
    import pytest

    from neuronatlas.worldmodels.arch.clip import TINY, build_model as build_clip
    from neuronatlas.worldmodels.arch.llava import TINY_TEXT, answer_batch, build_model, prompt_ids, prompt_order
    from neuronatlas.worldmodels.train.llava import batch_loss, single_turn
    from neuronatlas.worldmodels.arch.tokenizer import BOS_ID, IMAGE_ID, build_tokenizer
    from neuronatlas.worldmodels.arch.checkpoint import load_world_model

    tok = build_tokenizer()
    model = build_model(build_clip(TINY), TINY_TEXT, order="question-first").eval()
    assert prompt_order(model.config) == "question-first"
    q = "is there a red circle?"
    p = prompt_ids(tok, 65, q, "question-first")
    words = tok(q, add_special_tokens=False)["input_ids"]
    assert p == [BOS_ID] + words + [IMAGE_ID] * 65
    pool = D.render_pool(10, 0, 3)
    pixels = pool.pixels(torch.arange(3))
    items = [[(q, "yes"), ("what color is the circle?", "red")], [(None, "a small red circle")],
             [("how many objects are there?", "two"), (q, "no"), ("what shape is the red thing?", "star")]]
    with torch.no_grad():
        got = batch_loss(model, tok, pixels, items)
        total, n = 0.0, 0
        for i, its in enumerate(items):
            for qq, a in its:
                ids, lab = single_turn(tok, 65, qq, a)
                k = sum(x != -100 for x in lab)
                total += model(input_ids=torch.tensor([ids]), pixel_values=pixels[i:i + 1],
                               labels=torch.tensor([lab])).loss.item() * k
                n += k
    # HF shifts labels inside: every answer token (and <eos>) is predicted from the one before it
    assert abs(got.item() - total / n) < 1e-5
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([p]), pixel_values=pixels[:1]).logits[0, -1]
    want = tok.decode([logits.argmax().item()], skip_special_tokens=True)
    out = answer_batch(model, tok, pixels[:2], [q, "what color is the circle?"], 1)
    assert out[0] == want
    model.save_pretrained(tmp_path / "m")
    from neuronatlas.worldmodels.arch.tokenizer import save_tokenizer

    save_tokenizer(tok, str(tmp_path / "m"))
    again, _ = load_world_model("world-llava", str(tmp_path / "m"))
    assert prompt_order(again.config) == "question-first"
    with pytest.raises(ValueError, match="prompt order"):
        prompt_ids(tok, 65, q, "sideways")


def test_llava_frozen_tower_and_one_object_start(tmp_path, monkeypatch):
    """Plans with vision_lr_scale 0 leave the tower exactly as world-clip saved it (world-llava sees
    world-clip's features), and `single_steps` draws the first batches from one-object scenes."""
    import os

    from neuronatlas.worldmodels.arch.checkpoint import TOWER_FILE, load_tower
    from neuronatlas.worldmodels.arch.llava import TINY_TEXT
    from neuronatlas.worldmodels.train import llava as L
    from neuronatlas.worldmodels.train.plans import LLAVA_PLANS

    clip_dir = str(tmp_path / "clip")
    _tiny_clip(out_dir=clip_dir)
    _, state = load_tower(os.path.join(clip_dir, TOWER_FILE))
    seen = []
    real = L.sample_items

    def spy(scene, *a, **k):
        seen.append(len(scene.objects))
        return real(scene, *a, **k)

    plan = dict(LLAVA_PLANS["v3"], steps=6, batch=4, pool=32, single_pool=8, single_steps=3, eval_n=8,
                eval_every=10 ** 6, checkpoint_every=10 ** 6, warmup=2)
    monkeypatch.setattr(L, "sample_items", spy)
    model, _, hist = L.train_llava(None, clip_weights=clip_dir, plan=plan, text=TINY_TEXT,
                                   log=lambda *a: None, workers=1)
    assert len(hist) == 6 and hist[-1]["loss"] > 0
    assert seen[:12] == [1] * 12 and any(n > 1 for n in seen[12:24])
    tower = model.model.vision_tower.state_dict()
    assert all(torch.equal(tower[k], state[k]) for k in state)


def test_early_answer_labels_sit_on_the_object_naming_words():
    """early_answer adds the answer's first word as the label of every question position from the
    last colour / shape / position word on (HF shifts labels: label i is predicted at i - 1); the
    inputs and every other label are those of the plain conversation."""
    from neuronatlas.worldmodels.train.llava import conversation
    from neuronatlas.worldmodels.arch.tokenizer import build_tokenizer

    tok = build_tokenizer()
    items = [("what shape is the red thing?", "star"), ("is there a red circle?", "yes"),
             ("what shape is on the left?", "heart"), (None, "a red circle")]
    ids, plain = conversation(tok, 2, items)
    ids2, early = conversation(tok, 2, items, early_answer=True)
    assert ids2 == ids
    words = tok.convert_ids_to_tokens(ids)
    got = [(words[i - 1], tok.convert_ids_to_tokens(early[i])) for i in range(1, len(ids))
           if early[i] != plain[i]]
    assert got == [("red", "star"), ("thing", "star"), ("circle", "yes"), ("left", "heart")]


def test_caption_only_rows_put_the_caption_right_after_the_image():
    """p_caption_only: that share of images is captioned alone (the layout generate_caption asks);
    at 0 the draws, and so every earlier plan's data, are unchanged."""
    from neuronatlas.data.world import caption
    from neuronatlas.worldmodels.train.llava import conversation, sample_items
    from neuronatlas.worldmodels.arch.tokenizer import CAPTION_ID, IMAGE_ID, build_tokenizer

    pool = D.render_pool(10, 0, 40)
    a, b = random.Random(3), random.Random(3)
    assert [sample_items(s, a, 3, 0.1) for s in pool.scenes] == \
        [sample_items(s, b, 3, 0.1, p_caption_only=0.0) for s in pool.scenes]
    rng = random.Random(4)
    rows = [sample_items(s, rng, 3, 0.0, p_caption_only=0.5) for s in pool.scenes]
    alone = [(s, r) for s, r in zip(pool.scenes, rows) if r[0][0] is None]
    assert 8 < len(alone) < 32 and all(r == [(None, caption(s))] for s, r in alone)
    assert all(q is not None for r in rows if r[0][0] is not None for q, _ in r)
    tok = build_tokenizer()
    ids, labels = conversation(tok, 3, alone[0][1])
    assert ids[:5] == [ids[0], IMAGE_ID, IMAGE_ID, IMAGE_ID, CAPTION_ID]
    assert tok.decode([i for i, l in zip(ids, labels) if l != -100], skip_special_tokens=True) == caption(alone[0][0])
