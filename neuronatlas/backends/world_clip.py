"""world-clip (`zoo:world-clip`, worldmodels/arch/clip.py) as an image-text scorer, and the input
transform every world model was trained with."""

from __future__ import annotations

import torch

from ..models.target import Preprocess
from ..worldmodels.arch.clip import MEAN, STD, encode_images, encode_texts
from .scorer import ImageTextScorer


def preprocess(size: int = 32) -> Preprocess:
    """What training used: the world rendered at `size` px (any image is resized to it), mean=std=0.5."""
    return Preprocess(size=size, mean=MEAN, std=STD, resize=None, interpolation="bilinear")


class WorldClipScorer(ImageTextScorer):
    """world-clip as an image-text scorer (projected, unit-length embeddings; cosine similarity)."""

    def __init__(self, model, tokenizer, name: str = "world-clip"):
        self.model, self.tokenizer = model, tokenizer
        self.name = name
        self.preprocess = preprocess(model.config.vision_config.image_size)
        self.dim = model.config.projection_dim
        self.batch_size = 256

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(encode_images(self.model, pixels.to(self.device)).float(), dim=-1)

    @torch.no_grad()
    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        out = []
        for i in range(0, len(texts), 256):  # the tokenizer returns CPU tensors; CPU-only models here
            enc = encode_texts(self.model, self.tokenizer, list(texts[i:i + 256]))
            out.append(torch.nn.functional.normalize(enc.float(), dim=-1))
        return torch.cat(out) if out else torch.zeros(0, self.dim)
