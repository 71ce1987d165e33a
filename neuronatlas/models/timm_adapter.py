"""timm models: `timm:vit_tiny_patch16_224`, `timm:resnet50.a1_in1k` (architecture[.pretrained tag]).

Preprocessing comes from the model's pretrained_cfg through `timm.data.resolve_data_config`, which
exists for random-weight models too; class names from `timm.data.ImageNetInfo`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from torch import nn

from ..errors import UserError, near_matches
from .family import BuildOptions, ModelFamily, model_family
from .layout import TokenInfo
from .weights import cached_then_online, hf_cache_dir, hf_endpoint
from .target import Preprocess, Target

_CHECKPOINT_NAMES = ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin")


@dataclass(frozen=True)
class TimmSpec:
    name: str
    """timm's model name, with its pretrained tag if any (`resnet50.a1_in1k`)."""


@model_family
class Timm(ModelFamily):
    name = "timm"
    grammar = "timm:NAME[.TAG]"
    example = "timm:vit_tiny_patch16_224"

    def parse(self, rest: str) -> TimmSpec:
        if not rest or any(c in rest for c in " /:"):
            raise UserError(f"bad timm spec 'timm:{rest}': use {self.grammar}, e.g. {self.example}")
        return TimmSpec(rest)

    def build(self, spec: TimmSpec, how: BuildOptions) -> Target:
        return build(how.spec, spec.name, how.weights, how.random_weights)


def build(spec: str, name: str, weights: str | None = None, random_weights: bool = False) -> Target:
    import timm
    from timm.models import split_model_name_tag

    arch, _tag = split_model_name_tag(name)
    if not timm.is_model(arch):
        hint = near_matches(arch, timm.list_models())
        raise UserError(f"unknown timm model '{arch}' in {spec}"
                        + (f"; did you mean: {', '.join(hint)}?" if hint else "")
                        + "; timm.list_models('PATTERN') lists them")
    try:
        timm.models.get_pretrained_cfg(name, allow_unregistered=False)
    except (RuntimeError, ValueError):
        tags = [t.partition(".")[2] for t in timm.list_pretrained(f"{arch}.*")]
        raise UserError(f"unknown pretrained tag '{_tag}' in {spec}; tags of {arch}: "
                        f"{', '.join(tags) or '(none)'}") from None

    if random_weights:
        model, source = timm.create_model(name, pretrained=False), "random"
    elif weights is not None:
        file = _checkpoint_file(weights, spec)
        # the pretrained path (not checkpoint_path) so timm's filter_fn converts original checkpoints
        model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=file))
        source = file
    else:
        model = cached_then_online(spec, lambda: timm.create_model(name, pretrained=True),
                                   looked=f"{hf_cache_dir()} (or {_torch_hub_dir()})",
                                   url=hf_endpoint())
        cfg = model.pretrained_cfg
        source = f"timm:{cfg.get('hf_hub_id') or cfg.get('url') or name}"
    return target_from_timm_model(model, spec=spec, weights=source)


def target_from_timm_model(model: nn.Module, spec: str = "timm:<in-memory>",
                           weights: str = "random") -> Target:
    """Wrap a timm model you built yourself (e.g. with img_size=...) in a Target."""
    from timm.data import resolve_data_config

    model.eval()
    cfg = resolve_data_config({}, model=model)
    img = getattr(getattr(model, "patch_embed", None), "img_size", None)
    if img and tuple(img) != tuple(cfg["input_size"][1:]):  # built with img_size=...: the
        cfg["input_size"] = (3, *img)                     # pretrained cfg still names the old size
    return Target(spec=spec, model=model, preprocess=preprocess_from_data_config(cfg),
                  forward=model, tokens=timm_tokens(model), weights=weights, family="timm",
                  class_names=_class_names(model))


def preprocess_from_data_config(cfg: dict) -> Preprocess:
    """timm data config (input_size, crop_pct, crop_mode, interpolation, mean, std) -> Preprocess."""
    size = int(cfg["input_size"][-1])
    crop_pct = float(cfg.get("crop_pct") or 1.0)
    mode = cfg.get("crop_mode", "center")
    scale = math.floor(size / crop_pct)  # timm's own formula for the pre-crop size
    if mode == "squash" and crop_pct >= 1.0:
        resize = None  # resize straight to size x size
    elif mode == "border":
        resize = size  # approximated: timm pads to a square then resizes
    else:
        resize = scale
    interp = cfg.get("interpolation", "bicubic")
    # lanczos / random have no Preprocess equivalent; bicubic is the closest
    interp = interp if interp in {"bilinear", "bicubic", "nearest"} else "bicubic"
    return Preprocess(size=size, mean=tuple(cfg["mean"]), std=tuple(cfg["std"]), resize=resize,
                      interpolation=interp)


def timm_tokens(model: nn.Module) -> TokenInfo | None:
    """Token layout of timm ViTs: [cls][registers][patches] (timm's `_pos_embed` order)."""
    patch_embed = getattr(model, "patch_embed", None)
    grid = getattr(patch_embed, "grid_size", None)
    n_prefix = getattr(model, "num_prefix_tokens", None)
    if grid is None or n_prefix is None:
        return None  # CNNs, and hierarchical models (Swin) whose maps are 4-D
    has_cls = getattr(model, "cls_token", None) is not None
    n_reg = int(getattr(model, "num_reg_tokens", 0) or 0)
    start = 1 if has_cls else 0
    return TokenInfo(n_prefix=int(n_prefix), cls_index=0 if has_cls else None,
                     register_indices=tuple(range(start, start + n_reg)),
                     grid=(int(grid[0]), int(grid[1])))


def _class_names(model: nn.Module) -> list[str] | None:
    from timm.data import ImageNetInfo, infer_imagenet_subset

    subset = infer_imagenet_subset(model)
    if not subset:
        return None
    info = ImageNetInfo(subset)
    if getattr(model, "num_classes", None) != info.num_classes():
        return None
    # 'tench, Tinca tinca' -> 'tench': the first lemma, like torchvision's categories
    return [d.split(",")[0].strip() for d in info.label_descriptions()]


def _checkpoint_file(path: str, spec: str) -> str:
    if os.path.isfile(path):
        return path
    for name in _CHECKPOINT_NAMES:  # a downloaded hub snapshot directory
        if os.path.isfile(os.path.join(path, name)):
            return os.path.join(path, name)
    raise UserError(f"no checkpoint in {path} for {spec}: expected one of {', '.join(_CHECKPOINT_NAMES)}"
                    f"; pass --weights with the checkpoint file itself")


def _torch_hub_dir() -> str:
    import torch

    return os.path.join(torch.hub.get_dir(), "checkpoints")
