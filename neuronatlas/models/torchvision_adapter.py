"""torchvision models: `torchvision:resnet50` or `torchvision:vit_b_16/IMAGENET1K_SWAG_E2E_V1`.

Preprocessing and class names come from the weights enum's own transforms and meta, which exist
whether or not the weights are loaded (so random-weight models get the same input pipeline).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import urlparse

import torch

from ..errors import UserError, near_matches
from .family import BuildOptions, ModelFamily, model_family
from .layout import TokenInfo
from .weights import RANDOM_FIX, missing_weights, reachable
from .target import Preprocess, Target

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class TorchvisionSpec:
    name: str
    """The builder's name in torchvision.models (`resnet50`)."""
    weights: str = ""
    """A member of the model's weights enum (`IMAGENET1K_V2`); empty: its DEFAULT."""


@model_family
class Torchvision(ModelFamily):
    name = "torchvision"
    grammar = "torchvision:NAME[/WEIGHTS]"
    example = "torchvision:resnet50/IMAGENET1K_V2"

    def parse(self, rest: str) -> TorchvisionSpec:
        name, _, tag = rest.partition("/")
        if not name.strip() or "/" in tag:
            raise UserError(f"bad torchvision spec 'torchvision:{rest}': use {self.grammar}, e.g. "
                            f"{self.example}")
        return TorchvisionSpec(name.strip(), tag.strip())

    def build(self, spec: TorchvisionSpec, how: BuildOptions) -> Target:
        return build(how.spec, spec.name, spec.weights, how.weights, how.random_weights)


def build(spec: str, name: str, tag: str = "", weights: str | None = None,
          random_weights: bool = False) -> Target:
    from torchvision import models

    try:
        builder = models.get_model_builder(name)
    except ValueError:
        hint = near_matches(name, models.list_models())
        raise UserError(f"unknown torchvision model '{name}' in {spec}"
                        + (f"; did you mean: {', '.join(hint)}?" if hint else "")
                        + "; torchvision.models.list_models() lists them") from None
    enum = _weights_enum(name)
    w = _pick_weights(spec, enum, tag)
    categories = list(w.meta.get("categories") or []) if w is not None else []

    if random_weights:
        model, source = builder(weights=None), "random"
    elif weights is not None:
        kwargs = {"num_classes": len(categories)} if categories else {}
        model = builder(weights=None, **kwargs)
        load_state_dict_file(model, weights, spec)
        source = weights
    else:
        if w is None:
            raise UserError(f"torchvision ships no pretrained weights for {name}: pass --weights PATH, "
                            f"{RANDOM_FIX}")
        cached = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(urlparse(w.url).path))
        # torch hub retries nothing but can hang on a dead network: only go there when reachable
        if not os.path.exists(cached) and not reachable(w.url):
            raise missing_weights(spec, os.path.dirname(cached))
        model, source = builder(weights=w), cached

    return Target(spec=spec, model=model.eval(), preprocess=_preprocess(w),
                  forward=model, tokens=_tokens(model), weights=source, family="torchvision",
                  class_names=categories or None)


def _weights_enum(name: str):
    from torchvision import models

    try:
        return models.get_model_weights(name)
    except (ValueError, KeyError):
        return None


def _pick_weights(spec: str, enum, tag: str):
    if enum is None:
        return None
    if not tag:
        return enum.DEFAULT
    try:
        return enum[tag]
    except KeyError:
        raise UserError(f"unknown weights '{tag}' in {spec}; choose one of: "
                        f"{', '.join(enum.__members__)}") from None


def _preprocess(w) -> Preprocess:
    """From the weights' transforms (ImageClassification: resize_size, crop_size, mean, std)."""
    if w is None:
        return Preprocess(size=224, mean=IMAGENET_MEAN, std=IMAGENET_STD, resize=256,
                          interpolation="bilinear")
    t = w.transforms()
    crop = getattr(t, "crop_size", None)
    resize = getattr(t, "resize_size", None)
    interp = getattr(getattr(t, "interpolation", None), "value", "bilinear")
    interp = "nearest" if interp.startswith("nearest") else interp
    if crop:
        size, resize = crop[0], (resize[0] if resize else None)
    else:  # e.g. segmentation weights: resize only, no crop
        size, resize = (resize[0] if resize else 224), None
    return Preprocess(size=int(size), mean=tuple(getattr(t, "mean", IMAGENET_MEAN)),
                      std=tuple(getattr(t, "std", IMAGENET_STD)),
                      resize=int(resize) if resize else None,
                      interpolation=interp if interp in {"bilinear", "bicubic"} else "nearest")


def _tokens(model) -> TokenInfo | None:
    from torchvision.models import VisionTransformer

    if isinstance(model, VisionTransformer):  # class token first, then the patch grid
        side = model.image_size // model.patch_size
        return TokenInfo(n_prefix=1, cls_index=0, register_indices=(), grid=(side, side))
    return None  # CNNs and Swin (channels-last maps, found by the layout) need no token info


def load_state_dict_file(model: torch.nn.Module, path: str, spec: str) -> None:
    """Load a checkpoint file into `model`; a mismatch is the user's wrong file, said in one line."""
    if os.path.isdir(path):
        raise UserError(f"--weights for {spec} must be a checkpoint file, not the directory {path}")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        state = load_file(path)
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "model_state_dict"):  # common training-script wrappers
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    state = {k.removeprefix("module."): v for k, v in state.items()}
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatches
        raise UserError(f"weights {path} do not fit {spec}: {str(e).splitlines()[-1].strip()}; "
                        f"pass the checkpoint of this architecture") from None
    if result.missing_keys or result.unexpected_keys:
        raise UserError(
            f"weights {path} do not fit {spec}: {len(result.missing_keys)} missing keys "
            f"(e.g. {result.missing_keys[:3]}), {len(result.unexpected_keys)} unexpected "
            f"(e.g. {result.unexpected_keys[:3]}); pass the checkpoint of this architecture")
