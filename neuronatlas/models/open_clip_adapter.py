"""open_clip models: `open_clip:ViT-B-32/datacomp_xl_s13b_b90k` (model name / pretrained tag, tag
optional with --weights or --random-weights), or `open_clip:hf-hub:ORG/REPO`.

The forward runs the image tower only (`encode_image`). Preprocessing is `model.visual.preprocess_cfg`,
which open_clip fills from the tag's config, so random-weight models built for a tag get the tag's
mean/std and activation (QuickGELU for the OpenAI tags).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import UserError, near_matches
from .family import BuildOptions, ModelFamily, model_family
from .layout import TokenInfo
from .weights import RANDOM_FIX, cached_then_online, hf_cache_dir, hf_endpoint
from .target import Preprocess, Target


def parse(rest: str) -> tuple[str, str | None]:
    """'ViT-B-32/openai' -> ('ViT-B-32', 'openai'); schema names ('hf-hub:a/b') have no tag."""
    if rest.startswith(("hf-hub:", "local-dir:")):
        return rest, None
    name, _, tag = rest.partition("/")
    return name, tag or None


@dataclass(frozen=True)
class OpenClipSpec:
    model: str
    """open_clip's model name (`ViT-B-32`), or a schema name (`hf-hub:ORG/NAME`, `local-dir:PATH`)."""
    tag: str | None = None
    """The pretrained tag (`datacomp_xl_s13b_b90k`); None for schema names or random weights."""


@model_family
class OpenClip(ModelFamily):
    name = "open_clip"
    aliases = ("open-clip",)
    grammar = "open_clip:MODEL[/TAG]"
    example = "open_clip:ViT-B-32/datacomp_xl_s13b_b90k"

    def parse(self, rest: str) -> OpenClipSpec:
        name, tag = parse(rest)
        if not name or (tag is not None and "/" in tag):
            raise UserError(f"bad open_clip spec 'open_clip:{rest}': use {self.grammar}, e.g. "
                            f"{self.example}")
        return OpenClipSpec(name, tag)

    def build(self, spec: OpenClipSpec, how: BuildOptions) -> Target:
        return build(how.spec, spec.model, spec.tag, how.weights, how.random_weights)


def build(spec: str, name: str, tag: str | None = None, weights: str | None = None,
          random_weights: bool = False) -> Target:
    import open_clip

    tag_cfg: dict = {}
    if not name.startswith(("hf-hub:", "local-dir:")):
        if open_clip.get_model_config(name) is None:
            hint = near_matches(name, open_clip.list_models())
            raise UserError(f"unknown open_clip model '{name}' in {spec}"
                            + (f"; did you mean: {', '.join(hint)}?" if hint else "")
                            + "; open_clip.list_models() lists them")
        if tag:
            tag_cfg = open_clip.get_pretrained_cfg(name, tag) or {}
            if not tag_cfg:
                tags = open_clip.list_pretrained_tags_by_model(name)
                raise UserError(f"unknown pretrained tag '{tag}' for {name} in {spec}; known tags: "
                                f"{', '.join(tags) or '(none)'}")
    quick_gelu = bool(tag_cfg.get("quick_gelu", False))

    if random_weights:
        if name.startswith(("hf-hub:", "local-dir:")):
            model = cached_then_online(spec, lambda: open_clip.create_model(name, load_weights=False),
                                       looked=hf_cache_dir(), url=hf_endpoint())
        else:
            # a tag would make open_clip download before it looks at load_weights: pass its
            # architecture and preprocessing settings ourselves instead
            model = open_clip.create_model(name, pretrained=None, force_quick_gelu=quick_gelu,
                                           force_preprocess_cfg=_tag_preprocess(tag_cfg))
        source = "random"
    elif weights is not None:
        if name.startswith("local-dir:") or os.path.isdir(weights):
            model = open_clip.create_model(f"local-dir:{weights}" if os.path.isdir(weights) else name)
        else:
            model = open_clip.create_model(name, pretrained=weights, force_quick_gelu=quick_gelu)
        source = weights
    else:
        if tag is None and not name.startswith(("hf-hub:", "local-dir:")):
            tags = open_clip.list_pretrained_tags_by_model(name)
            raise UserError(f"{spec} names no pretrained tag: use open_clip:{name}/TAG with one of "
                            f"{', '.join(tags) or '(none)'}, or pass --weights PATH, {RANDOM_FIX}")
        model = cached_then_online(spec, lambda: open_clip.create_model(name, pretrained=tag),
                                   looked=hf_cache_dir(), url=hf_endpoint())
        source = f"open_clip:{name}/{tag}" if tag else f"open_clip:{name}"
    return target_from_open_clip_model(model, spec=spec, weights=source, tokenizer_name=name)


def target_from_open_clip_model(model, spec: str = "open_clip:<in-memory>", weights: str = "random",
                                tokenizer_name: str | None = None) -> Target:
    """Wrap an open_clip CLIP model; the image tower is what gets recorded."""
    import open_clip

    model.eval()
    extras = {"encode_text": model.encode_text}
    if tokenizer_name:  # built lazily: HF-text models fetch their tokenizer from the hub
        extras["tokenizer"] = lambda: open_clip.get_tokenizer(tokenizer_name)
    return Target(spec=spec, model=model, preprocess=_preprocess(model.visual.preprocess_cfg),
                  forward=model.encode_image, tokens=_tokens(model.visual), weights=weights,
                  family="open_clip", extras=extras)


def _tag_preprocess(tag_cfg: dict) -> dict | None:
    keys = ("mean", "std", "interpolation", "resize_mode")
    cfg = {k: tag_cfg[k] for k in keys if k in tag_cfg}
    return cfg or None


def _preprocess(cfg: dict) -> Preprocess:
    size = cfg.get("size", 224)
    size = int(size[0] if isinstance(size, (tuple, list)) else size)
    mode = cfg.get("resize_mode", "shortest")
    # 'shortest': resize the short side to size, center crop; 'squash': straight to size x size;
    # 'longest' (resize + pad) has no Preprocess equivalent and is approximated by 'shortest'
    resize = None if mode == "squash" else size
    interp = cfg.get("interpolation", "bicubic")
    return Preprocess(size=size, mean=tuple(cfg["mean"]), std=tuple(cfg["std"]), resize=resize,
                      interpolation=interp if interp in {"bilinear", "bicubic", "nearest"} else "bicubic")


def _tokens(visual) -> TokenInfo | None:
    from open_clip.transformer import VisionTransformer

    if isinstance(visual, VisionTransformer):  # [class embedding][patches], batch-first in 3.x
        return TokenInfo(n_prefix=1, cls_index=0, register_indices=(),
                         grid=tuple(int(g) for g in visual.grid_size))
    trunk = getattr(visual, "trunk", None)  # timm-backed towers (ViT-SO400M-SigLIP, ConvNeXt...)
    if trunk is not None:
        from .timm_adapter import timm_tokens

        return timm_tokens(trunk)
    return None  # ModifiedResNet: conv maps
