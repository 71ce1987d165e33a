"""`zoo:world-llava`: a small transformers `LlavaForConditionalGeneration` that captions world images
and answers questions about them.

Architecture: world-clip's vision tower (CLIP ViT, 64 px, patch 8, hidden 128, 4 layers; plans v3 and
later take the tower world-clip saved after its supervised phases and keep it frozen), all 65
tokens (CLS + 8x8 patches: `vision_feature_select_strategy="full"`; plan option `features="default"`
drops CLS) of its last layer (`vision_feature_layer=-1`), a 2-layer GELU projector, and a Llama
language model (hidden 192, 3 layers, 4 heads, MLP 512) over the world tokenizer's 70 ids.

Prompt format (ids, no chat template; `config.prompt_order`, default image-first):
    <bos> <image> x 65  question words "?"   ->  answer words <eos>        (question answering)
    <bos> <image> x 65  <caption>            ->  caption words <eos>       (captioning)
question-first puts the question (or <caption>) before the image tokens instead.
The image token is written once per image feature (65 times): transformers does not expand it when
input_ids are built by hand. Labels are the unshifted input ids on the answer (and <eos>) only.

Training (`train_llava`, deterministic given the seed, resumable; PLANS below): full-world scenes
(1-3 objects), optionally after `single_steps` on one-object scenes; one multi-turn row per image
(image-first) or one row per question (question-first): up to k questions of every kind
`questions(scene)` gives (presence, color and shape favoured), in random order, then for some images
the caption; loss on the answer tokens only, plus (plan v2) world-clip's supervised scene losses on
the tower's output, plus (plans v7-v9) the binding supervision of binding.py: one language-model
head is trained to attend from the question to the object it names. The tower trains at
`vision_lr_scale` x the learning rate, or stays frozen at 0.
Evaluation asks one question per row (the first turn).
"""

from __future__ import annotations

import functools
import random
import time

import torch

from . import data as D
from .resume import TrainingState
from .tokenizer import BOS_ID, CAPTION_ID, EOS_ID, IMAGE_ID, PAD_ID, build_tokenizer

TEXT = dict(hidden_size=192, intermediate_size=512, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=4, max_position_embeddings=160)
TINY_TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                 num_key_value_heads=2, max_position_embeddings=160)


PROMPT_ORDERS = ("image-first", "question-first")


def _check_order(order: str) -> str:
    if order not in PROMPT_ORDERS:
        raise ValueError(f"unknown prompt order {order!r}; choose one of {', '.join(PROMPT_ORDERS)}")
    return order


FEATURES = ("full", "default")  # vision_feature_select_strategy: CLS + patches, or patches only


def n_image_tokens(vision_config, features: str = "full") -> int:
    return (vision_config.image_size // vision_config.patch_size) ** 2 + (features == "full")


def make_config(vision_config, text: dict = TEXT, vocab_size: int | None = None,
                order: str = "image-first", features: str = "full"):
    from transformers import LlavaConfig

    vocab_size = vocab_size or len(build_tokenizer())
    vc = vision_config.to_dict() if hasattr(vision_config, "to_dict") else dict(vision_config)
    vc["model_type"] = "clip_vision_model"
    tc = dict(text, model_type="llama", vocab_size=vocab_size, pad_token_id=PAD_ID, bos_token_id=BOS_ID,
              eos_token_id=EOS_ID)
    config = LlavaConfig(vision_config=vc, text_config=tc, image_token_index=IMAGE_ID,
                         image_seq_length=0, vision_feature_select_strategy=features,
                         vision_feature_layer=-1, projector_hidden_act="gelu")
    if features not in FEATURES:
        raise ValueError(f"unknown image features {features!r}; choose one of {', '.join(FEATURES)}")
    config.image_seq_length = n_image_tokens(config.vision_config, features)
    config.architectures = ["LlavaForConditionalGeneration"]
    config.pad_token_id = PAD_ID
    config.prompt_order = _check_order(order)  # saved in config.json; read by prompt_order()
    return config


def build_model(clip=None, text: dict = TEXT, seed: int = 0, vision_cfg: dict | None = None,
                vision_config=None, tower_state: dict | None = None, order: str = "image-first",
                features: str = "full"):
    """A fresh world-llava; with `clip` (a CLIPModel) its vision tower starts from clip's, with
    `vision_config` + `tower_state` from that vision config and state dict."""
    from transformers import LlavaForConditionalGeneration

    from .clip import CONFIG, make_config as clip_config, plan_config, PLAN as CLIP_PLAN

    torch.manual_seed(seed)
    if clip is not None:
        vision_config, tower_state = clip.config.vision_config, clip.vision_model.state_dict()
    if vision_config is None:
        base = dict(CONFIG, vision=vision_cfg) if vision_cfg else plan_config(CLIP_PLAN)
        vision_config = clip_config(base).vision_config
    model = LlavaForConditionalGeneration(make_config(vision_config, text, order=order, features=features))
    if tower_state is not None:
        tower = model.model.vision_tower
        tower = getattr(tower, "vision_model", tower)  # transformers 5.x: no vision_model wrapper
        tower.load_state_dict(tower_state)
    return model


def prompt_order(config) -> str:
    """The checkpoint's prompt layout (config.json `prompt_order`; older checkpoints: image-first)."""
    return getattr(config, "prompt_order", None) or "image-first"


def prompt_ids(tokenizer, n_img: int, question: str | None, order: str = "image-first") -> list[int]:
    """image-first: <bos> <image>*n_img question-words (or <caption> when question is None);
    question-first: <bos> question-words (or <caption>) <image>*n_img. The answer follows."""
    text = [CAPTION_ID] if question is None else tokenizer(question, add_special_tokens=False)["input_ids"]
    image = [IMAGE_ID] * n_img
    if _check_order(order) == "question-first":
        return [BOS_ID] + text + image
    return [BOS_ID] + image + text


def answer_ids(tokenizer, answer: str) -> list[int]:
    return tokenizer(answer, add_special_tokens=False)["input_ids"] + [EOS_ID]


def _pad(rows: list[list[int]], value: int) -> torch.Tensor:
    n = max(len(r) for r in rows)
    return torch.tensor([r + [value] * (n - len(r)) for r in rows])


@torch.no_grad()
def answer_batch(model, tokenizer, pixels: torch.Tensor, questions: list[str | None],
                 max_new_tokens: int = 1) -> list[str]:
    """Greedy answers, through the standard `model(input_ids, pixel_values, attention_mask)` path.
    Rows are right-padded; the next token is read at each row's last real position."""
    n_img, order = model.config.image_seq_length, prompt_order(model.config)
    seqs = [prompt_ids(tokenizer, n_img, q, order) for q in questions]
    done = [False] * len(seqs)
    outs: list[list[int]] = [[] for _ in seqs]
    for _ in range(max_new_tokens):
        ids = _pad(seqs, PAD_ID)
        mask = (torch.arange(ids.shape[1])[None] < torch.tensor([len(s) for s in seqs])[:, None]).long()
        logits = model(input_ids=ids, pixel_values=pixels, attention_mask=mask).logits
        last = mask.sum(1) - 1
        nxt = logits[torch.arange(len(seqs)), last].argmax(-1).tolist()
        for i, t in enumerate(nxt):
            if not done[i]:
                if t == EOS_ID:
                    done[i] = True
                else:
                    outs[i].append(t)
                    seqs[i] = seqs[i] + [t]
        if all(done):
            break
    return [tokenizer.decode(o, skip_special_tokens=True) for o in outs]


def generate_caption(model, tokenizer, pixels: torch.Tensor, max_new_tokens: int = 40) -> list[str]:
    return answer_batch(model, tokenizer, pixels, [None] * len(pixels), max_new_tokens)


KIND_WEIGHT = {"presence": 4.0, "color": 3.0, "shape": 3.0, "texture": 0.7, "size": 0.5,
               "position": 1.0, "count": 0.3}


def sample_items(scene, rng: random.Random, k: int = 4, p_caption: float = 0.25,
                 kind_weight: dict = KIND_WEIGHT, p_caption_only: float = 0.0):
    """(question or None for the caption, answer) pairs for one training image: k questions drawn
    without replacement, favouring kinds by kind_weight, in random order; the caption last. With
    probability p_caption_only the caption alone, right after the image, as it is asked at inference
    (a caption before questions would let them copy the answer from it)."""
    from ..data.world import caption, questions

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


@functools.lru_cache(maxsize=1)
def key_word_ids() -> frozenset[int]:
    """Ids of the words that name an object in a question: colours, shapes and positions (the world
    tokenizer's ids are fixed by `vocabulary()`, so this is computed once)."""
    from ..data.world import CONCEPTS
    from .tokenizer import vocabulary

    words = {w for cat in ("color", "shape", "position") for c in CONCEPTS.by_category(cat)
             for w in c.phrase.split()} - {"on", "the", "in"}
    ids = vocabulary()
    return frozenset(ids[w] for w in words)


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
    from .binding import bind_loss, bind_pairs

    n_img, order = model.config.image_seq_length, prompt_order(model.config)
    if order == "image-first":
        rows = [conversation(tokenizer, n_img, items, early_answer) for items in items_per_image]
    else:
        if bind is not None:
            raise ValueError("binding supervision needs image-first rows (the question must see the image)")
        which = [i for i, items in enumerate(items_per_image) for _ in items]
        rows = [single_turn(tokenizer, n_img, q, a, order) for items in items_per_image for q, a in items]
        pixels = pixels[torch.tensor(which)]
    ids, lab = _pad([r[0] for r in rows], PAD_ID), _pad([r[1] for r in rows], -100)
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


PLAN_V1 = dict(  # the first schedule: from world-clip's final tower, answer loss only
    steps=1300, batch=32, lr=1e-3, warmup=100, vision_lr_scale=0.25, pool=24000, k=4, p_caption=0.25,
    sup_weight=0.0, kind_weight=dict(presence=3.0, color=2.0, shape=3.0, texture=1.0, size=0.7,
                                     position=1.0, count=0.5),
    eval_n=100, eval_every=250, checkpoint_every=100, tower="final")
PLAN_V2 = dict(  # from world-clip v3's supervised tower, 8 questions per image, auxiliary scene heads
    steps=500, batch=32, lr=1.5e-3, warmup=60, vision_lr_scale=0.5, pool=12000, k=8, p_caption=0.1,
    sup_weight=0.5, kind_weight=KIND_WEIGHT, eval_n=80, eval_every=125, checkpoint_every=50,
    tower="warmup")
PLAN_V3 = dict(  # world-clip v4's supervised 64 px tower, frozen; one-object scenes first
    steps=1400, batch=32, lr=1.5e-3, warmup=100, vision_lr_scale=0.0, pool=24000, k=3, p_caption=0.1,
    single_steps=300, single_pool=8000, sup_weight=0.0, kind_weight=KIND_WEIGHT, eval_n=100,
    eval_every=200, checkpoint_every=100, tower="warmup", prompt_order="image-first")
PLAN_V4 = dict(  # v3 with world-clip's final tower (frozen), 8 questions per image, more steps
    PLAN_V3, steps=2200, lr=2e-3, k=8, tower="final", eval_every=275)
PLAN_V5 = dict(  # v4 with the caption as a last turn for most images (tried: stopped at step ~600,
    # validation colour 19.7%: the answers drift towards caption words)
    PLAN_V4, p_caption=0.6)
PLAN_V6 = dict(  # v4 with early-answer labels on the question's object-naming words (tried: stopped
    # at step ~800 of 1500, validation presence 50.2 / colour 54.8 / shape 53.3 at step 750)
    PLAN_V4, steps=1500, eval_every=250, early_answer=True)
PLAN_V7 = dict(  # v3 plus binding supervision (binding.py): at each question's "?", head 0 of layer 1
    # attends to the named object's patches ("no" presence questions: to <bos>). Validation presence /
    # colour / shape at step 1400 of the variants tried with v3's schedule: query at the object-naming
    # word, layer 0: 55.2 / 84.0 / 53.3; layer 1: 59.1 / 96.8 / 53.9; + "no" -> <bos>: 67.0 / 88.8 / 52.8;
    # the same without CLS among the image features: 66.3 / 85.1 / 48.9
    PLAN_V3, bind_weight=1.0, bind_heads=[("answer", 1, 0)], bind_absent=True)
PLAN_V8 = dict(  # v7 plus readout heads for the named object's shape and colour at the "?" after
    # layer 1 (the binding head must carry shape, not only colour), 2000 steps
    PLAN_V7, steps=2000, bind_readout=1.0)
PLAN_V9 = dict(  # v8 with a fifth of the images captioned alone (the caption right after the image,
    # as `generate_caption` asks it; v8 only ever saw it after three questions) instead of 10% last
    PLAN_V8, p_caption=0.0, p_caption_only=0.2)
PLANS = {"v1": PLAN_V1, "v2": PLAN_V2, "v3": PLAN_V3, "v4": PLAN_V4, "v5": PLAN_V5, "v6": PLAN_V6,
         "v7": PLAN_V7, "v8": PLAN_V8, "v9": PLAN_V9}
PLAN = PLAN_V9  # the committed weights; v1-v8 were tried (see the model card)
# every option a plan may leave out, switched off (so an earlier plan trains as it did)
OPTIONS_OFF = dict(prompt_order="image-first", features="full", single_steps=0, single_pool=0,
                   early_answer=False, bind_weight=0.0, bind_heads=(), bind_absent=False,
                   bind_readout=0.0, p_caption_only=0.0)


def resolve_plan(plan: dict | None = None) -> dict:
    """The full plan: `plan` (default: the committed PLAN) with the options it leaves out off."""
    return dict(OPTIONS_OFF, **(PLAN if plan is None else plan))


def starting_tower(clip_weights: str | None, which: str):
    """(vision config, vision state dict) world-llava starts from: world-clip's tower after its
    supervised warm-up (`warmup_vision.safetensors`, which="warmup") or its final tower ("final")."""
    import os

    from . import weights_dir
    from .clip import TOWER_FILE
    from .zoo import load_world_model

    path = clip_weights or weights_dir("world-clip")
    if which == "warmup":
        from .clip import load_tower

        f = os.path.join(path, TOWER_FILE)
        if not os.path.isfile(f):
            from ..errors import UserError

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
                clip_model=None, log=print, workers: int = 2, resume: bool = True):
    """Train world-llava from world-clip's vision tower; returns (model, tokenizer, history).
    The loss is the language-model loss on the answers plus `sup_weight` x the supervised scene
    losses of world-clip's warm-up (heads on the tower's output; not part of the checkpoint)."""
    from .binding import BindBatch, Readout, first_patch_position, item_labels, item_targets, named_items
    from .clip import Heads, lr_at
    from .metrics import llava_qa

    plan = resolve_plan(plan)
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
    params = [p for g in opt.param_groups for p in g["params"]]
    gen = torch.Generator().manual_seed(seed)
    rng = random.Random(seed)
    state = TrainingState(out_dir, model, aux, opt, gen, rng, dict(plan, seed=seed, text=text))
    history, best, step = state.load(log) if resume else ([], None, 0)
    deadline = t0 + minutes * 60 if minutes else None
    total = plan["steps"]
    model.train()
    while step < total:
        if deadline and time.time() > deadline:
            log(f"  time budget reached at step {step}")
            break
        for g in opt.param_groups:
            g["lr"] = lr_at(step, total, plan["lr"], plan["warmup"]) * g["scale"]
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
        loss = lm + plan["sup_weight"] * sup + plan["bind_weight"] * bound
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        rec = dict(step=step, loss=round(lm.item(), 4), sup=round(sup.item(), 4), bind=round(bound.item(), 4),
                   t=round(time.time() - t0, 1))
        history.append(rec)
        if step % 25 == 0:
            log(f"  step {step}/{total} answer loss {rec['loss']:.3f} sup {rec['sup']:.3f} "
                f"bind {rec['bind']:.3f}  {rec['t']:.0f}s")
        if step % plan["eval_every"] == 0 or step == total:
            model.eval()
            m = llava_qa(model, tokenizer, val_pool)
            model.train()
            rec["val"] = m
            log(f"  validation step {step}: {m}")
            score = m["presence_acc"] + m["color_acc"] + m["shape_acc"]
            if out_dir and (best is None or score >= best):
                best = score
                save(model, tokenizer, out_dir, extra=dict(step=step, val=m))
        if step % plan["checkpoint_every"] == 0 and step < total:
            state.save(history, best, step)
    tap.handle.remove()
    model.eval()
    if out_dir and best is None:
        save(model, tokenizer, out_dir, extra=dict(step=step))
    if step >= total:
        state.finish()
    return model, tokenizer, history


def save(model, tokenizer, out_dir: str, extra: dict | None = None):
    from .clip import save as clip_save

    clip_save(model, tokenizer, out_dir, extra)
