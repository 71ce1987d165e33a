"""Fakes for the evaluation tests: a text embedder and an image-text scorer with known vectors."""

import numpy as np
import torch

from neuronatlas.backends.scorer import ImageTextScorer
from neuronatlas.backends.text import TextEmbedder
from neuronatlas.models.target import Preprocess


class FakeEmbedder(TextEmbedder):
    name = "fake"
    dim = 3

    def __init__(self, vectors: dict):
        super().__init__(cache_dir=False)
        self.vectors = vectors

    def _embed_batch(self, texts):
        return torch.tensor([self.vectors[t] for t in texts], dtype=torch.float32)


class ColorScorer(ImageTextScorer):
    """Image = its mean RGB (unit length); text = a fixed RGB direction."""

    name = "fake:color"
    dim = 3
    preprocess = Preprocess(size=16, mean=(0.0,) * 3, std=(1.0,) * 3, interpolation="bilinear")
    TEXTS = {"red": (1, 0, 0), "green": (0, 1, 0), "blue": (0, 0, 1)}

    def encode_images(self, pixels):
        # float64 mean: a float32 reduction's rounding depends on the batch it runs in, and the
        # tests compare batched library paths with one-shot recomputations
        return torch.nn.functional.normalize(pixels.double().mean((2, 3)) + 1e-3, dim=-1).float()

    def encode_texts(self, texts):
        vec = [self.TEXTS.get(t, (1, 1, 1)) for t in texts]
        return torch.nn.functional.normalize(torch.tensor(vec, dtype=torch.float32), dim=-1)
