"""The world's concept vocabulary: every concept has a stable id `CATEGORY:NAME` and a caption phrase.

Categories: shape, color, texture, background, size, position. Shapes were picked to stay distinct
at 32-64 px (no hexagon/pentagon, which blur into circles; no rotation, so square and diamond stay
apart). Object colours avoid gray, the colour of most backgrounds; a background may exclude colours
it would hide (green on grass, yellow on sand).
"""

from __future__ import annotations

from dataclasses import dataclass, field

CATEGORIES = ("shape", "color", "texture", "background", "size", "position")


@dataclass(frozen=True)
class Concept:
    id: str  # "shape:circle"
    category: str  # "shape"
    name: str  # "circle": the key used in a Scene
    phrase: str  # words used in captions and answers: "circle", "horizontally striped"
    rgb: tuple[int, int, int] | None = None  # colours only


def _c(category: str, name: str, phrase: str | None = None, rgb=None) -> Concept:
    return Concept(f"{category}:{name}", category, name, phrase or name, rgb)


SHAPES = tuple(_c("shape", n) for n in (
    "circle", "square", "triangle", "star", "cross", "heart", "diamond", "crescent", "arrow"))

COLORS = tuple(_c("color", n, rgb=rgb) for n, rgb in (
    ("red", (220, 30, 30)),
    ("orange", (245, 135, 20)),
    ("yellow", (245, 225, 30)),
    ("green", (40, 170, 50)),
    ("cyan", (40, 215, 230)),
    ("blue", (35, 70, 225)),
    ("purple", (140, 50, 200)),
    ("pink", (250, 140, 200)),
    ("brown", (130, 75, 30)),
    ("white", (250, 250, 250)),
    ("black", (15, 15, 15)),
))

TEXTURES = tuple(_c("texture", n, p) for n, p in (
    ("solid", "solid"),
    ("hstripes", "horizontally striped"),
    ("vstripes", "vertically striped"),
    ("dstripes", "diagonally striped"),
    ("dotted", "dotted"),
    ("checkered", "checkered"),
    ("grid", "gridded"),
    ("speckled", "speckled"),
))

BACKGROUNDS = tuple(_c("background", n, p) for n, p in (
    ("gray", "gray"),
    ("gradient", "gradient"),
    ("noise", "noisy"),
    ("grass", "grass"),
    ("sand", "sand"),
))

SIZES = tuple(_c("size", n) for n in ("small", "medium", "large"))

POSITIONS = tuple(_c("position", n, p) for n, p in (
    ("left", "on the left"), ("center", "in the center"), ("right", "on the right")))

# object radius (half of its extent) as a fraction of the image side
SIZE_RADIUS = {"small": 0.14, "medium": 0.18, "large": 0.23}
# object colours a background would hide
BACKGROUND_EXCLUDES = {"grass": ("green",), "sand": ("yellow",)}


@dataclass(frozen=True)
class Vocabulary:
    """All concepts, by category, with lookups by id and by (category, name)."""

    concepts: tuple[Concept, ...]
    _by_id: dict = field(init=False, repr=False, compare=False)
    _by_category: dict = field(init=False, repr=False, compare=False)
    _names: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "_by_id", {c.id: c for c in self.concepts})
        object.__setattr__(self, "_by_category", {
            cat: tuple(c for c in self.concepts if c.category == cat) for cat in CATEGORIES})
        object.__setattr__(self, "_names", {
            cat: tuple(c.name for c in cs) for cat, cs in self._by_category.items()})

    @property
    def categories(self) -> tuple[str, ...]:
        return CATEGORIES

    def by_category(self, category: str) -> tuple[Concept, ...]:
        if category not in CATEGORIES:
            raise KeyError(f"unknown category {category!r}; categories are {', '.join(CATEGORIES)}")
        return self._by_category[category]

    def names(self, category: str) -> tuple[str, ...]:
        if category not in self._names:
            self.by_category(category)  # raises the helpful KeyError
        return self._names[category]

    def ids(self, category: str | None = None) -> tuple[str, ...]:
        return tuple(c.id for c in (self.concepts if category is None else self.by_category(category)))

    def __getitem__(self, concept_id: str) -> Concept:
        return self._by_id[concept_id]

    def get(self, category: str, name: str) -> Concept:
        return self._by_id[f"{category}:{name}"]

    def __contains__(self, concept_id: str) -> bool:
        return concept_id in self._by_id

    def __iter__(self):
        return iter(self.concepts)

    def __len__(self) -> int:
        return len(self.concepts)


CONCEPTS = Vocabulary(SHAPES + COLORS + TEXTURES + BACKGROUNDS + SIZES + POSITIONS)


def concept_id(category: str, name: str) -> str:
    return f"{category}:{name}"


def phrase(category: str, name: str) -> str:
    return CONCEPTS.get(category, name).phrase


def rgb(color: str) -> tuple[int, int, int]:
    return CONCEPTS.get("color", color).rgb
