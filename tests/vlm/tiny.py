"""Random-weight tiny Llava models built in the tests (no downloads)."""

from __future__ import annotations

import torch

from neuronatlas.vlm.subject import VlmSubject

VOCAB, IMAGE_ID = 50, 49


def tiny_llava(style: str = "llava-1.5", seed: int = 0, attn: str = "eager"):
    """llava-1.5 style: CLIP tower, default strategy (no CLS), layer -2, Llama text model.
    llava-phi style: CLIP tower, Phi text model (final_layernorm, partial rotary)."""
    import transformers

    torch.manual_seed(seed)
    vision = dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=2, image_size=30, patch_size=6, projection_dim=16)
    if style == "llava-phi":
        text = dict(model_type="phi", hidden_size=48, intermediate_size=96, num_hidden_layers=3,
                    num_attention_heads=4, vocab_size=VOCAB, max_position_embeddings=128, pad_token_id=0)
    else:
        text = dict(model_type="llama", hidden_size=48, intermediate_size=96, num_hidden_layers=3,
                    num_attention_heads=4, num_key_value_heads=2, vocab_size=VOCAB,
                    max_position_embeddings=128, pad_token_id=0)
    cfg = transformers.LlavaConfig(vision_config=vision, text_config=text, image_token_index=IMAGE_ID,
                                   vision_feature_layer=-2, vision_feature_select_strategy="default",
                                   projector_hidden_act="gelu")
    cfg._attn_implementation = attn
    model = transformers.LlavaForConditionalGeneration(cfg).eval()
    with torch.no_grad():  # norms start at weight 1 (idempotent RMSNorm): make them non-trivial
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.uniform_(0.5, 1.5)
    return model


def tiny_subject(style: str = "llava-1.5", seed: int = 0, attn: str = "eager") -> VlmSubject:
    model = tiny_llava(style, seed, attn)

    def build(n: int, prompt: str | None) -> list[int]:
        words = [3 + (ord(c) % 40) for c in (prompt or "describe")]
        return [1] + [IMAGE_ID] * n + words

    def transform(im):
        import numpy as np

        a = np.asarray(im.convert("RGB").resize((30, 30)), dtype="float32") / 255.0
        return torch.from_numpy(a).permute(2, 0, 1)

    return VlmSubject(model, lambda t: f"t{int(t)}", build, transform, name=f"tiny-{style}")
