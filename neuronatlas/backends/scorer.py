"""Image-text scorers: images and texts in one embedding space, compared by cosine similarity.

Every scorer (ConSE today; CLIP from open_clip / transformers / the zoo's world-clip later) implements
`ImageTextScorer`, so labelers and evaluators never care which one they got:

    scorer = load_scorer("conse:mobilenet-v2")
    pixels = torch.stack([scorer.preprocess(im) for im in pil_images])
    sims = scorer.similarity(pixels, ["a cat", "a cup of coffee"])      # (B, n) cosines

`load_scorer(spec)` dispatches on the spec's prefix through `SCORERS` (prefix -> "module:function",
imported lazily); a new family adds one line there.
"""

from __future__ import annotations

import importlib

import torch

from ..errors import UserError
from ..models.target import Preprocess


class ImageTextScorer:
    """Base class: subclasses set `name`, `preprocess`, `dim` and implement the two encoders."""

    name: str
    preprocess: Preprocess  # what `encode_images` expects its pixels to have been through
    dim: int
    batch_size: int = 32

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """Preprocessed pixels (B, 3, H, W) -> (B, d), unit length."""
        raise NotImplementedError

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        """Texts -> (n, d), unit length."""
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def encode_pil(self, images) -> torch.Tensor:
        """PIL images -> (B, d): preprocess and encode in batches of `batch_size`."""
        out = []
        for i in range(0, len(images), self.batch_size):
            px = torch.stack([self.preprocess(im) for im in images[i:i + self.batch_size]])
            out.append(self.encode_images(px.to(self.device)).cpu())
        return torch.cat(out) if out else torch.zeros(0, self.dim)

    @torch.no_grad()
    def similarity(self, images: torch.Tensor, texts: list[str] | torch.Tensor) -> torch.Tensor:
        """Cosine similarities (B, n). `images` are pixels (B, 3, H, W) or embeddings (B, d) from
        `encode_images`; `texts` are strings or embeddings (n, d) from `encode_texts`."""
        img = images if images.dim() == 2 else self.encode_images(images.to(self.device))
        txt = texts if isinstance(texts, torch.Tensor) else self.encode_texts(list(texts))
        return img.float().cpu() @ txt.float().cpu().T

    def unknown_texts(self, texts: list[str]) -> list[str] | None:
        """The texts with at least one word the text tokenizer maps to its unknown token (their
        embeddings lose that word), or None when this scorer cannot tell."""
        return unknown_texts(getattr(self, "tokenizer", None), texts)

    def describe(self) -> dict:
        """What a run records about the scorer it used."""
        return {"name": self.name, "dim": self.dim, "preprocess": self.preprocess.to_json()}


def unknown_texts(tokenizer, texts: list[str]) -> list[str] | None:
    """`texts` whose tokens include `tokenizer`'s unknown token (a transformers-style tokenizer with
    `unk_token_id`); None for a tokenizer without one (byte-level BPE such as CLIP's never needs it)."""
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is None or not callable(tokenizer):
        return None
    texts = list(texts)
    out = []
    for s in range(0, len(texts), 4096):
        part = texts[s:s + 4096]
        ids = tokenizer(part, add_special_tokens=False)["input_ids"]
        out += [t for t, row in zip(part, ids) if unk in row]
    return out


SCORERS: dict[str, str] = {
    "conse": "neuronatlas.backends.conse:load",
    "open_clip": "neuronatlas.backends.clip:load_open_clip",
    "hf": "neuronatlas.backends.clip:load_hf",
    "zoo": "neuronatlas.backends.clip:load_zoo",  # zoo models that carry extras["scorer"] (world-clip)
}
DEFAULT_SCORER = "conse:mobilenet-v2"


def load_scorer(spec: str = DEFAULT_SCORER, **kwargs) -> ImageTextScorer:
    """A scorer from a spec `FAMILY[:ARG]` (e.g. `conse:efficientnet-lite0`); kwargs go to the family."""
    family, _, arg = spec.partition(":")
    if family not in SCORERS:
        raise UserError(f"unknown image-text scorer '{spec}'; known families: "
                        f"{', '.join(f'{f}:' for f in SCORERS)} (default {DEFAULT_SCORER})")
    module, func = SCORERS[family].split(":")
    return getattr(importlib.import_module(module), func)(arg or None, **kwargs)
