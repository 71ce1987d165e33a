"""Captions and question/answer pairs for world scenes, and the words they use.

Caption grammar (every attribute is always said, "solid" and "medium" included, so the concepts a
caption mentions are exactly the concepts that have masks):

    caption := object (" and " object)* " on a " BACKGROUND " background"
    object  := "a " SIZE " " COLOR " " TEXTURE " " SHAPE " " POSITION      (objects left to right)

    "a small red horizontally striped circle on the left and a large blue solid star in the center
     on a gray background"

Questions (all lower case, ending in "?"; answers are one vocabulary phrase):
    presence  "is there a red circle?"            yes / no, as many no as yes in every scene; about
                                                  half of the no's share the colour or the shape of
                                                  an object that is there
    color     "what color is the circle?"         only when exactly one circle is there
    shape     "what shape is the red thing?"      only when exactly one red object is there
    texture   "what texture is the circle?"       only when exactly one circle is there
    size      "what size is the circle?"          only when exactly one circle is there
    position  "what shape is on the left?"        for every occupied slot (each holds one object)
    count     "how many objects are there?"       one / two / three
"""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass

from .scene import Scene, WorldObject
from .vocab import CONCEPTS, concept_id, phrase

NUMBERS = ("zero", "one", "two", "three")


@dataclass(frozen=True)
class QA:
    question: str
    answer: str
    kind: str  # presence, color, shape, texture, size, position, count
    concepts: tuple[str, ...]  # concept ids the question is about (for scoring by concept)


def object_phrase(obj: WorldObject) -> str:
    return " ".join(("a", phrase("size", obj.size), phrase("color", obj.color),
                     phrase("texture", obj.texture), phrase("shape", obj.shape),
                     phrase("position", obj.position)))


def caption(scene: Scene) -> str:
    objects = " and ".join(object_phrase(o) for _, o in scene.left_to_right())
    return f"{objects} on a {phrase('background', scene.background)} background"


def _alternation(category: str) -> str:
    phrases = sorted((c.phrase for c in CONCEPTS.by_category(category)), key=len, reverse=True)
    return "(" + "|".join(re.escape(p) for p in phrases) + ")"


_OBJECT_RE = re.compile(" ".join(["a"] + [_alternation(c) for c in
                                          ("size", "color", "texture", "shape", "position")]))
_CAPTION_RE = re.compile(rf"(.+) on a {_alternation('background')} background")
_BY_PHRASE = {(c.category, c.phrase): c.id for c in CONCEPTS}


def parse_caption(text: str) -> frozenset[str]:
    """Concept ids mentioned in a caption (parsed from its words); ValueError if it is not one."""
    m = _CAPTION_RE.fullmatch(text)
    if not m:
        raise ValueError(f"not a world caption: {text!r}")
    out = {_BY_PHRASE["background", m.group(2)]}
    for part in m.group(1).split(" and "):
        om = _OBJECT_RE.fullmatch(part)
        if not om:
            raise ValueError(f"not a world object phrase: {part!r}")
        for cat, value in zip(("size", "color", "texture", "shape", "position"), om.groups()):
            out.add(_BY_PHRASE[cat, value])
    return frozenset(out)


def caption_concepts(scene: Scene) -> frozenset[str]:
    """The concept ids the scene's caption mentions (read back from the caption text)."""
    return parse_caption(caption(scene))


def _presence(scene: Scene, rng: random.Random) -> list[QA]:
    present = sorted({(o.color, o.shape) for o in scene.objects})
    colors, shapes = CONCEPTS.names("color"), CONCEPTS.names("shape")
    out = [QA(f"is there a {c} {s}?", "yes", "presence", (concept_id("color", c), concept_id("shape", s)))
           for c, s in present]
    absent: list[tuple[str, str]] = []
    for k, (c, s) in enumerate(present):
        if k % 2 == 0:  # a hard negative: same shape, another colour, or same colour, another shape
            cands = ([(c2, s) for c2 in colors] if rng.random() < 0.5 else [(c, s2) for s2 in shapes])
        else:
            cands = [(rng.choice(colors), rng.choice(shapes)) for _ in range(8)]
        cands = [p for p in cands if p not in present and p not in absent]
        while not cands:
            p = (rng.choice(colors), rng.choice(shapes))
            cands = [p] if p not in present and p not in absent else []
        absent.append(rng.choice(cands))
    out += [QA(f"is there a {c} {s}?", "no", "presence", (concept_id("color", c), concept_id("shape", s)))
            for c, s in absent]
    return out


def questions(scene: Scene) -> list[QA]:
    """Every question of the kinds above that the scene answers unambiguously (deterministic)."""
    rng = random.Random(f"qa/{scene.seed}/{scene.index}")
    out = _presence(scene, rng)
    shape_count = Counter(o.shape for o in scene.objects)
    color_count = Counter(o.color for o in scene.objects)
    for _, o in scene.left_to_right():
        shape_id = concept_id("shape", o.shape)
        if shape_count[o.shape] == 1:
            out.append(QA(f"what color is the {o.shape}?", phrase("color", o.color), "color", (shape_id,)))
            out.append(QA(f"what texture is the {o.shape}?", phrase("texture", o.texture), "texture",
                          (shape_id,)))
            out.append(QA(f"what size is the {o.shape}?", phrase("size", o.size), "size", (shape_id,)))
        if color_count[o.color] == 1:
            out.append(QA(f"what shape is the {o.color} thing?", phrase("shape", o.shape), "shape",
                          (concept_id("color", o.color),)))
        out.append(QA(f"what shape is {phrase('position', o.position)}?", phrase("shape", o.shape),
                      "position", (concept_id("position", o.position),)))
    out.append(QA("how many objects are there?", NUMBERS[len(scene.objects)], "count", ()))
    return out


def tokenize(text: str) -> list[str]:
    """Lower-case words, with "?" split off as its own word (what the world models' tokenizers use)."""
    return text.lower().replace("?", " ?").split()


def all_words() -> list[str]:
    """Every word a world caption, question or answer can contain, sorted."""
    words = set(tokenize("a and on background is there what color shape texture size thing "
                         "how many objects are yes no ? the in"))
    words.update(NUMBERS[1:])
    for c in CONCEPTS:
        words.update(tokenize(c.phrase))
    return sorted(words)
