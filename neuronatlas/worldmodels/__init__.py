"""World models trained by us on the procedural world: `zoo:world-clip` (a small transformers
CLIPModel) and `zoo:world-llava` (a small LlavaForConditionalGeneration), with their word-level
tokenizer, training code (`neuronatlas zoo train NAME`), held-out metrics and committed weights.

    from neuronatlas.models import load_target
    target = load_target("zoo:world-clip")          # vision MLPs: vision_model.encoder.layers.N.mlp.fc1
    scorer = target.extras["scorer"]                 # an ImageTextScorer (WorldClipScorer)

Weights live in `neuronatlas/worldmodels/weights/{world-clip,world-llava}/` with a MODEL_CARD.md.
"""

import os

WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")


def weights_dir(name: str) -> str:
    """The committed checkpoint directory of a world model ("world-clip" or "world-llava")."""
    return os.path.join(WEIGHTS_DIR, name)
