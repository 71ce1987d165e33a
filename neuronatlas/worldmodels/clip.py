"""`zoo:world-clip`: a small transformers `CLIPModel` trained on the procedural world.

Architecture (CONFIG): vision ViT, 32 px input, patch 4 (8x8 grid + CLS), hidden 128, 4 layers,
4 heads, MLP 512; text transformer over the world's word vocabulary (70 ids), hidden 128, 4 layers,
MLP 512; projection 128. About 1.6M parameters.

Training (`train_clip`, deterministic given the seed; step counts, not wall time, drive the schedule;
PLAN_V1 below is the committed model's schedule, PLAN_V2 a shape-first variant that did worse):
  phase A  vision warm-up, supervised from the scene ground truth: linear heads on the pooled (CLS)
           output predict shape / color / texture / size of the object in each horizontal slot
           (left / center / right, or "empty"), and heads on every patch token predict the shape /
           color / texture of the object covering that patch (or "background"). Curriculum:
           A1 single medium/large solid objects on plain backgrounds, A2 the full world.
  phase B  contrastive CLIP training on (image, text) pairs from the full world, with the
           supervised losses kept as auxiliaries. Texts are full captions (half) or partial
           descriptions of one object ("a red thing", "a small star on the left", ...); the
           contrastive targets are multi-positive: every text true of an image counts as a match.
"""

from __future__ import annotations

import math
import random
import time

import torch
import torch.nn.functional as F
from torch import nn

from . import data as D
from .tokenizer import BOS_ID, EOS_ID, PAD_ID, build_tokenizer

IMAGE_SIZE, PATCH = 32, 4
CONFIG = dict(
    vision=dict(hidden_size=128, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
                image_size=IMAGE_SIZE, patch_size=PATCH, hidden_act="gelu"),
    text=dict(hidden_size=128, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
              max_position_embeddings=48, hidden_act="gelu"),
    projection_dim=128,
)
TINY = dict(
    vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                image_size=IMAGE_SIZE, patch_size=PATCH),
    text=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
              max_position_embeddings=48),
    projection_dim=32,
)


def make_config(cfg: dict = CONFIG, vocab_size: int | None = None):
    from transformers import CLIPConfig

    vocab_size = vocab_size or len(build_tokenizer())
    text = dict(cfg["text"], vocab_size=vocab_size, pad_token_id=PAD_ID, bos_token_id=BOS_ID,
                eos_token_id=EOS_ID)
    config = CLIPConfig(text_config=text, vision_config=dict(cfg["vision"]),
                        projection_dim=cfg["projection_dim"])
    config.architectures = ["CLIPModel"]
    return config


def build_model(cfg: dict = CONFIG, seed: int = 0):
    from transformers import CLIPModel

    torch.manual_seed(seed)
    return CLIPModel(make_config(cfg))


class Heads(nn.Module):
    """Supervised heads for the vision warm-up: per slot (on the pooled output) and per patch."""

    def __init__(self, hidden: int):
        super().__init__()
        n = {a: len(D.NAMES[a]) + 1 for a in D.ATTRS}
        self.slot = nn.ModuleDict({a: nn.Linear(hidden, 3 * n[a]) for a in D.ATTRS})
        self.patch = nn.ModuleDict({a: nn.Linear(hidden, n[a]) for a in D.ATTRS[:3]})
        self.present = nn.ModuleDict({a: nn.Linear(hidden, n[a] - 1) for a in D.ATTRS[:3]})
        self.n = n

    def loss(self, vision_out, post_ln, slots, patches, weights=None):
        """Summed cross-entropies; weights {"slot", "patch", "present"} scale the three head kinds."""
        w = {"slot": 1.0, "patch": 1.0, "present": 0.0, **(weights or {})}
        pooled = vision_out.pooler_output  # (B, H), CLS after post_layernorm
        losses, accs = {}, {}
        if w["present"]:
            # position-free: which shapes / colours / textures are in the image (soft CE over them)
            for k, a in enumerate(D.ATTRS[:3]):
                logits = self.present[a](pooled)
                multi = torch.zeros_like(logits)
                occ = slots[:, :, k]
                multi = multi.scatter_add(1, (occ - 1).clamp(min=0), (occ > 0).float()).clamp(max=1)
                target = multi / multi.sum(1, keepdim=True).clamp(min=1)
                losses[f"present_{a}"] = w["present"] * -(F.log_softmax(logits, 1) * target).sum(1).mean()
                if a in ("shape", "color"):
                    accs[a] = multi.gather(1, logits.argmax(1, keepdim=True)).mean().item()
        if not w["slot"] and not w["patch"]:
            return sum(losses.values()), accs
        tokens = post_ln(vision_out.last_hidden_state[:, 1:])  # (B, G*G, H)
        for a in (D.ATTRS if w["slot"] else ()):
            k = D.ATTRS.index(a)
            logits = self.slot[a](pooled).view(-1, 3, self.n[a])
            losses[f"slot_{a}"] = w["slot"] * F.cross_entropy(logits.reshape(-1, self.n[a]),
                                                             slots[:, :, k].reshape(-1))
            occupied = slots[:, :, k] > 0
            accs.setdefault(a, (logits.argmax(-1) == slots[:, :, k])[occupied].float().mean().item())
        for k, a in enumerate(D.ATTRS[:3] if w["patch"] else ()):
            logits = self.patch[a](tokens)
            losses[f"patch_{a}"] = w["patch"] * F.cross_entropy(logits.reshape(-1, self.n[a]),
                                                               patches[:, k].reshape(-1))
        return sum(losses.values()), accs


def encode_texts(model, tokenizer, texts: list[str]) -> torch.Tensor:
    enc = tokenizer(list(texts), padding=True, return_tensors="pt")
    out = model.get_text_features(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
    return getattr(out, "pooler_output", out)


def encode_images(model, pixels: torch.Tensor) -> torch.Tensor:
    out = model.get_image_features(pixel_values=pixels)
    return getattr(out, "pooler_output", out)


def _lr(step, total, base, warmup=150):  # noqa: D103
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return base * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


PLAN_V1 = dict(  # first schedule (steps), batch 128: slot + patch heads throughout
    a1_steps=350, a2_steps=450, b_steps=600, batch=128, lr=1e-3,
    a1_world=dict(n_objects=[1, 1], textures=["solid"], sizes=["medium", "large"],
                  backgrounds=["gray", "gradient"]),
    a1_pool=12000, a2_pool=24000, b_pool=24000, single_pool=6000, eval_n=300,
)


PLAN_V2 = dict(  # shape-first: the measured recipe (single large solid objects, pooled heads) first
    PLAN_V1, a1_steps=500, a2_steps=400, b_steps=400, warmup=200,
    a1_world=dict(n_objects=[1, 1], textures=["solid"], sizes=["large"], backgrounds=["gray"]),
    heads=dict(A1=dict(present=1.0, slot=0.0, patch=0.0), A2=dict(present=1.0, slot=0.0, patch=0.5),
               B=dict(present=1.0, slot=0.0, patch=0.5)),
)
PLANS = {"v1": PLAN_V1, "v2": PLAN_V2}
PLAN = PLAN_V1  # the committed world-clip (v2 was tried: held-out shape 34.3% vs 38.1%)


def train_clip(out_dir: str | None = None, seed: int = 0, minutes: float | None = None,
               cfg: dict = CONFIG, plan: dict | None = None, log=print, eval_every: int = 200,
               workers: int = 2):
    """Train world-clip; returns (model, tokenizer, history). Saves to out_dir when given."""
    plan = dict(PLAN, **(plan or {}))
    t0 = time.time()
    torch.manual_seed(seed)
    random.seed(seed)
    tokenizer = build_tokenizer()
    model = build_model(cfg, seed)
    hidden = model.config.vision_config.hidden_size
    heads = Heads(hidden)
    vis = model.vision_model
    world = D.TRAIN_WORLD_SEED + seed
    log(f"world-clip: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params; rendering pools")
    pool_a1 = D.render_pool(world, 0, plan["a1_pool"], D.spec_options(plan["a1_world"]), workers=workers)
    pool_full = D.render_pool(world, 0, plan["a2_pool"], None, workers=workers)
    pool_single = D.render_pool(world + 500, 0, plan["single_pool"],
                                D.spec_options({"n_objects": [1, 1]}), workers=workers)
    log(f"  pools rendered in {time.time() - t0:.0f}s")
    from .metrics import clip_zero_shot

    eval_pool = D.render_pool(D.EVAL_WORLD_SEED, 0, plan["eval_n"], D.spec_options({"n_objects": [1, 1]}))

    params = [p for p in model.parameters()] + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=plan["lr"], weight_decay=0.05)
    total = plan["a1_steps"] + plan["a2_steps"] + plan["b_steps"]
    gen = torch.Generator().manual_seed(seed)
    rng = random.Random(seed)
    history = []
    bsz = plan["batch"]
    step = 0
    deadline = t0 + minutes * 60 if minutes else None
    best = None
    for phase, steps in (("A1", plan["a1_steps"]), ("A2", plan["a2_steps"]), ("B", plan["b_steps"])):
        model.train()
        for _ in range(steps):
            if deadline and time.time() > deadline:
                log(f"  time budget reached at step {step}")
                break
            for g in opt.param_groups:
                g["lr"] = _lr(step, total, plan["lr"], plan.get("warmup", 150))
            if phase == "A1":
                pool, idx = pool_a1, torch.randint(len(pool_a1), (bsz,), generator=gen)
            elif phase == "A2":
                pool, idx = pool_full, torch.randint(len(pool_full), (bsz,), generator=gen)
            else:  # 3/4 full world, 1/4 single objects (the zero-shot protocol's distribution)
                nf = bsz * 3 // 4
                pool = None
                idx_f = torch.randint(len(pool_full), (nf,), generator=gen)
                idx_s = torch.randint(len(pool_single), (bsz - nf,), generator=gen)
            if pool is not None:
                pixels, slots, patches = pool.pixels(idx), pool.slots[idx], pool.patches[idx]
                scenes = [pool.scenes[i] for i in idx.tolist()]
            else:
                pixels = torch.cat([pool_full.pixels(idx_f), pool_single.pixels(idx_s)])
                slots = torch.cat([pool_full.slots[idx_f], pool_single.slots[idx_s]])
                patches = torch.cat([pool_full.patches[idx_f], pool_single.patches[idx_s]])
                scenes = [pool_full.scenes[i] for i in idx_f.tolist()] + \
                    [pool_single.scenes[i] for i in idx_s.tolist()]
            vout = vis(pixel_values=pixels)
            loss_sup, accs = heads.loss(vout, vis.post_layernorm, slots, patches,
                                        plan.get("heads", {}).get(phase))
            loss = loss_sup
            loss_con = torch.tensor(0.0)
            if phase == "B":
                specs = [D.sample_text(s, rng) for s in scenes]
                match = D.match_matrix(specs, scenes).float()
                img = F.normalize(model.visual_projection(vout.pooler_output), dim=-1)
                txt = F.normalize(encode_texts(model, tokenizer, [s.text for s in specs]), dim=-1)
                logits = model.logit_scale.exp().clamp(max=100) * img @ txt.T
                li = -(F.log_softmax(logits, 1) * match / match.sum(1, keepdim=True)).sum(1).mean()
                lt = -(F.log_softmax(logits, 0) * match / match.sum(0, keepdim=True)).sum(0).mean()
                loss_con = (li + lt) / 2
                loss = loss_con + 0.5 * loss_sup
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            step += 1
            rec = dict(step=step, phase=phase, loss=round(loss.item(), 4),
                       sup=round(loss_sup.item(), 4), con=round(loss_con.item(), 4),
                       acc_shape=round(accs["shape"], 3), acc_color=round(accs["color"], 3),
                       t=round(time.time() - t0, 1))
            history.append(rec)
            if step % 25 == 0:
                log(f"  {phase} step {step}/{total} loss {rec['loss']:.3f} (sup {rec['sup']:.3f}, con "
                    f"{rec['con']:.3f}) slot acc shape {rec['acc_shape']:.2f} color "
                    f"{rec['acc_color']:.2f}  {rec['t']:.0f}s")
            if phase == "B" and (step % eval_every == 0):
                model.eval()
                m = clip_zero_shot(model, tokenizer, eval_pool)
                model.train()
                log(f"  eval step {step}: {m}")
                rec["eval"] = m
                score = m["color_top1"] + m["shape_top1"]
                if out_dir and (best is None or score >= best):
                    best = score
                    save(model, tokenizer, out_dir, extra=dict(step=step, eval=m))
        else:
            continue
        break
    model.eval()
    m = clip_zero_shot(model, tokenizer, eval_pool)
    log(f"  final step {step}: {m}  ({time.time() - t0:.0f}s)")
    if out_dir and (best is None or m["color_top1"] + m["shape_top1"] >= best):
        save(model, tokenizer, out_dir, extra=dict(step=step, eval=m))
    return model, tokenizer, history


def save(model, tokenizer, out_dir: str, extra: dict | None = None):
    import json
    import os

    from .tokenizer import save_tokenizer

    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    save_tokenizer(tokenizer, out_dir)
    if extra:
        with open(os.path.join(out_dir, "train_state.json"), "w") as f:
            json.dump(extra, f, indent=1)
