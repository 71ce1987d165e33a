"""The offline summariser: turn a unit's exemplar captions into ranked labels without an LLM.

Activation-weighted consensus of caption phrases, contrasted with captions of random images:

    phrases   the word n-grams (n = 1..3) inside each clause of a caption (clauses end at punctuation),
              lower-cased, that neither start nor end with a stop word ("red circle", "on the left"
              is kept as "left", "gray background")
    weights   w_i = max(a_i, 0) / sum_j max(a_j, 0) for exemplar i with activation a_i (uniform when
              no activation is positive)
    support   s(p) = sum_i w_i [p in caption_i]            (each caption counts a phrase once)
    contrast  b(p) = fraction of the background captions (random probe images) containing p; 0
              without background captions
    score     score(p) = s(p) - b(p)

Phrases are ranked by score (longer first on ties, then alphabetically). A phrase is absorbed by a
longer phrase that contains it when the longer one scores at least `absorb` (0.8) times as much:
"red circle" (0.83) absorbs "red" (0.83) and "circle", so the label is the most specific phrase the
exemplars agree on. The labels are the `top` best survivors with their scores.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

NAME = "offline:weighted-phrases"

STOP = frozenset("""
a an the this that these those of on in at to with without and or but is are was were be been being
it its their there here has have having as by for from into onto over under near next than then so
very some any each one two three several many few more most other another such which who whom what
while also both either neither not no all can could may might will would shows show showing shown
depicts depicting depicted features featuring image images picture pictures photo photograph scene
appears appear visible see seen looks look like located placed set against various different overall
main mainly primarily including include includes displayed display top bottom side part kind type
heatmap overlay highlighted highlight highlighting region regions area areas
""".split())
WORD = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*")
CLAUSE = re.compile(r"[.,;:!?()\n\"]+")


def phrases(caption: str, max_n: int = 3) -> set[tuple[str, ...]]:
    """Every n-gram (n <= max_n) of the caption's clauses that does not start or end with a stop word."""
    out: set[tuple[str, ...]] = set()
    for clause in CLAUSE.split(str(caption).lower()):
        words = WORD.findall(clause)
        for n in range(1, max_n + 1):
            for i in range(len(words) - n + 1):
                gram = tuple(words[i:i + n])
                if gram[0] not in STOP and gram[-1] not in STOP:
                    out.add(gram)
    return out


def activation_weights(values) -> list[float]:
    pos = [max(float(v), 0.0) if v == v else 0.0 for v in values]  # NaN -> 0
    total = sum(pos)
    if total <= 0:
        return [1.0 / len(pos)] * len(pos) if pos else []
    return [p / total for p in pos]


def _contains(longer: tuple[str, ...], shorter: tuple[str, ...]) -> bool:
    n = len(shorter)
    return len(longer) > n and any(longer[i:i + n] == shorter for i in range(len(longer) - n + 1))


@dataclass(frozen=True)
class PhraseScore:
    phrase: str
    score: float
    support: float
    background: float


def summarize_captions(captions: list[str], values, background: list[str] | None = None,
                       top: int = 5, max_n: int = 3, absorb: float = 0.8) -> list[PhraseScore]:
    """The `top` best phrases of a unit's captions (see the module docstring), best first."""
    if len(captions) != len(values):
        raise ValueError(f"{len(captions)} captions but {len(values)} activation values")
    weights = activation_weights(values)
    support: dict[tuple[str, ...], float] = {}
    for cap, w in zip(captions, weights):
        for p in phrases(cap, max_n):
            support[p] = support.get(p, 0.0) + w
    bg: dict[tuple[str, ...], float] = {}
    background = [b for b in (background or [])]
    for cap in background:
        for p in phrases(cap, max_n):
            bg[p] = bg.get(p, 0.0) + 1.0 / len(background)
    scored = {p: s - bg.get(p, 0.0) for p, s in support.items()}
    order = sorted(scored, key=lambda p: (-round(scored[p], 12), -len(p), p))
    kept: list[tuple[str, ...]] = []
    for p in order:
        absorbed = any(_contains(q, p) and scored[q] >= absorb * scored[p]
                       for q in scored if len(q) > len(p))
        if not absorbed and scored[p] > 0:
            kept.append(p)
        if len(kept) == top:
            break
    return [PhraseScore(" ".join(p), round(scored[p], 12), round(support[p], 12),
                        round(bg.get(p, 0.0), 12)) for p in kept]
