"""`zoo:world-clip`: a small transformers `CLIPModel` trained on the procedural world.

Architecture (CONFIG, with the plan's input size): vision ViT, 64 px input, patch 8 (8x8 grid + CLS),
hidden 128, 4 layers, 4 heads, MLP 512; text transformer over the world's word vocabulary (70 ids),
hidden 128, 4 layers, MLP 512; projection 128. About 1.67M parameters.

Training (`train_clip`, deterministic given the seed; step counts, not wall time, drive the schedule;
PLAN below): pre-rendered pools of easy (one solid medium/large object), one-object and full-world
scenes, then phases:
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

import math
import random
import time

import torch
import torch.nn.functional as F
from torch import nn

from . import data as D
from .resume import TrainingState
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


def lr_at(step: int, total: int, base: float, warmup: int) -> float:
    """Both world models' schedule: linear warm-up, then one cosine from base down to 5% of it."""
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return base * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


# A plan: the pools (world-seed offset from TRAIN_WORLD_SEED + seed, size, scene options) and the
# phases run one after the other. Each phase draws every batch from its pools in fixed proportions,
# trains the supervised heads (weights per head kind) and, when `contrastive`, adds the CLIP loss
# with the supervised losses scaled by `sup_weight`. One cosine schedule spans all phases.
_SLOT_PATCH = dict(slot=1.0, patch=1.0, present=0.0)
_ALL_HEADS = dict(slot=1.0, patch=1.0, present=1.0)
PLAN_V1 = dict(  # the committed world-clip's schedule: 32 px / patch 4, solid objects first
    image_size=32, patch=4, batch=128, lr=1e-3, warmup=150, weight_decay=0.05,
    pools=dict(a1=dict(offset=0, n=12000, world=dict(n_objects=[1, 1], textures=["solid"],
                                                       sizes=["medium", "large"],
                                                       backgrounds=["gray", "gradient"])),
               full=dict(offset=0, n=24000, world=None),
               single=dict(offset=500, n=6000, world=dict(n_objects=[1, 1]))),
    phases=[dict(name="A1", steps=350, mix=dict(a1=1.0), heads=_SLOT_PATCH),
            dict(name="A2", steps=450, mix=dict(full=1.0), heads=_SLOT_PATCH),
            dict(name="B", steps=600, mix=dict(full=0.75, single=0.25), heads=_SLOT_PATCH,
                 contrastive=True, sup_weight=0.5)],
    eval_n=300, eval_every=200, checkpoint_every=100,
)
PLAN_V3 = dict(  # tried: 48 px / patch 6, batch 64, lr 2e-3, half single objects, all heads
    image_size=48, patch=6, batch=64, lr=2e-3, warmup=150, weight_decay=0.05,
    pools=dict(single=dict(offset=500, n=12000, world=dict(n_objects=[1, 1])),
               full=dict(offset=0, n=24000, world=None)),
    phases=[dict(name="A", steps=900, mix=dict(single=0.5, full=0.5), heads=_ALL_HEADS),
            dict(name="B", steps=500, mix=dict(single=0.5, full=0.5), heads=_ALL_HEADS,
                 contrastive=True, sup_weight=0.5)],
    eval_n=300, eval_every=100, checkpoint_every=100,
)
PLAN_V4 = dict(  # 64 px / patch 8, a long supervised phase after an easy start, then contrastive
    image_size=64, patch=8, batch=128, lr=1.5e-3, warmup=200, weight_decay=0.05,
    pools=dict(easy=dict(offset=1, n=10000, world=dict(n_objects=[1, 1], textures=["solid"],
                                                        sizes=["medium", "large"])),
               single=dict(offset=500, n=30000, world=dict(n_objects=[1, 1])),
               full=dict(offset=0, n=24000, world=None)),
    phases=[dict(name="E", steps=400, mix=dict(easy=1.0), heads=_ALL_HEADS),
            dict(name="A", steps=2400, mix=dict(single=0.6, full=0.4), heads=_ALL_HEADS),
            dict(name="B", steps=1000, mix=dict(single=0.5, full=0.5), heads=_ALL_HEADS,
                 contrastive=True, sup_weight=0.5)],
    eval_n=300, eval_every=200, checkpoint_every=100,
)
PLANS = {"v1": PLAN_V1, "v3": PLAN_V3, "v4": PLAN_V4}
PLAN = PLAN_V4  # the committed weights; v1 (38.1% zero-shot shape) and v3 (28.5%) were tried before


def plan_config(plan: dict, cfg: dict = CONFIG) -> dict:
    """The model config of a plan: its image size and patch replace cfg's."""
    return dict(cfg, vision=dict(cfg["vision"], image_size=plan["image_size"], patch_size=plan["patch"]))


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

    plan = dict(PLAN, **(plan or {}))
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
    history, best, step = state.load(log) if resume else ([], None, 0)
    deadline = t0 + minutes * 60 if minutes else None
    ends = [sum(p["steps"] for p in phases[:k + 1]) for k in range(len(phases))]
    bsz = plan["batch"]
    model.train()
    while step < total:
        if deadline and time.time() > deadline:
            log(f"  time budget reached at step {step}")
            break
        if stop_at is not None and step >= stop_at:  # an interruption (tests): the state file stays
            break
        k = next(i for i, e in enumerate(ends) if step < e)
        ph = phases[k]
        for g in opt.param_groups:
            g["lr"] = lr_at(step, total, plan["lr"], plan["warmup"])
        pixels, slots, patches, scenes = _batch(pools, ph["mix"], bsz, gen)
        vout = vis(pixel_values=pixels)
        loss_sup, accs = heads.loss(vout, vis.post_layernorm, slots, patches, ph["heads"])
        loss, loss_con = loss_sup, torch.tensor(0.0)
        if ph.get("contrastive"):
            loss_con = contrastive_loss(model, tokenizer, vout, scenes, rng)
            loss = loss_con + ph.get("sup_weight", 0.5) * loss_sup
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        rec = dict(step=step, phase=ph["name"], loss=round(loss.item(), 4), sup=round(loss_sup.item(), 4),
                   con=round(loss_con.item(), 4), acc_shape=round(accs.get("shape", 0.0), 3),
                   acc_color=round(accs.get("color", 0.0), 3), t=round(time.time() - t0, 1))
        history.append(rec)
        if step % 25 == 0:
            log(f"  {ph['name']} step {step}/{total} loss {rec['loss']:.3f} (sup {rec['sup']:.3f}, con "
                f"{rec['con']:.3f}) train acc shape {rec['acc_shape']:.2f} color {rec['acc_color']:.2f}"
                f"  {rec['t']:.0f}s")
        if out_dir and step == ends[k] and not ph.get("contrastive") and \
                not any(p.get("contrastive") for p in phases[:k]):
            save_tower(vis, out_dir)  # after the supervised phases: world-llava's starting tower
        if ph.get("contrastive") and (step % plan["eval_every"] == 0 or step == total):
            model.eval()
            m = clip_zero_shot(model, tokenizer, val_pool)
            model.train()
            rec["val"] = m
            log(f"  validation step {step}: {m}")
            score = m["color_top1"] + m["shape_top1"]
            if out_dir and (best is None or score >= best):
                best = score
                save(model, tokenizer, out_dir, extra=dict(step=step, val=m))
        if step % plan["checkpoint_every"] == 0 and step < total:
            state.save(history, best, step)
    model.eval()
    if out_dir and best is None:
        save(model, tokenizer, out_dir, extra=dict(step=step))
    if step >= total:
        state.finish()
    log(f"  done at step {step} ({time.time() - t0:.0f}s)")
    return model, tokenizer, history


TOWER_FILE = "warmup_vision.safetensors"


def save_tower(vision_model, out_dir: str):
    import os

    from safetensors.torch import save_file

    os.makedirs(out_dir, exist_ok=True)
    # the vision config travels in the file's metadata, so the tower loads on its own
    save_file({k: v.contiguous() for k, v in vision_model.state_dict().items()},
              os.path.join(out_dir, TOWER_FILE), metadata={"vision_config": vision_model.config.to_json_string()})


def load_tower(path: str):
    """(CLIPVisionConfig, state dict) of a tower saved by save_tower."""
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file
    from transformers import CLIPVisionConfig

    with safe_open(path, "pt") as f:
        meta = f.metadata() or {}
    if "vision_config" not in meta:
        raise ValueError(f"{path} has no vision_config metadata (not written by save_tower)")
    return CLIPVisionConfig(**json.loads(meta["vision_config"])), load_file(path)


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
