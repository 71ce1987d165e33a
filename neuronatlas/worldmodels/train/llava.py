"""Training `zoo:world-llava` (architecture and prompts: arch/llava.py; schedules: plans.py
LLAVA_PLANS).

`train_llava` is deterministic given the seed and resumable: full-world scenes (1-3 objects),
optionally after `single_steps` on one-object scenes; one multi-turn row per image (image-first) or
one row per question (question-first): up to k questions of every kind `questions(scene)` gives
(presence, color and shape favoured), in random order, then for some images the caption. Labels are
the unshifted input ids on the answer (and <eos>) only. The loss is the answer loss, plus (plan v2)
world-clip's supervised scene losses on the tower's output, plus (plans v7-v9) the binding
supervision of binding.py: one language-model head is trained to attend from the question to the
object it names. The tower trains at `vision_lr_scale` x the learning rate, or stays frozen at 0.
Evaluation asks one question per row (the first turn).
"""

from __future__ import annotations

import random
import time

import torch

from ...data.world import caption, questions
from ..arch.checkpoint import TOWER_FILE, load_tower, load_world_model
from ..arch.llava import TEXT, answer_ids, build_model, pad_rows, prompt_ids, prompt_order
from ..arch.tokenizer import BOS_ID, CAPTION_ID, IMAGE_ID, PAD_ID, build_tokenizer
from . import data as D
from .clip import Heads
from .binding import (BindBatch, Readout, bind_loss, bind_pairs, first_patch_position, item_labels,
                      item_targets, key_word_ids, named_items)
from .loop import Job, run
from .plans import KIND_WEIGHT, resolve_llava_plan
from .resume import TrainingState


def sample_items(scene, rng: random.Random, k: int = 4, p_caption: float = 0.25,
                 kind_weight: dict = KIND_WEIGHT, p_caption_only: float = 0.0):
    """(question or None for the caption, answer) pairs for one training image: k questions drawn
    without replacement, favouring kinds by kind_weight, in random order; the caption last. With
    probability p_caption_only the caption alone, right after the image, as it is asked at inference
    (a caption before questions would let them copy the answer from it)."""
    if p_caption_only and rng.random() < p_caption_only:
        return [(None, caption(scene))]

    qs = questions(scene)
    items = []
    pool = list(qs)
    for _ in range(min(k, len(pool))):
        w = [kind_weight[q.kind] for q in pool]
        q = rng.choices(pool, weights=w)[0]
        pool.remove(q)
        items.append((q.question, q.answer))
    rng.shuffle(items)
    if rng.random() < p_caption:  # last: the caption answers every question
        items.append((None, caption(scene)))
    return items


def conversation(tokenizer, n_img: int, items, early_answer: bool = False) -> tuple[list[int], list[int]]:
    """One image-first training row per image: <bos> <image>*n_img then every (question, answer)
    turn as `question-words answer <eos>` (the caption turn, question None, as `<caption> caption
    <eos>`). Returns (input_ids, labels) with labels on the answers and their <eos> only (unshifted).
    early_answer: the question's positions from its last object-naming word on also predict the
    answer's first word (auxiliary labels; the inputs are unchanged). Each such position's query
    already holds the word that names the object, so attending from it to that object's patches is
    learnt directly, instead of through the question mark that gathers the words first."""
    ids = [BOS_ID] + [IMAGE_ID] * n_img
    labels = [-100] * len(ids)
    keys = key_word_ids() if early_answer else frozenset()
    for q, a in items:
        p = [CAPTION_ID] if q is None else tokenizer(q, add_special_tokens=False)["input_ids"]
        t = answer_ids(tokenizer, a)
        lab = [-100] * len(p)
        named = [i for i, w in enumerate(p) if w in keys]
        if q is not None and named:
            for i in range(named[-1], len(p) - 1):  # position i predicts label i + 1 (shifted in HF)
                lab[i + 1] = t[0]
        ids += p + t
        labels += lab + t
    return ids, labels


def single_turn(tokenizer, n_img: int, question: str | None, answer: str,
                order: str = "question-first") -> tuple[list[int], list[int]]:
    """One row for one (question, answer): the prompt of `prompt_ids` then `answer <eos>`."""
    p = prompt_ids(tokenizer, n_img, question, order)
    t = answer_ids(tokenizer, answer)
    return p + t, [-100] * len(p) + t


def batch_loss(model, tokenizer, pixels, items_per_image, early_answer: bool = False):
    """Language-model loss on the answers (standard forward: input_ids with the image tokens written
    out, pixel_values, unshifted labels). Image-first: one multi-turn row per image; question-first
    (the question must come before the image it conditions): one row per question, the image's
    pixels repeated for each of its rows."""
    return batch_losses(model, tokenizer, pixels, items_per_image, early_answer)[0]


def batch_losses(model, tokenizer, pixels, items_per_image, early_answer: bool = False, bind=None):
    """(answer loss, binding loss) of one batch. bind: a binding.BindBatch (the supervised heads'
    losses summed, plus readout_weight x the readout loss); needs image-first rows and eager
    attention (the weights are read from the forward's `attentions`). Without bind the second is 0."""
    n_img, order = model.config.image_seq_length, prompt_order(model.config)
    if order == "image-first":
        rows = [conversation(tokenizer, n_img, items, early_answer) for items in items_per_image]
    else:
        if bind is not None:
            raise ValueError("binding supervision needs image-first rows (the question must see the image)")
        which = [i for i, items in enumerate(items_per_image) for _ in items]
        rows = [single_turn(tokenizer, n_img, q, a, order) for items in items_per_image for q, a in items]
        pixels = pixels[torch.tensor(which)]
    ids, lab = pad_rows([r[0] for r in rows], PAD_ID), pad_rows([r[1] for r in rows], -100)
    mask = (torch.arange(ids.shape[1])[None] < torch.tensor([len(r[0]) for r in rows])[:, None]).long()
    readout = bind is not None and bind.readout is not None
    out = model(input_ids=ids, pixel_values=pixels, attention_mask=mask, labels=lab,
                output_attentions=bind is not None, output_hidden_states=readout)
    if bind is None:
        return out.loss, torch.tensor(0.0)
    rows_ids = [r[0] for r in rows]
    total = torch.tensor(0.0)
    for i, (at, layer, head) in enumerate(bind.heads):
        pairs = bind_pairs(tokenizer, rows_ids, n_img, bind.targets, at)
        total = total + bind_loss(out.attentions, pairs, layer, head)
        if readout and i == 0:  # hidden_states[0] is the embeddings: layer L's output is L + 1
            total = total + bind.readout_weight * bind.readout.loss(out.hidden_states[layer + 1], pairs,
                                                                    bind.labels)
    return out.loss, total


def starting_tower(clip_weights: str | None, which: str):
    """(vision config, vision state dict) world-llava starts from: world-clip's tower after its
    supervised warm-up (`warmup_vision.safetensors`, which="warmup") or its final tower ("final")."""
    import os

    from .. import weights_dir

    path = clip_weights or weights_dir("world-clip")
    if which == "warmup":
        f = os.path.join(path, TOWER_FILE)
        if not os.path.isfile(f):
            from ...errors import UserError

            raise UserError(f"no {TOWER_FILE} in {path}: world-llava starts from world-clip's tower "
                            f"after its supervised phases; train it first with `neuronatlas zoo train "
                            f"world-clip --out DIR`, then pass --clip-weights DIR")
        return load_tower(f)
    clip, _ = load_world_model("world-clip", path)
    return clip.config.vision_config, clip.vision_model.state_dict()


class _TowerTap:
    """Keeps the vision tower's last output (forward hook), for the supervised auxiliary heads."""

    def __init__(self, tower):
        self.out = None
        self.handle = tower.register_forward_hook(self._hook)

    def _hook(self, module, args, output):
        # copy the fields now: LLaVA later overwrites output.pooler_output with the projected features
        from types import SimpleNamespace

        self.out = SimpleNamespace(last_hidden_state=output.last_hidden_state,
                                   pooler_output=output.pooler_output)


def train_llava(out_dir: str | None = None, seed: int = 0, minutes: float | None = None,
                clip_weights: str | None = None, plan: dict | None = None, text: dict = TEXT,
                clip_model=None, log=print, workers: int = 2, resume: bool = True,
                stop_at: int | None = None):
    """Train world-llava from world-clip's vision tower; returns (model, tokenizer, history).
    The loss is the language-model loss on the answers plus `sup_weight` x the supervised scene
    losses of world-clip's warm-up (heads on the tower's output; not part of the checkpoint)."""
    from .metrics import llava_qa

    plan = resolve_llava_plan(plan)
    text = dict(text, **plan.get("text", {}))  # the plan's language-model overrides
    t0 = time.time()
    torch.manual_seed(seed)
    tokenizer = build_tokenizer()
    if clip_model is not None:
        vcfg, vstate = clip_model.config.vision_config, clip_model.vision_model.state_dict()
    else:
        vcfg, vstate = starting_tower(clip_weights, plan["tower"])
    model = build_model(None, text, seed, vision_config=vcfg, tower_state=vstate,
                        order=plan["prompt_order"], features=plan["features"])
    if plan["bind_weight"]:  # the binding loss reads attention weights: sdpa does not return them
        model.set_attn_implementation("eager")
    size, patch = vcfg.image_size, vcfg.patch_size
    heads = Heads(vcfg.hidden_size)
    readout = Readout(text["hidden_size"]) if plan["bind_readout"] else None
    aux = torch.nn.ModuleDict(dict(scene=heads, **({"readout": readout} if readout is not None else {})))
    tower = model.model.vision_tower
    tap = _TowerTap(tower)
    post_ln = getattr(tower, "vision_model", tower).post_layernorm
    log(f"world-llava: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params; rendering pool")
    full = D.render_pool(D.TRAIN_WORLD_SEED + seed + 1000, 0, plan["pool"], None, size=size, patch=patch,
                         workers=workers)
    # curriculum: the first `single_steps` steps on one-object scenes (reading an attribute off the
    # image before having to find the object a question names among several)
    single = D.render_pool(D.TRAIN_WORLD_SEED + seed + 1500, 0, plan["single_pool"],
                           D.spec_options({"n_objects": [1, 1]}), size=size, patch=patch,
                           workers=workers) if plan["single_steps"] else None
    val_pool = D.render_pool(D.VAL_WORLD_SEED + 1, 0, plan["eval_n"], None, size=size, patch=patch)
    log(f"  pool rendered in {time.time() - t0:.0f}s")
    vision = list(tower.parameters())
    vids = {id(p) for p in vision}
    rest = [p for p in model.parameters() if id(p) not in vids] + list(aux.parameters())
    groups = [{"params": rest, "scale": 1.0}]
    if plan["vision_lr_scale"]:
        groups.append({"params": vision, "scale": plan["vision_lr_scale"]})
    else:  # a frozen tower: world-llava sees exactly world-clip's features (and trains faster)
        tower.requires_grad_(False)
    opt = torch.optim.AdamW(groups, lr=plan["lr"], weight_decay=0.01)
    gen = torch.Generator().manual_seed(seed)
    rng = random.Random(seed)
    state = TrainingState(out_dir, model, aux, opt, gen, rng, dict(plan, seed=seed, text=text))
    total = plan["steps"]

    def loss(step: int):
        pool = single if step < plan["single_steps"] else full
        idx = torch.randint(len(pool), (plan["batch"],), generator=gen)
        items = [sample_items(pool.scenes[i], rng, plan["k"], plan["p_caption"], plan["kind_weight"],
                              plan["p_caption_only"]) for i in idx.tolist()]
        bind = None
        if plan["bind_weight"]:
            named = [named_items(pool.scenes[i], it) for i, it in zip(idx.tolist(), items)]
            first = first_patch_position(model.config)
            bind = BindBatch([item_targets(nm, pool.patches[i], plan["bind_absent"], first)
                              for nm, i in zip(named, idx.tolist())], plan["bind_heads"],
                             labels=[item_labels(nm) for nm in named] if readout is not None else None,
                             readout=readout, readout_weight=plan["bind_readout"])
        lm, bound = batch_losses(model, tokenizer, pool.pixels(idx), items, plan["early_answer"],
                                 bind)
        sup = torch.tensor(0.0)
        if plan["sup_weight"]:
            rows = idx  # question-first: the tower saw each image once per question (its rows)
            if prompt_order(model.config) == "question-first":
                rows = idx.repeat_interleave(torch.tensor([len(it) for it in items]))
            sup, _ = heads.loss(tap.out, post_ln, pool.slots[rows], pool.patches[rows],
                                dict(slot=1.0, patch=1.0, present=1.0))
        total_loss = lm + plan["sup_weight"] * sup + plan["bind_weight"] * bound
        return total_loss, dict(loss=round(lm.item(), 4), sup=round(sup.item(), 4),
                                bind=round(bound.item(), 4))

    def validate():
        m = llava_qa(model, tokenizer, val_pool)
        return m, m["presence_acc"] + m["color_acc"] + m["shape_acc"]

    def progress(rec: dict) -> str:
        return (f"  step {rec['step']}/{total} answer loss {rec['loss']:.3f} sup {rec['sup']:.3f} "
                f"bind {rec['bind']:.3f}  {rec['t']:.0f}s")

    job = Job(model, tokenizer, opt, state, total, plan["lr"], plan["warmup"], plan["checkpoint_every"],
              loss=loss, validates=lambda step: step % plan["eval_every"] == 0 or step == total,
              validate=validate, progress=progress)
    try:
        history, _ = run(job, out_dir, t0, minutes, stop_at, resume, log)
    finally:
        tap.handle.remove()
    return model, tokenizer, history
