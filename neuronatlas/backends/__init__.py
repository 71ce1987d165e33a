"""Backends: text embedders and image-text scorers (ConSE now, CLIP next), each behind one small base
class and a `load_*(spec)` function."""

from .scorer import DEFAULT_SCORER, SCORERS, ImageTextScorer, load_scorer
from .text import EMBEDDERS, MiniLMEmbedder, TextEmbedder, load_text_embedder

__all__ = ["DEFAULT_SCORER", "EMBEDDERS", "SCORERS", "ImageTextScorer", "MiniLMEmbedder",
           "TextEmbedder", "load_scorer", "load_text_embedder"]
