"""Zoo factories for the world models: `zoo:world-clip` and `zoo:world-llava` (offline, committed
weights in neuronatlas/worldmodels/weights/NAME).

Target.extras: "tokenizer", "model" (the full CLIPModel / LlavaForConditionalGeneration), and for
world-clip "scorer", a `WorldClipScorer` (an ImageTextScorer) and "get_text_features".
"""

from __future__ import annotations

import os

import torch

from ..backends.scorer import ImageTextScorer
from ..errors import UserError
from ..models.target import Preprocess, Target
from ..models.zoo import zoo_entry
from . import data as D
from . import weights_dir


def preprocess(size: int = 32) -> Preprocess:
    """What training used: the world rendered at `size` px (any image is resized to it), mean=std=0.5."""
    return Preprocess(size=size, mean=D.MEAN, std=D.STD, resize=None, interpolation="bilinear")


def _checkpoint(name: str, weights: str | None) -> str:
    path = weights or weights_dir(name)
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise UserError(f"no {name} checkpoint in {path} (expected config.json, model.safetensors, "
                        f"tokenizer.json); train one with `neuronatlas zoo train {name}`")
    return path


def load_world_model(name: str, weights: str | None = None, random_weights: bool = False):
    """(model, tokenizer) in eval mode, from the committed weights or a checkpoint directory."""
    import transformers

    from .tokenizer import build_tokenizer, load_tokenizer

    cls = transformers.CLIPModel if name == "world-clip" else transformers.LlavaForConditionalGeneration
    if random_weights:
        if name == "world-clip":
            from .clip import build_model

            model = build_model()
        else:
            from .llava import build_model

            model = build_model()
        tokenizer = build_tokenizer()
    else:
        path = _checkpoint(name, weights)
        model = cls.from_pretrained(path, dtype=torch.float32)
        tokenizer = load_tokenizer(path)
    return model.eval(), tokenizer


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
        from .clip import encode_images

        return torch.nn.functional.normalize(encode_images(self.model, pixels.to(self.device)).float(), dim=-1)

    @torch.no_grad()
    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        from .clip import encode_texts

        out = []
        for i in range(0, len(texts), 256):
            enc = encode_texts(self.model, _on(self.tokenizer, self.device), list(texts[i:i + 256]))
            out.append(torch.nn.functional.normalize(enc.float(), dim=-1))
        return torch.cat(out) if out else torch.zeros(0, self.dim)


def _on(tokenizer, device):
    return tokenizer  # tokenizers return CPU tensors; CPU-only models here


@zoo_entry("world-clip", "small CLIP trained on the procedural world (image-text scorer)", 64,
           "committed", "neuronatlas/worldmodels/weights/world-clip")
def build_world_clip(weights: str | None = None, random_weights: bool = False) -> Target:
    from ..models.hf_adapter import target_from_hf_model

    model, tokenizer = load_world_model("world-clip", weights, random_weights)
    origin = "random" if random_weights else (weights or "neuronatlas:world-clip")
    target = target_from_hf_model(model, preprocess(model.config.vision_config.image_size),
                                  spec="zoo:world-clip", weights=origin)
    target.extras.update(tokenizer=tokenizer, model=model, scorer=WorldClipScorer(model, tokenizer))
    return target


@zoo_entry("world-llava", "small LLaVA-style VLM trained on the procedural world (captions, QA)",
           64, "committed", "neuronatlas/worldmodels/weights/world-llava")
def build_world_llava(weights: str | None = None, random_weights: bool = False) -> Target:
    from ..models.hf_adapter import target_from_hf_model

    model, tokenizer = load_world_model("world-llava", weights, random_weights)
    origin = "random" if random_weights else (weights or "neuronatlas:world-llava")
    target = target_from_hf_model(model, preprocess(model.config.vision_config.image_size),
                                  spec="zoo:world-llava", weights=origin)
    target.extras.update(tokenizer=tokenizer, model=model)
    return target
