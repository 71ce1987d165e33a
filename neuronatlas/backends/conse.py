"""ConSE: a zero-shot image-text scorer from an ImageNet classifier and a text embedder.

Norouzi et al. 2014, "Zero-Shot Learning by Convex Combination of Semantic Embeddings": an image's
embedding is the convex combination of the text embeddings of its top-T predicted classes, weighted
by p(class | image); a text's embedding is the text embedder's. Cosine similarity then compares an
image with any caption, like CLIP but built only from things that run offline. It knows nothing the
classifier's 1000 classes don't cover (no "astronaut" class: it relies on neighbours such as
'space shuttle' or 'crash helmet'), so treat its scores as a weak, ranked signal.
"""

from __future__ import annotations

import importlib

import torch

from ..errors import UserError
from ..models.target import Target
from .scorer import ImageTextScorer, unknown_texts
from .text import TextEmbedder, load_text_embedder

DEFAULT_CLASSIFIER = "mobilenet-v2"


class ConSEScorer(ImageTextScorer):
    def __init__(self, classifier: Target, embedder: TextEmbedder, top: int = 10,
                 template: str = "{}"):
        if not classifier.class_names:
            raise UserError(f"ConSE needs a classifier with class names; {classifier.spec} has none")
        if top < 1:
            raise UserError(f"ConSE top must be >= 1, got {top}")
        self.classifier, self.embedder = classifier, embedder
        self.top = min(top, len(classifier.class_names))
        self.template = template
        self.preprocess = classifier.preprocess
        self.dim = embedder.dim
        self.name = f"conse:{classifier.spec.removeprefix('zoo:')}"
        # One vector per class, embedded once (cached on disk by the embedder).
        self.class_vectors = embedder.embed([template.format(c) for c in classifier.class_names])

    @property
    def device(self) -> torch.device:
        return self.classifier.device

    @torch.no_grad()
    def class_probs(self, pixels: torch.Tensor) -> torch.Tensor:
        """p(class | image), (B, C)."""
        logits = self.classifier.forward(pixels.to(self.device))
        if not isinstance(logits, torch.Tensor) or logits.shape[-1] != len(self.class_vectors):
            raise UserError(f"ConSE needs {self.classifier.spec} to return (B, "
                            f"{len(self.class_vectors)}) logits from its forward")
        return logits.float().softmax(-1).cpu()

    @torch.no_grad()
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        probs = self.class_probs(pixels)
        p, idx = probs.topk(self.top, dim=-1)  # (B, T)
        emb = torch.einsum("bt,btd->bd", p, self.class_vectors[idx])
        return torch.nn.functional.normalize(emb, dim=-1)

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        return self.embedder.embed(list(texts))

    def unknown_texts(self, texts: list[str]) -> list[str] | None:
        return unknown_texts(getattr(self.embedder, "tokenizer", None), texts)

    def describe(self) -> dict:
        return {**super().describe(), "classifier": self.classifier.describe(), "top": self.top,
                "template": self.template, "text_embedder": self.embedder.cache_key}


def _load_classifier(spec: str) -> Target:
    """`NAME` or `zoo:NAME` from the zoo, else any model spec `load_target` understands."""
    from ..models.zoo import ZOO

    name = spec.removeprefix("zoo:")
    if name in ZOO:
        module, func = ZOO[name].split(":")
        return getattr(importlib.import_module(module), func)()
    try:
        from ..models import load_target
    except ImportError:
        raise UserError(f"unknown ConSE classifier '{spec}'; known: {', '.join(ZOO)}") from None
    return load_target(spec)


def load(classifier: str | None = None, embedder: str | TextEmbedder = "zoo:minilm", top: int = 10,
         device: str = "cpu", **embedder_kwargs) -> ConSEScorer:
    """`conse:CLASSIFIER` (default mobilenet-v2); `embedder_kwargs` go to the text embedder."""
    target = _load_classifier(classifier or DEFAULT_CLASSIFIER).to(device)
    if isinstance(embedder, str):
        embedder = load_text_embedder(embedder, device=device, **embedder_kwargs)
    return ConSEScorer(target, embedder, top=top)
