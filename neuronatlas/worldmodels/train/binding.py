"""Attention supervision for world-llava: teach one language-model head to bind a question's words
to the object they name.

Diagnosis that motivates it (world-llava plan v3): the language model reads an object's colour and
shape perfectly when the scene has one object, and answers about a random object when it has two or
three. The answer loss alone never made it look up the named object. The world knows which patches
each object covers, so the lookup can be supervised directly: in image-first rows, at the question's
last object-naming word ("circle" in "what color is the circle?", "red" in "what shape is the red
thing?", "left" in "what shape is on the left?", "circle" in a "yes" presence question about a red
circle), head `head` of layer `layer` should put its attention on that object's patch tokens. The
loss is -log(attention mass on those patches), averaged over the supervised positions. It is a
training signal only: the model, its config and its inference path are unchanged.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from ...data.world import CONCEPTS, questions
from ..arch.tokenizer import EOS_ID, vocabulary
from .data import NAMES

# how a question names its object: kind -> the attributes given by the question's concept ids
_NAMED_BY = {"color": ("shape",), "texture": ("shape",), "size": ("shape",), "shape": ("color",),
             "position": ("position",), "presence": ("color", "shape")}


def named_object(scene, qa):
    """The object `qa` is about, or None (count questions, and "no" presence questions, which name
    nothing that is there). Questions are only asked when the naming attributes are unambiguous."""
    if qa.kind not in _NAMED_BY or (qa.kind == "presence" and qa.answer != "yes"):
        return None
    want = dict(c.split(":", 1) for c in qa.concepts)
    for o in scene.objects:
        if all(getattr(o, a) == want[a] for a in _NAMED_BY[qa.kind]):
            return o
    return None


def object_patches(patch_labels: torch.Tensor, obj) -> list[int]:
    """Indices of the patches whose majority owner has obj's shape, colour and texture
    (patch_labels: one pool row, (3 [shape, color, texture], G*G), 0 = background)."""
    want = torch.tensor([NAMES[a].index(getattr(obj, a)) + 1 for a in ("shape", "color", "texture")])
    return torch.nonzero((patch_labels == want[:, None]).all(0)).flatten().tolist()


BOS_POS = 0  # image-first rows: <bos>, then the image tokens (CLS first with "full" features)


def first_patch_position(config) -> int:
    """Row position of patch 0 in an image-first row: after <bos> and, with "full" features, CLS."""
    return 1 + (config.vision_feature_select_strategy == "full")


def named_items(scene, items) -> list[tuple]:
    """For each (question, answer) item of one image: (its QA, or None for the caption turn; the
    object it names, or None). Computed once per image, shared by item_targets and item_labels."""
    by_text = {qa.question: qa for qa in questions(scene)}
    out = []
    for q, _ in items:
        qa = by_text.get(q) if q is not None else None
        out.append((qa, named_object(scene, qa) if qa is not None else None))
    return out


def item_targets(named, patch_labels: torch.Tensor, absent: bool = False,
                 first_patch: int = 2) -> list[list[int]]:
    """For each item (named_items of one image): the row positions the binding head should attend
    to, the named object's patch tokens ([] for the caption turn and for questions that name no
    object). absent: a "no" presence question targets <bos> instead, a null position the head falls
    back to when nothing matches (so "is there ...?" can be answered from where it looked)."""
    out = []
    for qa, obj in named:
        if obj is not None:
            out.append([first_patch + p for p in object_patches(patch_labels, obj)])
        elif absent and qa is not None and qa.kind == "presence":
            out.append([BOS_POS])
        else:
            out.append([])
    return out


READOUT = ("shape", "color")  # the named object's attributes the readout heads predict


class Readout(torch.nn.Module):
    """Linear heads on the residual stream at a supervised query position (after the binding layer)
    that predict the named object's shape and colour: they push the binding head to carry every
    attribute of what it found, not only the ones that are easy to read (training only)."""

    def __init__(self, hidden: int):
        super().__init__()
        self.heads = torch.nn.ModuleDict({a: torch.nn.Linear(hidden, len(NAMES[a])) for a in READOUT})

    def loss(self, hidden: torch.Tensor, pairs, labels) -> torch.Tensor:
        """hidden (B, T, H) at the layer's output; pairs from bind_pairs; labels[row][item] from
        item_labels (pairs whose item names no object, e.g. a "no" answer's <bos>, are skipped)."""
        pairs = [(r, q, labels[r][k]) for r, q, _, k in pairs if labels[r][k] is not None]
        if not pairs:
            return torch.tensor(0.0)
        h = torch.stack([hidden[r, q] for r, q, _ in pairs])
        return sum(torch.nn.functional.cross_entropy(
            self.heads[a](h), torch.tensor([lab[a] for _, _, lab in pairs])) for a in READOUT)


@dataclass
class BindBatch:
    """What one batch's binding supervision needs: per image per item the target row positions
    (item_targets), the supervised heads as (query position "word" | "answer", layer, head), and
    optionally the readout heads with per image per item labels (item_labels) and their weight; the
    readout reads the residual at the first head's query positions after its layer."""

    targets: list
    heads: list
    labels: list | None = None
    readout: Readout | None = None
    readout_weight: float = 0.0


def item_labels(named) -> list[dict | None]:
    """For each item (named_items of one image): {attr: index in NAMES[attr]} of the object it
    names, or None."""
    return [{a: NAMES[a].index(getattr(obj, a)) for a in READOUT} if obj is not None else None
            for _, obj in named]


@functools.lru_cache(maxsize=1)
def key_word_ids() -> frozenset[int]:
    """Ids of the words that name an object in a question: colours, shapes and positions (the world
    tokenizer's ids are fixed by `vocabulary()`, so this is computed once)."""
    words = {w for cat in ("color", "shape", "position") for c in CONCEPTS.by_category(cat)
             for w in c.phrase.split()} - {"on", "the", "in"}
    ids = vocabulary()
    return frozenset(ids[w] for w in words)


QUERY_AT = ("word", "answer")


def query_positions(ids: list[int], n_img: int, question_mark: int, key_ids: frozenset[int],
                    at: str = "word") -> list[int]:
    """Per question turn of an image-first row, the supervised query position: its last
    object-naming word (at="word") or its "?" (at="answer", the position that predicts the answer);
    -1 for a turn without one (e.g. the caption). Turns follow the image and each other; a question
    ends at its "?" and its answer at <eos>."""
    if at not in QUERY_AT:
        raise ValueError(f"unknown binding query position {at!r}; choose one of {', '.join(QUERY_AT)}")
    out, start = [], 1 + n_img
    while start < len(ids):
        end = ids.index(EOS_ID, start) if EOS_ID in ids[start:] else len(ids)
        turn = ids[start:end]
        q_end = turn.index(question_mark) if question_mark in turn else 0
        named = [i for i in range(q_end) if turn[i] in key_ids]
        if at == "answer":
            out.append(start + q_end if named else -1)
        else:
            out.append(start + named[-1] if named else -1)
        start = end + 1
    return out


def bind_pairs(tokenizer, rows_ids: list[list[int]], n_img: int, targets: list[list[list[int]]],
               at: str = "word"):
    """(row, query position, target positions, item index in the row) for every supervised
    question in the batch."""
    qmark = tokenizer.convert_tokens_to_ids("?")
    out = []
    for r, (ids, tg) in enumerate(zip(rows_ids, targets)):
        for k, (pos, cols) in enumerate(zip(query_positions(ids, n_img, qmark, key_word_ids(), at), tg)):
            if pos >= 0 and cols:
                out.append((r, pos, cols, k))
    return out


def bind_loss(attentions, pairs, layer: int, head: int) -> torch.Tensor:
    """-log of the attention mass head `head` of `layer` puts on the named object's patches, at each
    pair's query position, averaged (0 when there is nothing to supervise)."""
    if not pairs:
        return torch.tensor(0.0)
    att = attentions[layer][:, head]  # (B, T, T), rows sum to 1
    masses = torch.stack([att[r, q, cols].sum() for r, q, cols, _ in pairs])
    return -torch.log(masses.clamp_min(1e-6)).mean()
