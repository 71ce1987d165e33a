"""Training `zoo:world-clip` (architecture: arch/clip.py; schedules: plans.py CLIP_PLANS).

`train_clip` is deterministic given the seed (step counts, not wall time, drive the schedule):
pre-rendered pools of easy (one solid medium/large object), one-object and full-world scenes, then
the plan's phases:
  E, A  vision warm-up, supervised from the scene ground truth: linear heads on the pooled (CLS)
     output predict shape / color / texture / size of the object in each horizontal slot (left /
     center / right, or "empty") and which shapes / colours / textures are present (position-free);
     heads on every patch token predict the shape / color / texture of the object covering that
     patch (or "background"). E uses only easy scenes (shape is learnt there first), A the rest.
  B  contrastive CLIP training on (image, text) pairs, with the supervised losses kept as
     auxiliaries. Texts are full captions (half) or partial descriptions of one object ("a red
     thing", "a small star on the left", ...); the contrastive targets are multi-positive: every
     text true of an image counts as a match.
The tower after the supervised phases is saved (`warmup_vision.safetensors`); the checkpoint kept is
the best on validation images (world seed VAL_WORLD_SEED); the training state is saved periodically
and resumed exactly. Earlier schedules (v1: 32 px / patch 4, 1400 steps; v3: 48 px / patch 6)
reached 38% and 28.5% held-out zero-shot shape; v4 (64 px / patch 8, a 400-step easy start, 2400
supervised steps, 1000 contrastive) is the committed one; see the model card.
"""

from __future__ import annotations

import random
import time

import torch
import torch.nn.functional as F
from torch import nn

from ..arch.checkpoint import save_tower
from ..arch.clip import CONFIG, build_model, encode_texts, sized
from ..arch.tokenizer import build_tokenizer
from . import data as D
from .loop import Job, run
from .plans import resolve_clip_plan
from .resume import TrainingState


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


def plan_config(plan: dict, cfg: dict = CONFIG) -> dict:
    """The model config of a plan: its image size and patch replace cfg's."""
    return sized(cfg, plan["image_size"], plan["patch"])


def _batch(pools: dict, mix: dict, bsz: int, gen: torch.Generator):
    """(pixels, slots, patches, scenes) of one batch: round(bsz * share) images from each pool."""
    names = list(mix)
    counts = [int(round(bsz * mix[n])) for n in names[:-1]]
    counts.append(bsz - sum(counts))
    parts = []
    for name, k in zip(names, counts):
        pool = pools[name]
        idx = torch.randint(len(pool), (k,), generator=gen)
        parts.append((pool.pixels(idx), pool.slots[idx], pool.patches[idx],
                      [pool.scenes[i] for i in idx.tolist()]))
    return (torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]),
            torch.cat([p[2] for p in parts]), [s for p in parts for s in p[3]])


def contrastive_loss(model, tokenizer, vout, scenes, rng: random.Random) -> torch.Tensor:
    """Multi-positive CLIP loss: one sampled text per image; every text true of an image matches it."""
    specs = [D.sample_text(s, rng) for s in scenes]
    match = D.match_matrix(specs, scenes).float()
    img = F.normalize(model.visual_projection(vout.pooler_output), dim=-1)
    txt = F.normalize(encode_texts(model, tokenizer, [s.text for s in specs]), dim=-1)
    logits = model.logit_scale.exp().clamp(max=100) * img @ txt.T
    li = -(F.log_softmax(logits, 1) * match / match.sum(1, keepdim=True)).sum(1).mean()
    lt = -(F.log_softmax(logits, 0) * match / match.sum(0, keepdim=True)).sum(0).mean()
    return (li + lt) / 2


def train_clip(out_dir: str | None = None, seed: int = 0, minutes: float | None = None,
               cfg: dict = CONFIG, plan: dict | None = None, log=print, workers: int = 2,
               resume: bool = True, stop_at: int | None = None):
    """Train world-clip; returns (model, tokenizer, history). With out_dir: saves the best checkpoint
    (zero-shot colour + shape on held-out validation images), `warmup_vision.safetensors` (the vision
    tower after the supervised phases, world-llava's starting point) and, every checkpoint_every
    steps, the full training state, from which an interrupted run resumes exactly."""
    from .metrics import clip_zero_shot

    plan = resolve_clip_plan(plan)
    cfg = plan_config(plan, cfg)
    size, patch = plan["image_size"], plan["patch"]
    t0 = time.time()
    torch.manual_seed(seed)
    random.seed(seed)
    tokenizer = build_tokenizer()
    model = build_model(cfg, seed)
    heads = Heads(model.config.vision_config.hidden_size)
    vis = model.vision_model
    world = D.TRAIN_WORLD_SEED + seed
    log(f"world-clip: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params, {size} px, "
        f"patch {patch}; rendering pools")
    pools = {name: D.render_pool(world + p["offset"], 0, p["n"], D.spec_options(p["world"]), size=size,
                                 patch=patch, workers=workers) for name, p in plan["pools"].items()}
    val_pool = D.render_pool(D.VAL_WORLD_SEED, 0, plan["eval_n"], D.spec_options({"n_objects": [1, 1]}),
                             size=size, patch=patch)
    log(f"  pools rendered in {time.time() - t0:.0f}s")
    params = list(model.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=plan["lr"], weight_decay=plan["weight_decay"])
    phases = plan["phases"]
    total = sum(p["steps"] for p in phases)
    gen = torch.Generator().manual_seed(seed)
    rng = random.Random(seed)
    state = TrainingState(out_dir, model, heads, opt, gen, rng, dict(plan, seed=seed, cfg=cfg))
    ends = [sum(p["steps"] for p in phases[:k + 1]) for k in range(len(phases))]

    def phase(step: int) -> int:  # the phase of step `step` (0-based)
        return next(i for i, e in enumerate(ends) if step < e)

    def loss(step: int):
        ph = phases[phase(step)]
        pixels, slots, patches, scenes = _batch(pools, ph["mix"], plan["batch"], gen)
        vout = vis(pixel_values=pixels)
        loss_sup, accs = heads.loss(vout, vis.post_layernorm, slots, patches, ph["heads"])
        total_loss, loss_con = loss_sup, torch.tensor(0.0)
        if ph.get("contrastive"):
            loss_con = contrastive_loss(model, tokenizer, vout, scenes, rng)
            total_loss = loss_con + ph.get("sup_weight", 0.5) * loss_sup
        return total_loss, dict(phase=ph["name"], loss=round(total_loss.item(), 4),
                                sup=round(loss_sup.item(), 4), con=round(loss_con.item(), 4),
                                acc_shape=round(accs.get("shape", 0.0), 3),
                                acc_color=round(accs.get("color", 0.0), 3))

    def after_step(step: int):  # after the supervised phases: world-llava's starting tower
        k = phase(step - 1)
        if out_dir and step == ends[k] and not phases[k].get("contrastive") and \
                not any(p.get("contrastive") for p in phases[:k]):
            save_tower(vis, out_dir)

    def validate():
        m = clip_zero_shot(model, tokenizer, val_pool)
        return m, m["color_top1"] + m["shape_top1"]

    def progress(rec: dict) -> str:
        return (f"  {rec['phase']} step {rec['step']}/{total} loss {rec['loss']:.3f} (sup {rec['sup']:.3f}, "
                f"con {rec['con']:.3f}) train acc shape {rec['acc_shape']:.2f} color "
                f"{rec['acc_color']:.2f}  {rec['t']:.0f}s")

    job = Job(model, tokenizer, opt, state, total, plan["lr"], plan["warmup"], plan["checkpoint_every"],
              loss=loss, validates=lambda step: bool(phases[phase(step - 1)].get("contrastive")) and (
                  step % plan["eval_every"] == 0 or step == total),
              validate=validate, progress=progress, after_step=after_step)
    history, _ = run(job, out_dir, t0, minutes, stop_at, resume, log)
    return model, tokenizer, history
