"""`zoo:world-llava`'s architecture: a small transformers `LlavaForConditionalGeneration` that
captions world images and answers questions about them.

world-clip's vision tower (CLIP ViT, 64 px, patch 8, hidden 128, 4 layers), all 65 tokens (CLS + 8x8
patches: `vision_feature_select_strategy="full"`; `features="default"` drops CLS) of its last layer
(`vision_feature_layer=-1`), a 2-layer GELU projector, and a Llama language model (hidden 192,
3 layers, 4 heads, MLP 512) over the world tokenizer's 70 ids.

Prompt format (ids, no chat template; `config.prompt_order`, default image-first):
    <bos> <image> x 65  question words "?"   ->  answer words <eos>        (question answering)
    <bos> <image> x 65  <caption>            ->  caption words <eos>       (captioning)
question-first puts the question (or <caption>) before the image tokens instead.
The image token is written once per image feature (65 times): transformers does not expand it when
input_ids are built by hand.

This module is what inference needs (config, build, prompts, greedy answers); training (rows with
labels, plans, the loop) is worldmodels/train/.
"""

from __future__ import annotations

import torch

from .clip import COMMITTED_PATCH, COMMITTED_SIZE, CONFIG, make_config as clip_config, sized
from .tokenizer import BOS_ID, CAPTION_ID, EOS_ID, IMAGE_ID, PAD_ID, build_tokenizer

TEXT = dict(hidden_size=192, intermediate_size=512, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=4, max_position_embeddings=160)
TINY_TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                 num_key_value_heads=2, max_position_embeddings=160)


PROMPT_ORDERS = ("image-first", "question-first")


def check_order(order: str) -> str:
    if order not in PROMPT_ORDERS:
        raise ValueError(f"unknown prompt order {order!r}; choose one of {', '.join(PROMPT_ORDERS)}")
    return order


FEATURES = ("full", "default")  # vision_feature_select_strategy: CLS + patches, or patches only


def n_image_tokens(vision_config, features: str = "full") -> int:
    return (vision_config.image_size // vision_config.patch_size) ** 2 + (features == "full")


def make_config(vision_config, text: dict = TEXT, vocab_size: int | None = None,
                order: str = "image-first", features: str = "full"):
    from transformers import LlavaConfig

    vocab_size = vocab_size or len(build_tokenizer())
    vc = vision_config.to_dict() if hasattr(vision_config, "to_dict") else dict(vision_config)
    vc["model_type"] = "clip_vision_model"
    tc = dict(text, model_type="llama", vocab_size=vocab_size, pad_token_id=PAD_ID, bos_token_id=BOS_ID,
              eos_token_id=EOS_ID)
    config = LlavaConfig(vision_config=vc, text_config=tc, image_token_index=IMAGE_ID,
                         image_seq_length=0, vision_feature_select_strategy=features,
                         vision_feature_layer=-1, projector_hidden_act="gelu")
    if features not in FEATURES:
        raise ValueError(f"unknown image features {features!r}; choose one of {', '.join(FEATURES)}")
    config.image_seq_length = n_image_tokens(config.vision_config, features)
    config.architectures = ["LlavaForConditionalGeneration"]
    config.pad_token_id = PAD_ID
    config.prompt_order = check_order(order)  # saved in config.json; read by prompt_order()
    return config


def build_model(clip=None, text: dict = TEXT, seed: int = 0, vision_cfg: dict | None = None,
                vision_config=None, tower_state: dict | None = None, order: str = "image-first",
                features: str = "full"):
    """A fresh world-llava; with `clip` (a CLIPModel) its vision tower starts from clip's, with
    `vision_config` + `tower_state` from that vision config and state dict."""
    from transformers import LlavaForConditionalGeneration

    torch.manual_seed(seed)
    if clip is not None:
        vision_config, tower_state = clip.config.vision_config, clip.vision_model.state_dict()
    if vision_config is None:
        base = dict(CONFIG, vision=vision_cfg) if vision_cfg else sized(CONFIG, COMMITTED_SIZE, COMMITTED_PATCH)
        vision_config = clip_config(base).vision_config
    model = LlavaForConditionalGeneration(make_config(vision_config, text, order=order, features=features))
    if tower_state is not None:
        tower = model.model.vision_tower
        tower = getattr(tower, "vision_model", tower)  # transformers 5.x: no vision_model wrapper
        tower.load_state_dict(tower_state)
    return model


def prompt_order(config) -> str:
    """The checkpoint's prompt layout (config.json `prompt_order`; older checkpoints: image-first)."""
    return getattr(config, "prompt_order", None) or "image-first"


def prompt_ids(tokenizer, n_img: int, question: str | None, order: str = "image-first") -> list[int]:
    """image-first: <bos> <image>*n_img question-words (or <caption> when question is None);
    question-first: <bos> question-words (or <caption>) <image>*n_img. The answer follows."""
    text = [CAPTION_ID] if question is None else tokenizer(question, add_special_tokens=False)["input_ids"]
    image = [IMAGE_ID] * n_img
    if check_order(order) == "question-first":
        return [BOS_ID] + text + image
    return [BOS_ID] + image + text


def answer_ids(tokenizer, answer: str) -> list[int]:
    return tokenizer(answer, add_special_tokens=False)["input_ids"] + [EOS_ID]


def pad_rows(rows: list[list[int]], value: int) -> torch.Tensor:
    n = max(len(r) for r in rows)
    return torch.tensor([r + [value] * (n - len(r)) for r in rows])


@torch.no_grad()
def answer_batch(model, tokenizer, pixels: torch.Tensor, questions: list[str | None],
                 max_new_tokens: int = 1) -> list[str]:
    """Greedy answers, through the standard `model(input_ids, pixel_values, attention_mask)` path.
    Rows are right-padded; the next token is read at each row's last real position."""
    n_img, order = model.config.image_seq_length, prompt_order(model.config)
    seqs = [prompt_ids(tokenizer, n_img, q, order) for q in questions]
    done = [False] * len(seqs)
    outs: list[list[int]] = [[] for _ in seqs]
    for _ in range(max_new_tokens):
        ids = pad_rows(seqs, PAD_ID)
        mask = (torch.arange(ids.shape[1])[None] < torch.tensor([len(s) for s in seqs])[:, None]).long()
        logits = model(input_ids=ids, pixel_values=pixels, attention_mask=mask).logits
        last = mask.sum(1) - 1
        nxt = logits[torch.arange(len(seqs)), last].argmax(-1).tolist()
        for i, t in enumerate(nxt):
            if not done[i]:
                if t == EOS_ID:
                    done[i] = True
                else:
                    outs[i].append(t)
                    seqs[i] = seqs[i] + [t]
        if all(done):
            break
    return [tokenizer.decode(o, skip_special_tokens=True) for o in outs]


def generate_caption(model, tokenizer, pixels: torch.Tensor, max_new_tokens: int = 40) -> list[str]:
    return answer_batch(model, tokenizer, pixels, [None] * len(pixels), max_new_tokens)
