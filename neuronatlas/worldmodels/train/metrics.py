"""Held-out evaluation of the world models (world seed `data.EVAL_WORLD_SEED`, never trained on).

world-clip, zero-shot top-1 on single-object held-out images from the full world (every shape,
colour, texture, size, background, position): the colour is the argmax over the 11 prompts
"a {color} thing", the shape the argmax over the 9 prompts "a {shape}" (cosine similarity of the
projected embeddings).

world-llava, on held-out scenes of the full world (1-3 objects): for each scene every question of
kind presence ("is there a red circle?" yes/no), color ("what color is the circle?") and shape
("what shape is the red thing?") that `questions(scene)` gives; the answer is the model's greedy next
token after the question (argmax over the whole vocabulary), correct if it equals the one-word answer.
"""

from __future__ import annotations

import torch

from ..arch.clip import encode_images, encode_texts
from ..arch.llava import answer_batch
from . import data as D


def clip_prompts():
    return ([f"a {c} thing" for c in D.NAMES["color"]], [f"a {s}" for s in D.NAMES["shape"]])


@torch.no_grad()
def clip_predictions(model, tokenizer, pool: D.Pool, batch: int = 256) -> tuple[list[str], list[str]]:
    """Zero-shot (colour, shape) predicted for each single-object image of the pool."""
    color_prompts, shape_prompts = clip_prompts()
    tc = torch.nn.functional.normalize(encode_texts(model, tokenizer, color_prompts), dim=-1)
    ts = torch.nn.functional.normalize(encode_texts(model, tokenizer, shape_prompts), dim=-1)
    colors, shapes = [], []
    for i in range(0, len(pool), batch):
        idx = torch.arange(i, min(i + batch, len(pool)))
        img = torch.nn.functional.normalize(encode_images(model, pool.pixels(idx)), dim=-1)
        colors += [D.NAMES["color"][k] for k in (img @ tc.T).argmax(1).tolist()]
        shapes += [D.NAMES["shape"][k] for k in (img @ ts.T).argmax(1).tolist()]
    return colors, shapes


def clip_zero_shot(model, tokenizer, pool: D.Pool, batch: int = 256) -> dict:
    colors, shapes = clip_predictions(model, tokenizer, pool, batch)
    objs = [s.objects[0] for s in pool.scenes]
    n = len(pool)
    hits_c = sum(c == o.color for c, o in zip(colors, objs))
    hits_s = sum(s == o.shape for s, o in zip(shapes, objs))
    return {"color_top1": round(hits_c / n, 4), "shape_top1": round(hits_s / n, 4), "n": n}


def clip_breakdown(model, tokenizer, pool: D.Pool) -> dict:
    """Zero-shot shape top-1 (and n) per object size, texture and background of the pool's images."""
    _, shapes = clip_predictions(model, tokenizer, pool)
    out: dict = {}
    for attr in ("size", "texture", "background"):
        groups: dict = {}
        for s, scene in zip(shapes, pool.scenes):
            o = scene.objects[0]
            key = scene.background if attr == "background" else getattr(o, attr)
            g = groups.setdefault(key, [0, 0])
            g[0] += int(s == o.shape)
            g[1] += 1
        out[attr] = {k: {"shape_top1": round(h / n, 3), "n": n} for k, (h, n) in sorted(groups.items())}
    return out


def clip_eval_pool(n: int = 1000, start: int = 0, size: int = 32) -> D.Pool:
    """Held-out single-object test images at the model's input size (`image_size(model)`)."""
    return D.render_pool(D.EVAL_WORLD_SEED, start, n, D.spec_options({"n_objects": [1, 1]}), size=size)


def llava_eval_pool(n: int = 500, start: int = 0, size: int = 32) -> D.Pool:
    return D.render_pool(D.EVAL_WORLD_SEED + 1, start, n, None, size=size)


def image_size(model) -> int:
    return model.config.vision_config.image_size


LLAVA_KINDS = ("presence", "color", "shape")


@torch.no_grad()
def llava_qa(model, tokenizer, pool: D.Pool, kinds=LLAVA_KINDS, batch: int = 64) -> dict:
    from ...data.world import questions

    items = []
    for i, scene in enumerate(pool.scenes):
        for qa in questions(scene):
            if qa.kind in kinds:
                items.append((i, qa))
    hits = {k: 0 for k in kinds}
    counts = {k: 0 for k in kinds}
    for s in range(0, len(items), batch):
        chunk = items[s:s + batch]
        idx = torch.tensor([i for i, _ in chunk])
        preds = answer_batch(model, tokenizer, pool.pixels(idx), [qa.question for _, qa in chunk])
        for (_, qa), p in zip(chunk, preds):
            counts[qa.kind] += 1
            hits[qa.kind] += int(p == qa.answer)
    out = {f"{k}_acc": round(hits[k] / max(1, counts[k]), 4) for k in kinds}
    out.update({f"{k}_n": counts[k] for k in kinds})
    out["scenes"] = len(pool)
    return out
