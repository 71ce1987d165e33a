"""The model a vlm method works on: any transformers `LlavaForConditionalGeneration` (llava-1.5 or
llava-phi style checkpoints, and `zoo:world-llava`, which is one) plus how its prompts are built.

Everything geometric is read from the config, never assumed (no 576 / 24): the image token id
(`config.image_token_id`), the vision grid (vision `image_size // patch_size`), and whether the
projector output keeps CLS (`vision_feature_select_strategy`: "full" keeps it, "default" drops it).
The language model's parts (decoder layers, final norm, unembedding) are found by one function that
knows both the transformers 4.x layout (`model.language_model.model`) and the 5.x one
(`model.model.language_model`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..errors import UserError


@dataclass
class LanguageParts:
    layers: torch.nn.ModuleList  # decoder layers, in order
    norm: torch.nn.Module  # the final norm, applied once before the unembedding
    lm_head: torch.nn.Module


def language_parts(model) -> LanguageParts:
    """The decoder layers, final norm and unembedding of a Llava model (transformers 4.x or 5.x)."""
    inner = getattr(model, "model", None)
    lm = getattr(inner, "language_model", None)  # 5.x: model.model.language_model is the base model
    if lm is None:
        lm = getattr(getattr(model, "language_model", None), "model", None)  # 4.x
    head = getattr(model, "lm_head", None) or getattr(getattr(model, "language_model", None), "lm_head", None)
    norm = getattr(lm, "norm", None) or getattr(lm, "final_layernorm", None)
    if lm is None or head is None or norm is None or not hasattr(lm, "layers"):
        raise UserError(f"{type(model).__name__} is not a LlavaForConditionalGeneration-style model "
                        "(no language model layers / final norm / lm_head found); pass an HF Llava "
                        "checkpoint or zoo:world-llava")
    return LanguageParts(lm.layers, norm, head)


@dataclass
class VlmSubject:
    """A Llava model, its token decoder, and a prompt builder `(n_image_tokens, prompt) -> ids`
    (the image token written once per image feature)."""

    model: torch.nn.Module
    decode_token: Callable[[int], str]
    build_prompt: Callable[[int, str | None], list[int]]
    transform: Callable  # PIL image -> pixel tensor [3, H, W]
    name: str = "llava"
    view: Callable | None = None  # PIL image -> the RGB image the model sees (resize / crop, no norm)
    tokenizer: object = None  # a transformers tokenizer (answers are decoded and words encoded with it)

    @property
    def config(self):
        return self.model.config

    @property
    def image_token_id(self) -> int:
        c = self.config
        tid = getattr(c, "image_token_id", None)
        return int(tid if tid is not None else c.image_token_index)

    @property
    def grid(self) -> int:
        """Patches per side of the vision tower's grid."""
        vc = self.config.vision_config
        return int(vc.image_size) // int(vc.patch_size)

    @property
    def has_cls(self) -> bool:
        return getattr(self.config, "vision_feature_select_strategy", "default") == "full"

    @property
    def n_image_tokens(self) -> int:
        return self.grid * self.grid + int(self.has_cls)

    def seen(self, image):
        """The image as the model sees it (its resize and crop), square, for display and masks."""
        if self.view is not None:
            return self.view(image)
        size = int(self.config.vision_config.image_size)
        return image.convert("RGB").resize((size, size))

    def image_positions(self, input_ids: torch.Tensor) -> list[torch.Tensor]:
        """Per row, the sequence positions of its image tokens, in feature order."""
        return [torch.nonzero(row == self.image_token_id).flatten() for row in input_ids]

    def patch_of(self, k: int) -> int:
        """Grid cell (row * grid + col) of the k-th image token, or -1 for CLS."""
        return k - 1 if self.has_cls else k

    def inputs(self, pixels: torch.Tensor, prompts: list[str | None]) -> dict:
        """Right-padded `input_ids`, `attention_mask`, `pixel_values` for one prompt per image."""
        rows = [self.build_prompt(self.n_image_tokens, p) for p in prompts]
        n = max(len(r) for r in rows)
        pad = getattr(self.config.text_config, "pad_token_id", None) or 0
        ids = torch.tensor([r + [pad] * (n - len(r)) for r in rows])
        mask = (torch.arange(n)[None] < torch.tensor([len(r) for r in rows])[:, None]).long()
        return dict(input_ids=ids, attention_mask=mask, pixel_values=pixels)


def world_llava_subject(model, tokenizer) -> VlmSubject:
    """zoo:world-llava: its own prompt format (worldmodels.arch.llava.prompt_ids) and 64 px transform."""
    from ..backends.world_clip import preprocess
    from ..worldmodels.arch.llava import prompt_ids, prompt_order

    order = prompt_order(model.config)
    pre = preprocess(model.config.vision_config.image_size)
    geometry = pre.geometry()
    subject = VlmSubject(
        model=model.eval(), decode_token=lambda t: tokenizer.convert_ids_to_tokens(int(t)),
        build_prompt=lambda n, q: prompt_ids(tokenizer, n, q, order),
        transform=pre.transform(), name="zoo:world-llava",
        view=lambda im: geometry(im.convert("RGB")), tokenizer=tokenizer)
    return subject


def hf_llava_subject(path: str, template: str = "USER: <image>\n{prompt} ASSISTANT:") -> VlmSubject:
    """A local HF Llava checkpoint directory with its processor (tokenizer + image processor).
    The prompt template is llava-1.5's; the processor expands <image> to the right token count."""
    import transformers

    model = transformers.LlavaForConditionalGeneration.from_pretrained(path, dtype=torch.float32).eval()
    proc = transformers.AutoProcessor.from_pretrained(path)
    tok = proc.tokenizer
    image_tok = tok.convert_ids_to_tokens(int(model.config.image_token_id))

    def build(n: int, prompt: str | None) -> list[int]:
        text = template.format(prompt=prompt or "Describe the image.")
        text = text.replace("<image>", image_tok * n)
        return tok(text, add_special_tokens=True)["input_ids"]

    def transform(im):
        return proc.image_processor(im, return_tensors="pt")["pixel_values"][0]

    def view(im):  # the processor's own resize and crop, without rescale / normalisation
        from PIL import Image

        arr = proc.image_processor(im.convert("RGB"), do_rescale=False, do_normalize=False,
                                   return_tensors="np")["pixel_values"][0]
        return Image.fromarray(arr.transpose(1, 2, 0).clip(0, 255).astype("uint8"))

    subject = VlmSubject(model, lambda t: tok.convert_ids_to_tokens(int(t)), build, transform,
                         name=path, view=view, tokenizer=tok)
    return subject


def load_subject(spec: str, weights: str | None = None, random_weights: bool = False) -> VlmSubject:
    """`zoo:world-llava` (committed weights, or `weights` dir) or `hf:DIR` / a directory."""
    if spec == "zoo:world-llava":
        from ..worldmodels.arch.checkpoint import load_world_model

        model, tok = load_world_model("world-llava", weights, random_weights)
        return world_llava_subject(model, tok)
    path = spec[3:] if spec.startswith("hf:") else spec
    import os

    if not os.path.isfile(os.path.join(path, "config.json")):
        raise UserError(f"{spec}: not zoo:world-llava nor a local Llava checkpoint directory "
                        "(expected config.json); download it first, e.g. hf:llava-hf/llava-1.5-7b-hf")
    return hf_llava_subject(path)
