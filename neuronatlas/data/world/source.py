"""`world:` probe source: `world:n=10000,size=224,seed=0` (defaults n=1000, size=224, seed=0).

Curriculum restrictions may follow, values separated by "/": `objects=1` or `objects=1-2`,
`shapes=circle/square`, `colors=...`, `textures=solid`, `backgrounds=gray`, `sizes=large`.

Image `index` is scene (seed, index) rendered at size x size. image_id = `world/{seed}/{index}`
(`world/{seed}.{tag}/{index}` when restricted, tag = a short hash of the restrictions, so two
different worlds never share ids); path = `world:seed=S,size=Z#index`; label = the caption. Images
are rendered on demand (no files); `read_bytes` is the raw RGB bytes of the render (for hashing).
The fingerprint covers seed, size and restrictions, since they all change the pixels.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ...errors import UserError, near_matches
from ..probe import ImageItem, ProbeSet
from .render import render, render_image
from .scene import DEFAULT_OPTIONS, Scene, SceneOptions, sample_scene
from .text import QA, caption, parse_caption, questions

DEFAULTS = {"n": 1000, "size": 224, "seed": 0}
LIST_KEYS = ("shapes", "colors", "textures", "backgrounds", "sizes")
KEYS = ("n", "size", "seed", "objects") + LIST_KEYS


@dataclass(frozen=True)
class Annotation:
    """Ground truth of one world image."""

    scene: Scene
    caption: str
    concepts: frozenset[str]  # concept ids the caption mentions = the concept keys of `masks`
    masks: dict[str, np.ndarray]  # concept id or `object:K` -> H x W bool (visible pixels)
    qa: list[QA]


def _int(key: str, value: str, lo: int) -> int:
    try:
        v = int(value)
    except ValueError:
        raise UserError(f"world: {key}={value!r} is not a whole number; e.g. world:{key}="
                        f"{DEFAULTS.get(key, 1)}") from None
    if v < lo:
        raise UserError(f"world: {key}={v} must be at least {lo}")
    return v


def parse_spec(arg: str) -> tuple[int, int, int, SceneOptions]:
    """(n, size, seed, options) from `n=...,size=...,seed=...[,objects=...,shapes=a/b...]`."""
    values = dict(DEFAULTS)
    restrict: dict = {}
    for part in (arg or "").split(","):
        part = part.strip()
        if not part:
            continue
        key, eq, value = (s.strip() for s in part.partition("="))
        if key not in KEYS or not eq:
            hits = near_matches(key, list(KEYS))
            hint = f" (did you mean {', '.join(hits)}?)" if hits and key not in KEYS else ""
            raise UserError(f"world: bad setting {part!r}{hint}; write KEY=VALUE pairs separated by "
                            f"commas with keys {', '.join(KEYS)}, e.g. world:n=1000,size=224,seed=0")
        if key in DEFAULTS:
            values[key] = _int(key, value, {"n": 1, "size": 8, "seed": 0}[key])
        elif key == "objects":
            lo, _, hi = value.partition("-")
            restrict["n_objects"] = (_int(key, lo, 1), _int(key, hi or lo, 1))
        else:
            restrict[key] = tuple(v.strip() for v in value.split("/") if v.strip())
    return values["n"], values["size"], values["seed"], SceneOptions(**restrict)


def options_spec(options: SceneOptions) -> str:
    """The spec fragment that restricts the world as `options` does ('' for the defaults)."""
    parts = []
    if options.n_objects != DEFAULT_OPTIONS.n_objects:
        lo, hi = options.n_objects
        parts.append(f"objects={lo}" if lo == hi else f"objects={lo}-{hi}")
    for key in LIST_KEYS:
        value = getattr(options, key)
        if value is not None:
            parts.append(f"{key}={'/'.join(value)}")
    return ",".join(parts)


class WorldProbeSet(ProbeSet):
    kind = "world"
    encoded_bytes = False  # rendered on demand: the loader hashes the pixels of read_image

    def __init__(self, n: int = 1000, size: int = 224, seed: int = 0,
                 options: SceneOptions = DEFAULT_OPTIONS):
        if n < 1 or size < 8 or seed < 0:
            raise UserError(f"world: need n >= 1, size >= 8 and seed >= 0 (got n={n}, size={size}, "
                            f"seed={seed})")
        self.n, self.size, self.seed, self.options = int(n), int(size), int(seed), options
        extra = options_spec(options)
        self.spec = f"world:n={n},size={size},seed={seed}" + (f",{extra}" if extra else "")
        world = str(seed)
        if extra:
            world += "." + hashlib.sha256(extra.encode()).hexdigest()[:8]
        where = f"world:seed={seed},size={size}" + (f",{extra}" if extra else "")
        self.items = [ImageItem(f"world/{world}/{i}", f"{where}#{i}", caption(self.scene(i)))
                      for i in range(self.n)]

    def scene(self, index: int) -> Scene:
        if not 0 <= index < self.n:
            raise IndexError(f"world image {index} is out of range 0..{self.n - 1}")
        return sample_scene(self.seed, index, self.options)

    def read_image(self, index: int) -> Image.Image:
        return render_image(self.scene(index), self.size)

    def read_bytes(self, index: int) -> bytes:
        return self.read_image(index).tobytes()

    def caption(self, index: int) -> str:
        return caption(self.scene(index))

    def questions(self, index: int) -> list[QA]:
        return questions(self.scene(index))

    def masks(self, index: int, size: int | None = None) -> dict[str, np.ndarray]:
        return render(self.scene(index), size or self.size)[1]

    def annotation(self, index: int, size: int | None = None) -> Annotation:
        """Scene, caption, caption concepts, masks (at `size`, default the probe's) and QA of one image."""
        scene = self.scene(index)
        text = caption(scene)
        return Annotation(scene=scene, caption=text, concepts=parse_caption(text),
                          masks=render(scene, size or self.size)[1], qa=questions(scene))

    def fingerprint(self) -> str:
        h = hashlib.sha256(f"{self.kind}|{self.spec}|{ProbeSet.fingerprint(self)}".encode())
        return h.hexdigest()[:16]


def open_source(arg: str = "", options: SceneOptions | None = None) -> WorldProbeSet:
    """`world:ARG`; `options` (a SceneOptions) replaces the restrictions parsed from ARG."""
    n, size, seed, parsed = parse_spec(arg)
    return WorldProbeSet(n=n, size=size, seed=seed, options=options or parsed)

