"""Zoo factories for the world models: `zoo:world-clip` and `zoo:world-llava` (offline, committed
weights in neuronatlas/worldmodels/weights/NAME). models/zoo.py names them by "module:function"
and imports them when a spec asks for them.

Target.extras: "tokenizer", "model" (the full CLIPModel / LlavaForConditionalGeneration), and for
world-clip "scorer", a `WorldClipScorer` (an ImageTextScorer, backends/world_clip.py).
`zoo:world-llava?prompt=TEXT` records the VLM through its language model, every image with TEXT in
the checkpoint's own prompt layout (`arch.llava.prompt_ids`).
"""

from __future__ import annotations

from ..backends.world_clip import WorldClipScorer, preprocess
from ..models.hf_adapter import target_from_hf_model, target_from_llava
from ..models.target import Target
from ..models.zoo import zoo_entry
from .arch.checkpoint import load_world_model
from .arch.llava import prompt_ids, prompt_order


@zoo_entry("world-clip", "small CLIP trained on the procedural world (image-text scorer)", 64,
           "committed", "neuronatlas/worldmodels/weights/world-clip")
def build_world_clip(weights: str | None = None, random_weights: bool = False) -> Target:
    model, tokenizer = load_world_model("world-clip", weights, random_weights)
    origin = "random" if random_weights else (weights or "neuronatlas:world-clip")
    target = target_from_hf_model(model, preprocess(model.config.vision_config.image_size),
                                  spec="zoo:world-clip", weights=origin)
    target.extras.update(tokenizer=tokenizer, model=model, scorer=WorldClipScorer(model, tokenizer))
    return target


@zoo_entry("world-llava", "small LLaVA-style VLM trained on the procedural world (captions, QA; "
           "?prompt=TEXT records its language model)",
           64, "committed", "neuronatlas/worldmodels/weights/world-llava")
def build_world_llava(weights: str | None = None, random_weights: bool = False) -> Target:
    model, tokenizer = load_world_model("world-llava", weights, random_weights)
    origin = "random" if random_weights else (weights or "neuronatlas:world-llava")
    pre = preprocess(model.config.vision_config.image_size)
    target = target_from_hf_model(model, pre, spec="zoo:world-llava", weights=origin)
    target.extras.update(tokenizer=tokenizer, model=model)
    order = prompt_order(model.config)

    def prompted(prompt: str) -> Target:
        vlm = target_from_llava(model, lambda n, q: prompt_ids(tokenizer, n, q, order), prompt, pre,
                                spec=target.spec, weights=origin)
        vlm.extras.update(tokenizer=tokenizer, model=model)
        return vlm

    target.prompted = prompted
    return target
