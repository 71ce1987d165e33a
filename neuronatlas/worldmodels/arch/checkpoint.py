"""The world models on disk: a checkpoint directory (config.json, model.safetensors, tokenizer.json,
optionally train_state.json) and world-clip's saved vision tower (`warmup_vision.safetensors`, the
vision config in the file's metadata, so the tower loads on its own)."""

from __future__ import annotations

import json
import os

import torch

from ...errors import UserError
from .. import NAMES, weights_dir  # noqa: F401  (NAMES: the world models' names)

TOWER_FILE = "warmup_vision.safetensors"


def checkpoint_dir(name: str, weights: str | None = None) -> str:
    """`weights` (default: the committed weights of `name`), checked to hold a checkpoint."""
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
        else:
            from .llava import build_model
        model = build_model()
        tokenizer = build_tokenizer()
    else:
        path = checkpoint_dir(name, weights)
        model = cls.from_pretrained(path, dtype=torch.float32)
        tokenizer = load_tokenizer(path)
    return model.eval(), tokenizer


def save(model, tokenizer, out_dir: str, extra: dict | None = None):
    """A checkpoint directory that `load_world_model(name, out_dir)` reads; `extra` (the training
    step and validation metrics of the kept checkpoint) goes to train_state.json."""
    from .tokenizer import save_tokenizer

    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    save_tokenizer(tokenizer, out_dir)
    if extra:
        with open(os.path.join(out_dir, "train_state.json"), "w") as f:
            json.dump(extra, f, indent=1)


def save_tower(vision_model, out_dir: str):
    from safetensors.torch import save_file

    os.makedirs(out_dir, exist_ok=True)
    # the vision config travels in the file's metadata, so the tower loads on its own
    save_file({k: v.contiguous() for k, v in vision_model.state_dict().items()},
              os.path.join(out_dir, TOWER_FILE), metadata={"vision_config": vision_model.config.to_json_string()})


def load_tower(path: str):
    """(CLIPVisionConfig, state dict) of a tower saved by save_tower."""
    from safetensors import safe_open
    from safetensors.torch import load_file
    from transformers import CLIPVisionConfig

    with safe_open(path, "pt") as f:
        meta = f.metadata() or {}
    if "vision_config" not in meta:
        raise ValueError(f"{path} has no vision_config metadata (not written by save_tower)")
    return CLIPVisionConfig(**json.loads(meta["vision_config"])), load_file(path)
