"""CLIP-style image-text scorers: open_clip models, transformers CLIP / SigLIP, and zoo models that
bring their own scorer (`zoo:world-clip`).

    load_scorer("open_clip:ViT-B-32/datacomp_xl_s13b_b90k")
    load_scorer("hf:openai/clip-vit-base-patch32")     # or hf:/local/checkpoint/dir
    load_scorer("zoo:world-clip")

Each is built from the model's `Target` (so weights are found exactly as `neuronatlas record` finds
them: local cache first). Texts are embedded raw, without a prompt template, as CLIP-Dissect does;
pass `template="a photo of a {}"` to change that. `random_weights=True` works for tests.
"""

from __future__ import annotations

import hashlib
import inspect

import torch
from torch.nn.functional import normalize

from ..errors import UserError
from ..models.target import Target
from .scorer import ImageTextScorer


def module_fingerprint(module: torch.nn.Module, sample: int = 4096) -> str:
    """A cheap content hash of a module's weights (shape + the first `sample` values of every
    tensor), so caches keyed by it are never shared between two random-weight models."""
    h = hashlib.blake2b(digest_size=12)
    for name, p in module.state_dict().items():
        h.update(name.encode())
        h.update(str(tuple(p.shape)).encode())
        h.update(p.detach().flatten()[:sample].float().cpu().numpy().tobytes())
    return h.hexdigest()


class _TargetScorer(ImageTextScorer):
    """Shared parts: device, batching of texts, describe()."""

    text_batch = 256

    def __init__(self, target: Target, template: str = "{}"):
        self.target, self.template = target, template
        self.preprocess = target.preprocess
        self.name = target.spec
        self._fingerprint: str | None = None

    @property
    def device(self) -> torch.device:
        return self.target.device

    @torch.no_grad()
    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        texts = [self.template.format(t) for t in texts]
        out = [self._encode_text_batch(texts[i:i + self.text_batch])
               for i in range(0, len(texts), self.text_batch)]
        return torch.cat(out) if out else torch.zeros(0, self.dim)

    def describe(self) -> dict:
        if self._fingerprint is None:
            self._fingerprint = module_fingerprint(self.target.model)
        return {**super().describe(), "weights": self.target.weights, "template": self.template,
                "fingerprint": self._fingerprint}


class OpenClipScorer(_TargetScorer):
    """An open_clip CLIP/SigLIP model (Target from `open_clip_adapter`)."""

    def __init__(self, target: Target, tokenizer=None, template: str = "{}"):
        super().__init__(target, template)
        self.model = target.model
        tok = tokenizer or target.extras.get("tokenizer")
        if tok is None:
            raise UserError(f"{target.spec} has no tokenizer: pass tokenizer= (open_clip.get_tokenizer)")
        self._tokenizer = tok
        with torch.no_grad():
            self.dim = int(self._encode_text_batch(["x"]).shape[-1])

    @property
    def tokenizer(self):
        tok = self._tokenizer
        if inspect.isfunction(tok) and not inspect.signature(tok).parameters:
            self._tokenizer = tok()  # the adapter stores a lazy factory
        return self._tokenizer

    @torch.no_grad()
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        return normalize(self.model.encode_image(pixels.to(self.device)).float(), dim=-1)

    def _encode_text_batch(self, texts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(texts).to(self.device)
        return normalize(self.model.encode_text(tokens).float(), dim=-1).cpu()


class HFClipScorer(_TargetScorer):
    """A transformers CLIPModel / SiglipModel (anything with get_image_features/get_text_features).

    `tokenizer`: a transformers tokenizer, or any callable `tok(texts, padding=..., truncation=True,
    max_length=..., return_tensors="pt") -> {"input_ids", ["attention_mask"]}`."""

    def __init__(self, target: Target, tokenizer, template: str = "{}"):
        super().__init__(target, template)
        self.model = target.extras.get("model", target.model)
        if not hasattr(self.model, "get_text_features"):
            raise UserError(f"{target.spec} has no text tower (get_text_features): it cannot score "
                            f"texts; use a CLIP or SigLIP checkpoint, or a conse: scorer")
        if tokenizer is None:
            raise UserError(f"{target.spec}: no tokenizer found next to the checkpoint; pass tokenizer=")
        self.tokenizer = tokenizer
        tcfg = getattr(self.model.config, "text_config", self.model.config)
        self.max_length = int(getattr(tcfg, "max_position_embeddings", 77))
        # SigLIP was trained on texts padded to the full length; CLIP pads to the batch's longest
        self.padding = "max_length" if "siglip" in self.model.config.model_type else True
        self.dim = int(getattr(self.model.config, "projection_dim", 0)
                       or self._encode_text_batch(["x"]).shape[-1])

    @torch.no_grad()
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        return normalize(self.target.forward(pixels.to(self.device)).float(), dim=-1)

    def _encode_text_batch(self, texts: list[str]) -> torch.Tensor:
        enc = self.tokenizer(list(texts), padding=self.padding, truncation=True,
                             max_length=self.max_length, return_tensors="pt")
        keys = ("input_ids", "attention_mask") if "siglip" not in self.model.config.model_type \
            else ("input_ids",)
        kwargs = {k: enc[k].to(self.device) for k in keys if k in enc}
        out = self.model.get_text_features(**kwargs)
        out = getattr(out, "pooler_output", out)  # transformers 5.x returns an output object
        return normalize(out.float(), dim=-1).cpu()


def scorer_from_target(target: Target, tokenizer=None, template: str = "{}") -> ImageTextScorer:
    """The image-text scorer of a loaded Target: its own (`extras["scorer"]`, e.g. world-clip), else
    open_clip or transformers CLIP/SigLIP."""
    if "scorer" in target.extras:
        return target.extras["scorer"]
    if target.family == "open_clip":
        return OpenClipScorer(target, tokenizer, template)
    if target.family == "hf" or "get_text_features" in target.extras:
        return HFClipScorer(target, tokenizer or target.extras.get("tokenizer"), template)
    hint = f"; it is a classifier: try conse:{target.spec}" if target.class_names else ""
    raise UserError(f"{target.spec} is not an image-text model (no text encoder){hint}")


def _hf_tokenizer(source: str):
    """The checkpoint's tokenizer, from the local directory or the HF cache (network only if there)."""
    import os

    import transformers

    from ..models.weights import cached_then_online, hf_cache_dir, hf_endpoint

    def load():
        return transformers.AutoTokenizer.from_pretrained(source)
    if os.path.isdir(source):
        return load()
    return cached_then_online(f"hf:{source}", load, hf_cache_dir(), hf_endpoint())


def _load(family: str, arg: str | None, tokenizer=None, template: str = "{}", **target_kwargs):
    from ..models import load_target

    if not arg:
        raise UserError(f"scorer spec '{family}:' names no model (e.g. open_clip:ViT-B-32/openai, "
                        f"hf:openai/clip-vit-base-patch32, zoo:world-clip)")
    spec = f"{family}:{arg}"
    target = load_target(spec, **target_kwargs)
    if family == "hf" and tokenizer is None and "scorer" not in target.extras:
        source = target_kwargs.get("weights") or arg
        tokenizer = _hf_tokenizer(source)
    return scorer_from_target(target, tokenizer, template)


def load_open_clip(arg: str | None, **kwargs) -> ImageTextScorer:
    """`open_clip:MODEL/TAG`; kwargs: weights, random_weights, device, tokenizer, template."""
    return _load("open_clip", arg, **kwargs)


def load_hf(arg: str | None, **kwargs) -> ImageTextScorer:
    """`hf:ORG/NAME` or `hf:/local/dir` (CLIP, SigLIP)."""
    return _load("hf", arg, **kwargs)


def load_zoo(arg: str | None, **kwargs) -> ImageTextScorer:
    """`zoo:NAME` for zoo models with a scorer (world-clip)."""
    return _load("zoo", arg, **kwargs)
