"""Training and evaluation data for the world models: pre-rendered pools of world images with
ground-truth labels (per-slot attributes, per-patch attributes), and text for contrastive training.

Images are rendered directly at the model's input size (64 px for world-clip v4; the renderer draws
supersampled and box-averages) and normalised with mean = std = 0.5.
Worlds: training uses world seeds `TRAIN_WORLD_SEED + seed (+ offsets)`, checkpoint selection
`VAL_WORLD_SEED` (and +1 for world-llava), held-out evaluation `EVAL_WORLD_SEED` (and +1); scenes are a pure function of (world seed, index), so both are reproducible and disjoint.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch

from ...data.world import CONCEPTS, SceneOptions, caption, render_labels, sample_scene
from ...data.world.vocab import phrase

TRAIN_WORLD_SEED = 10
EVAL_WORLD_SEED = 999  # held-out test world: the model cards' metrics, never used for selection
VAL_WORLD_SEED = 998  # validation world: checkpoint selection during training
ATTRS = ("shape", "color", "texture", "size")
NAMES = {a: CONCEPTS.names(a) for a in ATTRS + ("background",)}
SLOTS = ("left", "center", "right")


def spec_options(spec: dict | None) -> SceneOptions:
    spec = dict(spec or {})
    if "n_objects" in spec:
        spec["n_objects"] = tuple(spec["n_objects"])
    return SceneOptions(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec.items()})


@dataclass
class Pool:
    """N rendered scenes: images (N,3,S,S) uint8, slot labels (N,3 slots,4 attrs) (0 = empty slot,
    else 1 + index in NAMES[attr]), patch labels (N,3 attrs [shape,color,texture],G*G) (0 = background)."""

    scenes: list
    images: torch.Tensor
    slots: torch.Tensor
    patches: torch.Tensor

    def __len__(self):
        return len(self.scenes)

    def pixels(self, idx) -> torch.Tensor:
        return to_pixels(self.images[idx])


def to_pixels(images_u8: torch.Tensor) -> torch.Tensor:
    return (images_u8.float() / 255.0 - 0.5) / 0.5


def _render_one(args):
    world_seed, index, options, size, patch = args
    scene = sample_scene(world_seed, index, options)
    image, labels = render_labels(scene, size)
    g = size // patch
    # majority object per patch (0 = background)
    n_obj = len(scene.objects)
    onehot = np.eye(n_obj + 1, dtype=np.int32)[labels]  # S,S,K+1
    counts = onehot.reshape(g, patch, g, patch, n_obj + 1).sum(axis=(1, 3))
    owner = counts.argmax(-1).reshape(-1)  # G*G
    slot = np.zeros((3, len(ATTRS)), np.int8)
    per_obj = np.zeros((n_obj + 1, 3), np.int8)
    for k, o in enumerate(scene.objects):
        vals = [NAMES[a].index(getattr(o, a)) + 1 for a in ATTRS]
        slot[SLOTS.index(o.position)] = vals
        per_obj[k + 1] = vals[:3]
    patches = per_obj[owner].T  # 3, G*G
    return scene, np.asarray(image, np.uint8).transpose(2, 0, 1), slot, patches


def render_pool(world_seed: int, start: int, n: int, options: SceneOptions | None = None,
                size: int = 32, patch: int = 4, workers: int = 1) -> Pool:
    """Scenes start..start+n-1 of the world (world_seed, options), rendered at `size` (deterministic)."""
    options = options or SceneOptions()
    jobs = [(world_seed, i, options, size, patch) for i in range(start, start + n)]
    if workers > 1:
        import multiprocessing as mp

        with mp.get_context("fork").Pool(workers) as p:
            out = p.map(_render_one, jobs, chunksize=256)
    else:
        out = [_render_one(j) for j in jobs]
    return Pool(scenes=[o[0] for o in out],
                images=torch.from_numpy(np.stack([o[1] for o in out])),
                slots=torch.from_numpy(np.stack([o[2] for o in out])).long(),
                patches=torch.from_numpy(np.stack([o[3] for o in out])).long())


# -- text for contrastive training ------------------------------------------------------------------
@dataclass(frozen=True)
class TextSpec:
    """A text and what it claims: a full caption (matches only that caption) or a partial
    description of one object (matches any image with an object having all those attributes)."""

    text: str
    full: bool
    attrs: tuple[tuple[str, str], ...] = ()  # (attr, name) the described object must have


def describe_object(obj, rng: random.Random) -> TextSpec:
    """'a [size] [color] [texture] SHAPE|thing [position]', attributes dropped at random."""
    use = {"color": rng.random() < 0.6, "shape": rng.random() < 0.6, "size": rng.random() < 0.25,
           "texture": rng.random() < 0.3, "position": rng.random() < 0.25}
    if not use["color"] and not use["shape"]:
        use["shape" if rng.random() < 0.5 else "color"] = True
    words = ["a"]
    for a in ("size", "color", "texture"):
        if use[a]:
            words.append(phrase(a, getattr(obj, a)))
    words.append(phrase("shape", obj.shape) if use["shape"] else "thing")
    if use["position"]:
        words.append(phrase("position", obj.position))
    attrs = tuple((a, getattr(obj, a)) for a in ("size", "color", "texture", "shape", "position")
                  if use[a])
    return TextSpec(" ".join(words), False, attrs)


def sample_text(scene, rng: random.Random, p_full: float = 0.5) -> TextSpec:
    if rng.random() < p_full:
        return TextSpec(caption(scene), True)
    return describe_object(rng.choice(scene.objects), rng)


def matches(spec: TextSpec, scene) -> bool:
    if spec.full:
        return caption(scene) == spec.text
    return any(all(getattr(o, a) == v for a, v in spec.attrs) for o in scene.objects)


def match_matrix(specs: list[TextSpec], scenes: list) -> torch.Tensor:
    """(n_images, n_texts) bool: text j is true of image i."""
    caps = [caption(s) for s in scenes]
    out = torch.zeros(len(scenes), len(specs), dtype=torch.bool)
    for j, sp in enumerate(specs):
        for i, s in enumerate(scenes):
            out[i, j] = (caps[i] == sp.text) if sp.full else \
                any(all(getattr(o, a) == v for a, v in sp.attrs) for o in s.objects)
    return out
