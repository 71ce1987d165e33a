"""Binding supervision for world-llava (worldmodels/binding.py): the named object and its patches
agree with the rendered ground truth, the query sits on the object-naming word, and the loss is the
attention the model really computes."""

import random

import numpy as np
import pytest
import torch

from neuronatlas.worldmodels.train import data as D


def _owner_by_brute_force(scene, size, patch):
    """Majority object (1-based, 0 = background) of every patch, counted pixel by pixel."""
    from neuronatlas.data.world import render_labels

    _, labels = render_labels(scene, size)
    g = size // patch
    out = []
    for r in range(g):
        for c in range(g):
            block = labels[r * patch:(r + 1) * patch, c * patch:(c + 1) * patch]
            out.append(int(np.bincount(block.ravel(), minlength=len(scene.objects) + 1).argmax()))
    return out


def test_named_object_and_its_patches_match_the_rendered_scene():
    from neuronatlas.data.world import questions
    from neuronatlas.data.world.vocab import phrase
    from neuronatlas.worldmodels.train.binding import item_targets, named_items, named_object, object_patches

    pool = D.render_pool(21, 0, 40, None, size=64, patch=8)
    checked = {k: 0 for k in ("color", "shape", "position", "presence", "texture", "size")}
    for i, scene in enumerate(pool.scenes):
        owner = _owner_by_brute_force(scene, 64, 8)
        for qa in questions(scene):
            obj = named_object(scene, qa)
            if qa.kind == "count" or (qa.kind == "presence" and qa.answer == "no"):
                assert obj is None
                continue
            assert obj is not None
            checked[qa.kind] += 1
            attr = {"color": "color", "shape": "shape", "position": "shape", "texture": "texture",
                    "size": "size"}.get(qa.kind)
            if attr:  # the answer is the named object's attribute
                assert phrase(attr, getattr(obj, attr)) == qa.answer
            same = {k + 1 for k, o in enumerate(scene.objects)
                    if (o.shape, o.color, o.texture) == (obj.shape, obj.color, obj.texture)}
            assert object_patches(pool.patches[i], obj) == [p for p, k in enumerate(owner) if k in same]
        # row positions (image-first: <bos> 0, CLS 1, patch p at 2 + p); "no" -> <bos> with absent
        items = [(qa.question, qa.answer) for qa in questions(scene)] + [(None, "a caption")]
        named = named_items(scene, items)
        for absent in (False, True):
            for qa, got in zip(questions(scene), item_targets(named, pool.patches[i], absent)):
                obj = named_object(scene, qa)
                if obj is not None:
                    assert got == [2 + p for p in object_patches(pool.patches[i], obj)]
                else:
                    assert got == ([0] if absent and qa.kind == "presence" else [])
            assert item_targets(named, pool.patches[i], absent)[-1] == []
    assert all(n > 5 for n in checked.values()), checked


def test_query_positions_sit_on_the_last_object_naming_word():
    from neuronatlas.worldmodels.train.binding import query_positions
    from neuronatlas.worldmodels.train.binding import key_word_ids
    from neuronatlas.worldmodels.train.llava import conversation
    from neuronatlas.worldmodels.arch.tokenizer import build_tokenizer

    tok = build_tokenizer()
    items = [("what shape is the red thing?", "star"), ("how many objects are there?", "two"),
             ("is there a red circle?", "yes"), ("what shape is in the center?", "heart"),
             (None, "a small red solid circle on the left on a gray background")]
    ids, _ = conversation(tok, 3, items)
    pos = query_positions(ids, 3, tok.convert_tokens_to_ids("?"), key_word_ids())
    words = tok.convert_ids_to_tokens(ids)
    assert [words[p] if p >= 0 else None for p in pos] == ["red", None, "circle", "center", None]
    # at="answer": the "?" that predicts the answer, for the same questions
    at_q = query_positions(ids, 3, tok.convert_tokens_to_ids("?"), key_word_ids(), "answer")
    assert [words[p] if p >= 0 else None for p in at_q] == ["?", None, "?", "?", None]
    assert all(tok.convert_ids_to_tokens(ids[p + 1]) == a.split()[0] for p, (_, a) in zip(at_q, items) if p >= 0)
    with pytest.raises(ValueError, match="query position"):
        query_positions(ids, 3, 6, key_word_ids(), "everywhere")


def _tiny_llava(order="image-first", features="full"):
    from neuronatlas.worldmodels.arch.clip import TINY, build_model as build_clip
    from neuronatlas.worldmodels.arch.llava import TINY_TEXT, build_model

    return build_model(build_clip(TINY), TINY_TEXT, order=order, features=features)


@pytest.mark.parametrize("features", ["full", "default"])
def test_binding_loss_reads_the_models_attention_and_leaves_the_answer_loss_unchanged(features):
    """Eager attention (needed to read the weights) gives the answer loss sdpa gives; the binding loss
    is -log of layer 0 head 0's attention mass on the named object's patch tokens (after <bos> and,
    with "full" features, CLS); question-first rows cannot be supervised (the question comes before
    the image)."""
    from neuronatlas.worldmodels.train.binding import BindBatch, bind_pairs, first_patch_position, item_targets, named_items
    from neuronatlas.worldmodels.train.llava import batch_loss, batch_losses, conversation, sample_items
    from neuronatlas.worldmodels.arch.tokenizer import build_tokenizer

    tok = build_tokenizer()
    model = _tiny_llava(features=features).eval()
    assert model.config.image_seq_length == 64 + (features == "full")
    first = first_patch_position(model.config)
    assert first == 1 + (features == "full")
    pool = D.render_pool(22, 0, 6, None, size=32, patch=4)
    rng = random.Random(1)
    items = [sample_items(s, rng, k=4) for s in pool.scenes]
    targets = [item_targets(named_items(s, it), pool.patches[i], first_patch=first)
               for i, (s, it) in enumerate(zip(pool.scenes, items))]
    pixels = pool.pixels(torch.arange(6))
    with torch.no_grad():
        plain = batch_loss(model, tok, pixels, items)
        model.set_attn_implementation("eager")
        heads = [("word", 0, 0), ("answer", 0, 1)]  # two supervised heads: their losses add up
        lm, bound = batch_losses(model, tok, pixels, items, bind=BindBatch(targets, heads))
        assert abs(lm.item() - plain.item()) < 1e-5
        n_img = model.config.image_seq_length
        rows = [conversation(tok, n_img, it)[0] for it in items]
        want = 0.0
        for at, _, head in heads:
            pairs = bind_pairs(tok, rows, n_img, targets, at)
            assert len(pairs) >= 6
            masses = []
            for r, q, cols, _ in pairs:  # one unpadded forward per row
                att = model(input_ids=torch.tensor([rows[r]]), pixel_values=pixels[r:r + 1],
                            output_attentions=True).attentions[0][0, head]
                assert torch.allclose(att.sum(-1), torch.ones(att.shape[0]), atol=1e-5)
                masses.append(att[q, cols].sum())
            want -= torch.log(torch.stack(masses)).mean().item()
    assert abs(bound.item() - want) < 1e-5
    # the target positions hold the patches: row position first + p is the projected tower token of
    # patch p (the tower's token 1 + p, after its CLS), as the language model receives it
    seen = {}
    hook = model.model.language_model.register_forward_pre_hook(
        lambda mod, args, kw: seen.update(emb=kw["inputs_embeds"]), with_kwargs=True)
    with torch.no_grad():
        model(input_ids=torch.tensor([rows[0]]), pixel_values=pixels[:1])
        tokens = model.model.vision_tower(pixel_values=pixels[:1], output_hidden_states=True).hidden_states[-1]
        projected = model.model.multi_modal_projector(tokens)[0]
    hook.remove()
    for p in (0, 17, 63):
        assert torch.allclose(seen["emb"][0, first + p], projected[1 + p], atol=1e-5)
    with pytest.raises(ValueError, match="image-first"):
        batch_losses(_tiny_llava("question-first"), tok, pixels, items, bind=BindBatch(targets, [("word", 0, 0)]))


def test_binding_plan_trains_the_head_to_the_named_object():
    """A plan with bind_weight: the run logs the binding loss and it falls (the head learns to look
    at the object the question names); the answer loss is logged as before."""
    from neuronatlas.worldmodels.arch.llava import TINY_TEXT
    from neuronatlas.worldmodels.train import llava as L
    from neuronatlas.worldmodels.train.plans import LLAVA_PLANS

    plan = dict(LLAVA_PLANS["v3"], steps=40, batch=8, pool=64, single_pool=8, single_steps=0, eval_n=8,
                eval_every=10 ** 6, checkpoint_every=10 ** 6, warmup=2, lr=1e-2, tower="final",
                vision_lr_scale=0.0, bind_weight=1.0, bind_heads=[("word", 0, 0)], bind_absent=True)
    from neuronatlas.worldmodels.arch.clip import TINY, build_model as build_clip

    clip = build_clip(TINY)
    _, _, hist = L.train_llava(None, plan=plan, text=TINY_TEXT, clip_model=clip, log=lambda *a: None,
                               workers=1)
    bind = [h["bind"] for h in hist]
    assert len(bind) == 40 and all(b > 0 for b in bind[:5])
    assert np.mean(bind[-5:]) < 0.7 * np.mean(bind[:5])


def test_readout_heads_predict_the_named_objects_attributes_at_the_query():
    """item_labels gives the named object's shape and colour indices (None for what names nothing);
    the readout loss is the cross-entropy of linear heads on the residual at the query positions,
    skipping the <bos>-targeted "no" questions."""
    from neuronatlas.data.world import questions
    from neuronatlas.worldmodels.train.binding import Readout, item_labels, item_targets, named_items, named_object

    pool = D.render_pool(23, 0, 4, None, size=32, patch=4)
    scene = pool.scenes[0]
    qas = questions(scene)
    items = [(qa.question, qa.answer) for qa in qas] + [(None, "caption")]
    labels = item_labels(named_items(scene, items))
    for qa, lab in zip(qas, labels):
        obj = named_object(scene, qa)
        assert (lab is None) == (obj is None)
        if obj is not None:
            assert (D.NAMES["shape"][lab["shape"]], D.NAMES["color"][lab["color"]]) == (obj.shape, obj.color)
    assert labels[-1] is None
    targets = item_targets(named_items(scene, items), pool.patches[0], absent=True)
    torch.manual_seed(0)
    hidden = torch.randn(1, 40, 16)
    pairs = [(0, 3 + k, t, k) for k, t in enumerate(targets) if t]  # a query position per item
    head = Readout(16)
    got = head.loss(hidden, pairs, [labels])
    kept = [(q, labels[k]) for _, q, _, k in pairs if labels[k] is not None]
    assert 0 < len(kept) < len(pairs)  # the "no" questions were skipped
    h = torch.stack([hidden[0, q] for q, _ in kept])
    want = sum(torch.nn.functional.cross_entropy(head.heads[a](h), torch.tensor([lab[a] for _, lab in kept]))
               for a in ("shape", "color"))
    assert torch.allclose(got, want)
