"""`zoo:world-clip`'s architecture: a small transformers `CLIPModel` over the world's words.

Vision ViT (the committed weights: 64 px input, patch 8, so 8x8 patches + CLS), hidden 128, 4 layers,
4 heads, MLP 512; text transformer over the world tokenizer's 70 ids, hidden 128, 4 layers, MLP 512;
projection 128. About 1.67M parameters. Inputs are the world rendered at the model's size, scaled
to [0, 1] and normalised with MEAN / STD.

This module is what inference needs (config, build, encoders); training is worldmodels/train/.
"""

from __future__ import annotations

import torch

from .tokenizer import BOS_ID, EOS_ID, PAD_ID, build_tokenizer

MEAN = STD = (0.5, 0.5, 0.5)  # pixels in [0, 1] -> [-1, 1], as every world model was trained
IMAGE_SIZE, PATCH = 32, 4
COMMITTED_SIZE, COMMITTED_PATCH = 64, 8  # the committed world-clip's input (its plan v4)
CONFIG = dict(
    vision=dict(hidden_size=128, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
                image_size=IMAGE_SIZE, patch_size=PATCH, hidden_act="gelu"),
    text=dict(hidden_size=128, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
              max_position_embeddings=48, hidden_act="gelu"),
    projection_dim=128,
)
TINY = dict(
    vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                image_size=IMAGE_SIZE, patch_size=PATCH),
    text=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
              max_position_embeddings=48),
    projection_dim=32,
)


def sized(cfg: dict, image_size: int, patch: int) -> dict:
    """cfg with the vision tower's input size and patch replaced."""
    return dict(cfg, vision=dict(cfg["vision"], image_size=image_size, patch_size=patch))


def make_config(cfg: dict = CONFIG, vocab_size: int | None = None):
    from transformers import CLIPConfig

    vocab_size = vocab_size or len(build_tokenizer())
    text = dict(cfg["text"], vocab_size=vocab_size, pad_token_id=PAD_ID, bos_token_id=BOS_ID,
                eos_token_id=EOS_ID)
    config = CLIPConfig(text_config=text, vision_config=dict(cfg["vision"]),
                        projection_dim=cfg["projection_dim"])
    config.architectures = ["CLIPModel"]
    return config


def build_model(cfg: dict = CONFIG, seed: int = 0):
    from transformers import CLIPModel

    torch.manual_seed(seed)
    return CLIPModel(make_config(cfg))


def encode_texts(model, tokenizer, texts: list[str]) -> torch.Tensor:
    enc = tokenizer(list(texts), padding=True, return_tensors="pt")
    out = model.get_text_features(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
    return getattr(out, "pooler_output", out)


def encode_images(model, pixels: torch.Tensor) -> torch.Tensor:
    out = model.get_image_features(pixel_values=pixels)
    return getattr(out, "pooler_output", out)
