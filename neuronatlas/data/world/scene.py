"""Scenes: frozen descriptions of 1-3 objects on a background, sampled from (seed, index) alone.

`sample_scene(seed, index, options)` draws from `random.Random("world/{seed}/{index}")`, so image i
of `world:seed=0` is the same whatever n is and whichever other images were rendered. Sampling, in
order: the number of objects; the background; one distinct horizontal slot per object (left / center
/ right); for each object its shape, colour (never one the background hides), texture, size, and a
centre inside its slot, placed so that no two objects overlap much (centre distance >= 0.85 x the sum
of their radii; a large object is made smaller if that cannot be met). Later objects are drawn on top.
Coordinates are fractions of the image side, so a scene renders the same at every resolution.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, fields

from ...errors import UserError
from .vocab import BACKGROUND_EXCLUDES, CONCEPTS, SIZE_RADIUS, concept_id

MIN_GAP = 0.85  # centre distance >= MIN_GAP * (r1 + r2): occlusion stays a sliver
SLOT_X = {"left": (0.0, 0.30), "center": (0.42, 0.58), "right": (0.70, 1.0)}  # allowed centre x


@dataclass(frozen=True)
class WorldObject:
    shape: str
    color: str
    texture: str
    size: str
    position: str  # horizontal slot: left / center / right
    x: float  # centre, fraction of the image width
    y: float  # centre, fraction of the image height
    radius: float  # half of the object's extent, fraction of the image side
    phase: float  # texture offset in [0, 1)
    seed: int  # for speckle textures

    def concept_ids(self) -> tuple[str, ...]:
        """The object's concepts: shape, color, texture, size, position."""
        return (concept_id("shape", self.shape), concept_id("color", self.color),
                concept_id("texture", self.texture), concept_id("size", self.size),
                concept_id("position", self.position))


@dataclass(frozen=True)
class Scene:
    seed: int
    index: int
    background: str
    background_seed: int
    objects: tuple[WorldObject, ...]  # drawing order: later objects on top

    def concept_ids(self) -> frozenset[str]:
        """Every concept present: all objects' concepts and the background."""
        out = {concept_id("background", self.background)}
        for o in self.objects:
            out.update(o.concept_ids())
        return frozenset(out)

    def left_to_right(self) -> list[tuple[int, WorldObject]]:
        """(object index, object) sorted by horizontal position (the caption's order)."""
        return sorted(enumerate(self.objects), key=lambda t: t[1].x)


@dataclass(frozen=True)
class SceneOptions:
    """Restrictions for curricula; None means every value in the vocabulary."""

    n_objects: tuple[int, int] = (1, 3)  # inclusive range, within 1..3
    shapes: tuple[str, ...] | None = None
    colors: tuple[str, ...] | None = None
    textures: tuple[str, ...] | None = None
    backgrounds: tuple[str, ...] | None = None
    sizes: tuple[str, ...] | None = None

    def __post_init__(self):
        lo, hi = self.n_objects
        if not (1 <= lo <= hi <= 3):
            raise UserError(f"objects per scene {self.n_objects} must be a range lo-hi with "
                            f"1 <= lo <= hi <= 3, e.g. objects=1 or objects=1-2")
        for f in fields(self):
            if f.name == "n_objects" or getattr(self, f.name) is None:
                continue
            category = f.name[:-1]  # "shapes" -> "shape"
            valid = CONCEPTS.names(category)
            values = tuple(getattr(self, f.name))
            object.__setattr__(self, f.name, values)
            bad = [v for v in values if v not in valid]
            if bad or not values:
                raise UserError(f"{f.name}={values}: unknown or empty ({', '.join(bad) or 'empty'}); "
                                f"valid {f.name}: {', '.join(valid)}")
        if self.colors is not None:
            for bg in self.allowed("background"):
                if not self.colors_for(bg):
                    hidden = ", ".join(BACKGROUND_EXCLUDES.get(bg, ()))
                    raise UserError(f"no allowed colour shows on background {bg!r} (it hides "
                                    f"{hidden}): allow more colors or drop that background")

    def allowed(self, category: str) -> tuple[str, ...]:
        value = getattr(self, category + "s")
        return CONCEPTS.names(category) if value is None else value

    def colors_for(self, background: str) -> tuple[str, ...]:
        hidden = BACKGROUND_EXCLUDES.get(background, ())
        return tuple(c for c in self.allowed("color") if c not in hidden)


DEFAULT_OPTIONS = SceneOptions()


def _place(rng: random.Random, slots: list[str], radii: list[float]) -> list[tuple[float, float]]:
    """Centres inside each slot with limited overlap, or None when 200 draws all failed."""
    for _ in range(200):
        centres = []
        for slot, r in zip(slots, radii):
            lo, hi = SLOT_X[slot]
            lo, hi = max(lo, r), min(hi, 1 - r)
            centres.append((rng.uniform(lo, hi), rng.uniform(r, 1 - r)))
        if all(math.dist(centres[i], centres[j]) >= MIN_GAP * (radii[i] + radii[j])
               for i in range(len(radii)) for j in range(i)):
            return centres
    return None


def sample_scene(seed: int, index: int, options: SceneOptions = DEFAULT_OPTIONS) -> Scene:
    """The scene of image `index` in the world with this seed (pure function of its arguments)."""
    rng = random.Random(f"world/{int(seed)}/{int(index)}")
    n = rng.randint(*options.n_objects)
    background = rng.choice(options.allowed("background"))
    background_seed = rng.getrandbits(31)
    slots = rng.sample(("left", "center", "right"), n)
    colors = options.colors_for(background)
    attrs = []
    for _ in range(n):
        attrs.append([rng.choice(options.allowed("shape")), rng.choice(colors),
                      rng.choice(options.allowed("texture")), rng.choice(options.allowed("size"))])
    sizes_small_first = sorted(options.allowed("size"), key=SIZE_RADIUS.get)
    while True:
        centres = _place(rng, slots, [SIZE_RADIUS[a[3]] for a in attrs])
        if centres is not None:
            break
        # too crowded: shrink the largest object one step (stays within the allowed sizes)
        big = max(range(n), key=lambda i: SIZE_RADIUS[attrs[i][3]])
        k = sizes_small_first.index(attrs[big][3])
        if k == 0:  # nothing left to shrink (cannot happen with the built-in sizes)
            raise RuntimeError(f"cannot place {n} objects in scene {seed}/{index}")
        attrs[big][3] = sizes_small_first[k - 1]
    objects = tuple(
        WorldObject(shape=a[0], color=a[1], texture=a[2], size=a[3], position=slot, x=c[0], y=c[1],
                    radius=SIZE_RADIUS[a[3]], phase=rng.random(), seed=rng.getrandbits(31))
        for a, slot, c in zip(attrs, slots, centres))
    return Scene(seed=int(seed), index=int(index), background=background,
                 background_seed=background_seed, objects=objects)
