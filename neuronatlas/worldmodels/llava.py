"""`zoo:world-llava`: a small transformers `LlavaForConditionalGeneration` that captions world images
and answers questions about them.

Architecture: world-clip's vision tower (CLIP ViT, 32 px, patch 4, hidden 128, 4 layers; initialised
from the trained world-clip), all 65 tokens (CLS + 8x8 patches: `vision_feature_select_strategy=
"full"`) of its last layer (`vision_feature_layer=-1`), a 2-layer GELU projector, and a Llama
language model (hidden 192, 3 layers, 4 heads, MLP 512) over the world tokenizer's 70 ids.

Prompt format (ids, no chat template):
    <bos> <image> x 65  question words "?"   ->  answer words <eos>        (question answering)
    <bos> <image> x 65  <caption>            ->  caption words <eos>       (captioning)
The image token is written once per image feature (65 times): transformers does not expand it when
input_ids are built by hand. Labels are the unshifted input ids on the answer (and <eos>) only.

Training (`train_llava`, deterministic given the seed): full-world scenes (1-3 objects), one
multi-turn row per image: up to 4 questions of every kind `questions(scene)` gives (presence, color
and shape favoured), in random order, then for a quarter of the images the caption as a last turn;
loss on the answer tokens only; AdamW, vision tower at 0.25x the learning rate. Evaluation asks one
question per row (the first turn).
"""

from __future__ import annotations

import math
import random
import time

import torch
import torch.nn.functional as F

from . import data as D
from .tokenizer import BOS_ID, CAPTION_ID, EOS_ID, IMAGE_ID, PAD_ID, build_tokenizer

TEXT = dict(hidden_size=192, intermediate_size=512, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=4, max_position_embeddings=160)
TINY_TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                 num_key_value_heads=2, max_position_embeddings=160)


def n_image_tokens(vision_config) -> int:
    return (vision_config.image_size // vision_config.patch_size) ** 2 + 1  # "full": CLS + patches


def make_config(vision_config, text: dict = TEXT, vocab_size: int | None = None):
    from transformers import LlavaConfig

    vocab_size = vocab_size or len(build_tokenizer())
    vc = vision_config.to_dict() if hasattr(vision_config, "to_dict") else dict(vision_config)
    vc["model_type"] = "clip_vision_model"
    tc = dict(text, model_type="llama", vocab_size=vocab_size, pad_token_id=PAD_ID, bos_token_id=BOS_ID,
              eos_token_id=EOS_ID)
    config = LlavaConfig(vision_config=vc, text_config=tc, image_token_index=IMAGE_ID,
                         image_seq_length=0, vision_feature_select_strategy="full",
                         vision_feature_layer=-1, projector_hidden_act="gelu")
    config.image_seq_length = n_image_tokens(config.vision_config)
    config.architectures = ["LlavaForConditionalGeneration"]
    config.pad_token_id = PAD_ID
    return config


def build_model(clip=None, text: dict = TEXT, seed: int = 0, vision_cfg: dict | None = None):
    """A fresh world-llava; with `clip` (a CLIPModel) its vision tower starts from clip's."""
    from transformers import LlavaForConditionalGeneration

    from .clip import CONFIG, make_config as clip_config

    torch.manual_seed(seed)
    vcfg = clip.config.vision_config if clip is not None else \
        clip_config(dict(CONFIG, vision=vision_cfg or CONFIG["vision"])).vision_config
    model = LlavaForConditionalGeneration(make_config(vcfg, text))
    if clip is not None:
        tower = model.model.vision_tower
        tower = getattr(tower, "vision_model", tower)  # transformers 5.x: no vision_model wrapper
        tower.load_state_dict(clip.vision_model.state_dict())
    return model


def prompt_ids(tokenizer, n_img: int, question: str | None) -> list[int]:
    """<bos> <image>*n_img question-words (or <caption> when question is None)."""
    head = [BOS_ID] + [IMAGE_ID] * n_img
    if question is None:
        return head + [CAPTION_ID]
    return head + tokenizer(question, add_special_tokens=False)["input_ids"]


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
    n_img = model.config.image_seq_length
    seqs = [prompt_ids(tokenizer, n_img, q) for q in questions]
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


KIND_WEIGHT = {"presence": 3.0, "color": 2.0, "shape": 3.0, "texture": 1.0, "size": 0.7,
               "position": 1.0, "count": 0.5}


def sample_items(scene, rng: random.Random, k: int = 4, p_caption: float = 0.25):
    """(question or None for the caption, answer) pairs for one training image."""
    from ..data.world import caption, questions

    qs = questions(scene)
    items = []
    pool = list(qs)
    for _ in range(min(k, len(pool))):
        w = [KIND_WEIGHT[q.kind] for q in pool]
        q = rng.choices(pool, weights=w)[0]
        pool.remove(q)
        items.append((q.question, q.answer))
    rng.shuffle(items)
    if rng.random() < p_caption:  # last: the caption answers every question
        items.append((None, caption(scene)))
    return items


def conversation(tokenizer, n_img: int, items) -> tuple[list[int], list[int]]:
    """One training row per image: <bos> <image>*n_img then every (question, answer) turn as
    `question-words answer <eos>` (the caption turn, question None, as `<caption> caption <eos>`).
    Returns (input_ids, labels) with labels on the answers and their <eos> only (unshifted)."""
    ids = [BOS_ID] + [IMAGE_ID] * n_img
    labels = [-100] * len(ids)
    for q, a in items:
        p = [CAPTION_ID] if q is None else tokenizer(q, add_special_tokens=False)["input_ids"]
        t = answer_ids(tokenizer, a)
        ids += p + t
        labels += [-100] * len(p) + t
    return ids, labels


def batch_loss(model, tokenizer, pixels, items_per_image):
    """Language-model loss on the answers of one multi-turn row per image (standard forward:
    input_ids with the image tokens written out, pixel_values, unshifted labels)."""
    n_img = model.config.image_seq_length
    rows = [conversation(tokenizer, n_img, items) for items in items_per_image]
    ids, lab = _pad([r[0] for r in rows], PAD_ID), _pad([r[1] for r in rows], -100)
    mask = (torch.arange(ids.shape[1])[None] < torch.tensor([len(r[0]) for r in rows])[:, None]).long()
    return model(input_ids=ids, pixel_values=pixels, attention_mask=mask, labels=lab).loss


PLAN = dict(steps=1300, batch=32, lr=1e-3, vision_lr_scale=0.25, pool=24000, k=4, eval_n=100,
            p_caption=0.25)


def _lr(step, total, base, warmup=100):
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return base * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def train_llava(out_dir: str | None = None, seed: int = 0, minutes: float | None = None,
                clip_weights: str | None = None, plan: dict | None = None, text: dict = TEXT,
                clip_model=None, log=print, eval_every: int = 250, workers: int = 2):
    """Train world-llava from world-clip's vision tower; returns (model, tokenizer, history)."""
    from .metrics import llava_qa
    from .zoo import load_world_model

    plan = dict(PLAN, **(plan or {}))
    t0 = time.time()
    torch.manual_seed(seed)
    tokenizer = build_tokenizer()
    if clip_model is None:
        clip_model, _ = load_world_model("world-clip", clip_weights)
    model = build_model(clip_model, text, seed)
    log(f"world-llava: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params; rendering pool")
    pool = D.render_pool(D.TRAIN_WORLD_SEED + seed + 1000, 0, plan["pool"], None, workers=workers)
    eval_pool = D.render_pool(D.EVAL_WORLD_SEED + 1, 0, plan["eval_n"], None)
    log(f"  pool rendered in {time.time() - t0:.0f}s")
    vision = list(model.model.vision_tower.parameters())
    vids = {id(p) for p in vision}
    rest = [p for p in model.parameters() if id(p) not in vids]
    opt = torch.optim.AdamW([{"params": rest, "scale": 1.0},
                             {"params": vision, "scale": plan["vision_lr_scale"]}],
                            lr=plan["lr"], weight_decay=0.01)
    gen = torch.Generator().manual_seed(seed)
    rng = random.Random(seed)
    deadline = t0 + minutes * 60 if minutes else None
    history, best = [], None
    total = plan["steps"]
    model.train()
    for step in range(1, total + 1):
        if deadline and time.time() > deadline:
            log(f"  time budget reached at step {step - 1}")
            break
        for g in opt.param_groups:
            g["lr"] = _lr(step - 1, total, plan["lr"]) * g["scale"]
        idx = torch.randint(len(pool), (plan["batch"],), generator=gen)
        items = [sample_items(pool.scenes[i], rng, plan["k"], plan["p_caption"]) for i in idx.tolist()]
        loss = batch_loss(model, tokenizer, pool.pixels(idx), items)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        rec = dict(step=step, loss=round(loss.item(), 4), t=round(time.time() - t0, 1))
        history.append(rec)
        if step % 25 == 0:
            log(f"  step {step}/{total} loss {rec['loss']:.3f}  {rec['t']:.0f}s")
        if step % eval_every == 0 or step == total:
            model.eval()
            m = llava_qa(model, tokenizer, eval_pool)
            model.train()
            rec["eval"] = m
            log(f"  eval step {step}: {m}")
            score = m["presence_acc"] + m["color_acc"] + m["shape_acc"]
            if out_dir and (best is None or score >= best):
                best = score
                save(model, tokenizer, out_dir, extra=dict(step=step, eval=m))
    model.eval()
    if out_dir and best is None:
        save(model, tokenizer, out_dir, extra=dict(step=len(history)))
    return model, tokenizer, history


def save(model, tokenizer, out_dir: str, extra: dict | None = None):
    from .clip import save as clip_save

    clip_save(model, tokenizer, out_dir, extra)
