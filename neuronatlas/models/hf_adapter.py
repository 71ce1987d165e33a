"""transformers models: `hf:openai/clip-vit-base-patch32`, `hf:/local/dir` (CLIP, SigLIP, DINOv2 with
or without registers, ViT, LLaVA, and any model that takes `pixel_values`).

The forward runs the vision path only: `get_image_features` when the model has it (CLIP / SigLIP:
the projected embedding; LLaVA: vision tower + multi-modal projector), else `model(pixel_values=...)`.
Preprocessing is read from the checkpoint's preprocessor_config.json; without one (random weights,
in-memory models) from the defaults of the library's image processor for that architecture.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ..errors import UserError
from .family import BuildOptions, ModelFamily, model_family, split_prompt, with_prompt
from .inputs import ImageTextBatch
from .layout import TokenInfo
from .weights import cached_then_online, hf_cache_dir, hf_endpoint, hub_offline, reachable
from .target import Preprocess, Target

_RESAMPLE = {0: "nearest", 1: "bicubic", 2: "bilinear", 3: "bicubic", 4: "bilinear", 5: "bicubic"}
# checkpoints whose published preprocessing differs from their processor class's defaults
_KNOWN_DEFAULTS = {
    "dinov2": dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), crop=224, short=256),
}


@dataclass(frozen=True)
class HFSpec:
    source: str
    """A hub id (`ORG/NAME`) or a local checkpoint directory."""
    prompt: str | None = None
    """For a LLaVA checkpoint (`hf:DIR?prompt=...`): the text every image is recorded with."""


@model_family
class HF(ModelFamily):
    name = "hf"
    grammar = "hf:ORG/NAME or hf:/local/dir [?prompt=TEXT]"
    example = "hf:openai/clip-vit-base-patch32"

    def parse(self, rest: str) -> HFSpec:
        rest, prompt = split_prompt(rest, self.name)
        if not rest:
            raise UserError(f"bad transformers spec 'hf:': use {self.grammar}, e.g. {self.example}")
        return HFSpec(rest, prompt)

    def build(self, spec: HFSpec, how: BuildOptions) -> Target:
        target = build(how.spec, spec.source, how.weights, how.random_weights, how.device)
        return with_prompt(target, spec.prompt)


def build(spec: str, rest: str, weights: str | None = None, random_weights: bool = False,
          device: str | None = None) -> Target:
    import transformers

    if weights is not None and not os.path.isdir(weights):
        raise UserError(f"--weights for {spec} must be a checkpoint directory (config.json and the "
                        f"weights, as save_pretrained writes them), not the file {weights}")
    source = weights or rest  # --weights DIR overrides where the checkpoint is read from
    local = os.path.isdir(source)
    if not local and (source.startswith(("/", ".", "~")) or source.count("/") > 1):
        raise UserError(f"no directory {source} for {spec}: pass hf:ORG/NAME or an existing directory")
    looked = source if local else hf_cache_dir()

    def load_config():
        return transformers.AutoConfig.from_pretrained(source)
    config = load_config() if local else cached_then_online(spec, load_config, looked, hf_endpoint())
    cls = _model_class(config)
    if random_weights:
        model, origin = cls._from_config(config), "random"
    else:
        dtype = "auto" if (device or "").startswith("cuda") else torch.float32

        def load_model():
            return cls.from_pretrained(source, config=config, dtype=dtype)
        model = load_model() if local else cached_then_online(spec, load_model, looked, hf_endpoint())
        origin = source if local else f"hf:{source}"
    target = target_from_hf_model(model, _preprocess_from_checkpoint(source, local), spec=spec,
                                  weights=origin)
    if _is_llava(model):
        target.prompted = lambda prompt: _llava_with_tokenizer(target, source, local, prompt)
    return target


# llava-1.5's conversation template (the vlm package's default too); <image> stands for the
# image features, written once per feature so the model's own merge finds them
LLAVA_TEMPLATE = "USER: <image>\n{prompt} ASSISTANT:"


def _is_llava(model) -> bool:
    cfg = model.config
    return hasattr(cfg, "vision_config") and hasattr(cfg, "text_config") and \
        getattr(cfg, "image_token_id", getattr(cfg, "image_token_index", None)) is not None


def _llava_with_tokenizer(target: Target, source: str, local: bool, prompt: str) -> Target:
    """`hf:DIR?prompt=...`: the checkpoint's own tokenizer writes the prompt in LLAVA_TEMPLATE."""
    import transformers

    def load():
        return transformers.AutoTokenizer.from_pretrained(source)
    try:
        tok = load() if local else cached_then_online(target.spec, load, hf_cache_dir(), hf_endpoint())
    except (OSError, ValueError) as e:
        raise UserError(f"{target.spec}: a prompt needs the checkpoint's tokenizer, and {source} has "
                        f"none ({type(e).__name__}): save it next to the weights "
                        f"(tokenizer.save_pretrained), or record without ?prompt=") from e
    cfg = target.model.config
    image_id = getattr(cfg, "image_token_id", None)
    image_id = int(cfg.image_token_index if image_id is None else image_id)
    image_tok = tok.convert_ids_to_tokens(image_id)

    def build_prompt(n: int, text: str) -> list[int]:
        ids = tok(LLAVA_TEMPLATE.format(prompt=text).replace("<image>", image_tok * n))["input_ids"]
        if ids.count(image_id) != n:  # the tokenizer split the image token: the merge would fail
            raise UserError(f"{target.spec}: its tokenizer does not keep {image_tok!r} (id {image_id}) "
                            f"as one token, so the image cannot be placed in the prompt")
        return ids
    return target_from_llava(target.model, build_prompt, prompt, target.preprocess, target.spec,
                             target.weights)


def target_from_hf_model(model: nn.Module, preprocess: Preprocess | None = None,
                         spec: str = "hf:<in-memory>", weights: str = "in-memory") -> Target:
    """Wrap a transformers model (e.g. one built from a tiny random config) in a Target."""
    model.eval()
    vcfg = vision_config(model.config)
    if preprocess is None:
        preprocess = default_preprocess(model.config)
    tokens = _tokens(model, vcfg, preprocess.size)

    if hasattr(model, "get_image_features"):
        def forward(pixels):
            out = model.get_image_features(pixel_values=pixels.to(_dtype(model)))
            out = getattr(out, "pooler_output", out)  # transformers 5.x returns an output object
            return torch.stack(list(out)) if isinstance(out, (list, tuple)) else out
    else:
        def forward(pixels):
            return model(pixel_values=pixels.to(_dtype(model)))
    id2label = getattr(model.config, "id2label", None) or {}
    n_labels = getattr(model.config, "num_labels", 0)
    head = any(n.endswith("classifier") for n, _ in model.named_children())
    class_names = [id2label[i] for i in range(n_labels)] if head and len(id2label) == n_labels else None
    extras = {"get_text_features": model.get_text_features} if hasattr(model, "get_text_features") \
        else {}
    return Target(spec=spec, model=model, preprocess=preprocess, forward=forward, tokens=tokens,
                  weights=weights, family="hf", class_names=class_names, extras=extras)


def target_from_llava(model: nn.Module, build_prompt: Callable[[int, str], list[int]], prompt: str,
                      preprocess: Preprocess | None = None, spec: str = "hf:<in-memory>",
                      weights: str = "in-memory") -> Target:
    """A LLaVA-style VLM recorded through its language model: every image goes in with the same text
    `prompt` (the Target takes an ImageTextBatch), so the decoder layers are hook points next to the
    vision tower's. `build_prompt(n_image_tokens, prompt)` returns the token ids in the model's own
    template, with the image token written once per image feature. The decoder layers' outputs are
    (B, image tokens + prompt tokens, D): record them with pooling `mean` (or `max`)."""
    target = target_from_hf_model(model, preprocess, spec, weights)
    cfg = model.config
    vcfg = vision_config(cfg)
    n_image = (int(vcfg.image_size) // int(vcfg.patch_size)) ** 2 \
        + int(getattr(cfg, "vision_feature_select_strategy", "default") == "full")

    def forward_batch(batch: ImageTextBatch):
        ids = torch.tensor(build_prompt(n_image, batch.prompt), device=batch.pixels.device)
        ids = ids.expand(len(batch), -1)  # one prompt for every image: no padding needed
        return model(input_ids=ids, attention_mask=torch.ones_like(ids),
                     pixel_values=batch.pixels.to(_dtype(model)))

    target.inputs, target.forward_batch, target.prompt = ImageTextBatch, forward_batch, prompt
    target.prompted = None  # one prompt per Target: another prompt is another target_from_llava
    target._hook_points = None  # discovered again, through the language model
    return target


def vision_config(config):
    """The config that describes the image encoder (CLIP/SigLIP/LLaVA nest it)."""
    return getattr(config, "vision_config", None) or config


def _dtype(model: nn.Module) -> torch.dtype:
    return next(model.parameters()).dtype


def _model_class(config):
    """The checkpoint's own class (config.architectures), else AutoModel for its type."""
    import transformers

    for arch in getattr(config, "architectures", None) or []:
        cls = getattr(transformers, arch, None)
        if cls is not None:
            return cls
    return transformers.AutoModel


def _tokens(model: nn.Module, vcfg, size: int) -> TokenInfo | None:
    """[cls][registers][patches] (HF's Dinov2WithRegisters order); SigLIP has patches only."""
    patch = getattr(vcfg, "patch_size", None)
    if patch is None:
        return None  # conv backbones
    patch = patch[0] if isinstance(patch, (tuple, list)) else patch
    names = [n for n, _ in model.named_parameters()]
    has_cls = any(n.endswith(("class_embedding", "cls_token")) for n in names)
    n_reg = int(getattr(vcfg, "num_register_tokens", 0) or 0)
    start = 1 if has_cls else 0
    # the grid follows the input size (DINOv2 interpolates its 518-px position embeddings)
    side = size // int(patch)
    return TokenInfo(n_prefix=start + n_reg, cls_index=0 if has_cls else None,
                     register_indices=tuple(range(start, start + n_reg)), grid=(side, side))


# -- preprocessing ---------------------------------------------------------------------------------
def preprocess_from_json(p: dict) -> Preprocess:
    """A preprocessor_config.json dict -> Preprocess."""
    def side(v, key="height"):
        if isinstance(v, dict):
            return v.get(key) or v.get("shortest_edge") or v.get("height")
        return v

    size = p.get("size", 224)
    crop = p.get("crop_size") if p.get("do_center_crop", "crop_size" in p) else None
    short = size.get("shortest_edge") if isinstance(size, dict) else (
        size if isinstance(size, int) else None)
    if crop is not None:
        final, resize = side(crop), short or side(size)
    else:
        # no crop: an explicit height/width squashes; a shortest edge alone is taken as square
        final, resize = side(size), None
    interp = _RESAMPLE.get(p.get("resample", 3), "bicubic")
    return Preprocess(size=int(final), mean=tuple(p.get("image_mean", (0.5, 0.5, 0.5))),
                      std=tuple(p.get("image_std", (0.5, 0.5, 0.5))),
                      resize=int(resize) if resize else None, interpolation=interp)


def default_preprocess(config) -> Preprocess:
    """Defaults of the library's image processor for this architecture, sized to the model's
    native input (`image_size`)."""
    vcfg = vision_config(config)
    kind = vcfg.model_type.replace("_vision_model", "").replace("_with_registers", "")
    native = getattr(vcfg, "image_size", None)
    native = native[0] if isinstance(native, (tuple, list)) else native
    if kind in _KNOWN_DEFAULTS:
        d = _KNOWN_DEFAULTS[kind]
        size = native or d["crop"]
        return Preprocess(size=size, mean=d["mean"], std=d["std"],
                          resize=round(size * d["short"] / d["crop"]), interpolation="bicubic")
    p = _processor_defaults(kind) or _processor_defaults(config.model_type) or {}
    if not p:
        p = {"size": {"height": 224, "width": 224}, "image_mean": (0.485, 0.456, 0.406),
             "image_std": (0.229, 0.224, 0.225), "resample": 3}
    pre = preprocess_from_json(p)
    if native and native != pre.size:  # keep the resize / crop ratio, at the model's input size
        resize = round(pre.resize * native / pre.size) if pre.resize else None
        pre = Preprocess(native, pre.mean, pre.std, resize, pre.interpolation)
    return pre


def _processor_defaults(model_type: str) -> dict | None:
    import transformers
    from transformers.models.auto.image_processing_auto import IMAGE_PROCESSOR_MAPPING_NAMES

    names = IMAGE_PROCESSOR_MAPPING_NAMES.get(model_type)
    if isinstance(names, dict):
        names = list(names.values())
    for name in [names] if isinstance(names, str) else (names or []):
        cls = getattr(transformers, name, None) if name else None
        if cls is None:
            continue
        try:
            proc = cls()
        except Exception:  # some processors need optional packages; try the next backend
            continue
        out = {k: _size_dict(getattr(proc, k)) for k in ("size", "crop_size")
               if getattr(proc, k, None) is not None}
        out["do_center_crop"] = bool(getattr(proc, "do_center_crop", False))
        for key in ("image_mean", "image_std", "resample"):
            if getattr(proc, key, None) is not None:
                out[key] = getattr(proc, key)
        try:
            out["resample"] = int(out.get("resample", 3))
        except (TypeError, ValueError):  # an InterpolationMode: take its name
            out["resample"] = {"nearest": 0, "bilinear": 2}.get(str(out["resample"].value), 3)
        return out
    return None


def _size_dict(v):
    if isinstance(v, (int, dict)):
        return v
    return {k: getattr(v, k) for k in ("height", "width", "shortest_edge") if getattr(v, k, None)}


def _preprocess_from_checkpoint(source: str, local: bool) -> Preprocess | None:
    """preprocessor_config.json (or processor_config.json's image_processor), from the directory or
    the HF cache; None when the checkpoint has none."""
    for fname, key in (("preprocessor_config.json", None), ("processor_config.json", "image_processor")):
        path = os.path.join(source, fname) if local else _cached(source, fname)
        if path and os.path.isfile(path):
            with open(path) as f:
                data = json.load(f)
            data = data.get(key, {}) if key else data
            if "image_mean" in data:
                return preprocess_from_json(data)
    return None


def _cached(repo: str, fname: str) -> str | None:
    from huggingface_hub import hf_hub_download

    try:
        with hub_offline():
            return hf_hub_download(repo, fname)
    except Exception:
        pass
    if not reachable(hf_endpoint()):
        return None
    try:  # from_pretrained fetched the model files only
        return hf_hub_download(repo, fname)
    except Exception:  # the repo has no such file
        return None
