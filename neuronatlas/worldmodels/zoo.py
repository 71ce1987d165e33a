"""Zoo factories for the world models: `zoo:world-clip` and `zoo:world-llava` (offline, committed
weights in neuronatlas/worldmodels/weights/NAME). models/zoo.py names them by "module:function"
and imports them when a spec asks for them.

Target.extras: "tokenizer", "model" (the full CLIPModel / LlavaForConditionalGeneration), and for
world-clip "scorer", a `WorldClipScorer` (an ImageTextScorer, backends/world_clip.py).
"""

from __future__ import annotations

from ..backends.world_clip import WorldClipScorer, preprocess
from ..models.hf_adapter import target_from_hf_model
from ..models.target import Target
from ..models.zoo import zoo_entry
from .arch.checkpoint import load_world_model


@zoo_entry("world-clip", "small CLIP trained on the procedural world (image-text scorer)", 64,
           "committed", "neuronatlas/worldmodels/weights/world-clip")
def build_world_clip(weights: str | None = None, random_weights: bool = False) -> Target:
    model, tokenizer = load_world_model("world-clip", weights, random_weights)
    origin = "random" if random_weights else (weights or "neuronatlas:world-clip")
    target = target_from_hf_model(model, preprocess(model.config.vision_config.image_size),
                                  spec="zoo:world-clip", weights=origin)
    target.extras.update(tokenizer=tokenizer, model=model, scorer=WorldClipScorer(model, tokenizer))
    return target


@zoo_entry("world-llava", "small LLaVA-style VLM trained on the procedural world (captions, QA)",
           64, "committed", "neuronatlas/worldmodels/weights/world-llava")
def build_world_llava(weights: str | None = None, random_weights: bool = False) -> Target:
    model, tokenizer = load_world_model("world-llava", weights, random_weights)
    origin = "random" if random_weights else (weights or "neuronatlas:world-llava")
    target = target_from_hf_model(model, preprocess(model.config.vision_config.image_size),
                                  spec="zoo:world-llava", weights=origin)
    target.extras.update(tokenizer=tokenizer, model=model)
    return target
