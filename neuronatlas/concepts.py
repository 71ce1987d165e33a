"""Concept sets: the candidate labels a describer chooses from.

    cs = load_concepts("words20k")        # 20,000 common English words (wordfreq, offline)
    cs = load_concepts("imagenet")        # the 1000 ImageNet class names (torchvision's metadata)
    cs = load_concepts("world")           # the procedural world's concept phrases
    cs = load_concepts("my_concepts.txt") # a user file, one concept per line
    cs.texts, cs.hash                     # cleaned texts (tuple), content hash for caches

Every set is cleaned the same way: surrounding whitespace stripped, blank lines dropped and duplicates
removed, first occurrence kept, order kept. (The CLIP-Dissect reference dropped blank lines when it
embedded the concepts but not when it named them, so a blank line shifted every later label.) A label
is always `texts[j]` of the very tuple whose embeddings were scored, so they cannot drift apart.

Word lists (`wordsN`, N = 20k, 10k, 3k or any integer): the most frequent English words of `wordfreq`
(`top_n_list("en", ...)`), keeping only purely alphabetic words of at least 3 letters (drops numbers,
contractions' fragments such as "s" or "t", and most function words like "a", "an", "of", "to"),
filled up to exactly N words. The CLIP-Dissect paper's lists are of the same kind (its 20k list is
"the 20,000 most common English words"), but not the same words.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError

_WORDS = re.compile(r"^words(\d+)(k?)$")
BUILTIN = ("words20k", "words10k", "words3k", "imagenet", "world")


@dataclass(frozen=True)
class ConceptSet:
    """A named, cleaned tuple of concept texts."""

    name: str
    texts: tuple[str, ...]

    def __post_init__(self):
        object.__setattr__(self, "texts", clean(self.texts))
        if not self.texts:
            raise UserError(f"concept set {self.name} is empty: give it at least one non-blank line")

    @property
    def hash(self) -> str:
        """Content hash of the cleaned texts (what caches are keyed by, not the name)."""
        h = hashlib.blake2b(digest_size=16)
        for t in self.texts:
            h.update(t.encode())
            h.update(b"\0")
        return h.hexdigest()

    def __len__(self) -> int:
        return len(self.texts)

    def __iter__(self):
        return iter(self.texts)

    def __getitem__(self, i):
        return self.texts[i]

    def describe(self) -> dict:
        return {"name": self.name, "size": len(self.texts), "hash": self.hash}


def clean(texts) -> tuple[str, ...]:
    """Strip whitespace, drop blanks and duplicates (first occurrence kept, order kept)."""
    seen: dict[str, None] = {}
    for t in texts:
        t = str(t).strip()
        if t and t not in seen:
            seen[t] = None
    return tuple(seen)


def common_words(n: int) -> list[str]:
    """The n most frequent English words with >= 3 letters, all alphabetic (wordfreq, offline)."""
    from wordfreq import top_n_list

    want, got = n, []
    pool = max(2 * n, 100)
    while True:
        words = top_n_list("en", pool)
        got = [w for w in words if w.isascii() and w.isalpha() and len(w) >= 3]
        if len(got) >= want or len(words) < pool:  # wordfreq ran out of words
            return got[:want]
        pool *= 2


def imagenet_classes() -> list[str]:
    """The 1000 ImageNet-1k class names in class-index order (torchvision's weight metadata)."""
    from torchvision.models import MobileNet_V2_Weights

    return list(MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"])


def world_concepts() -> list[str]:
    """The caption phrase of every concept of the procedural world (shapes, colours, textures...)."""
    from .data.world import CONCEPTS

    return [c.phrase for c in CONCEPTS]


def load_concepts(spec: "str | Path | ConceptSet | list[str]") -> ConceptSet:
    """A ConceptSet from a built-in name (words20k, words10k, words3k, wordsN, imagenet, world), a text
    file path (one concept per line, UTF-8), an existing ConceptSet, or a list of strings."""
    if isinstance(spec, ConceptSet):
        return spec
    if isinstance(spec, (list, tuple)):
        return ConceptSet("custom", tuple(spec))
    s = str(spec).strip()
    m = _WORDS.match(s)
    if m:
        n = int(m.group(1)) * (1000 if m.group(2) else 1)
        return ConceptSet(s, tuple(common_words(n)))
    if s == "imagenet":
        return ConceptSet(s, tuple(imagenet_classes()))
    if s == "world":
        return ConceptSet(s, tuple(world_concepts()))
    path = Path(s).expanduser()
    if path.is_file():
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError:
            raise UserError(f"concept file {path} is not UTF-8 text: save it as UTF-8, one concept "
                            f"per line") from None
        return ConceptSet(path.name, tuple(lines))
    raise UserError(f"unknown concept set '{s}': use one of {', '.join(BUILTIN)}, wordsN, or the path "
                    f"of a text file with one concept per line")
