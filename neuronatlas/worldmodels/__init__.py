"""World models trained by us on the procedural world: `zoo:world-clip` (a small transformers
CLIPModel) and `zoo:world-llava` (a small LlavaForConditionalGeneration).

    from neuronatlas.models import load_target
    target = load_target("zoo:world-clip")          # vision MLPs: vision_model.encoder.layers.N.mlp.fc1
    scorer = target.extras["scorer"]                 # an ImageTextScorer (backends.world_clip)

- arch/: what inference needs (configs, build, tokenizer, encoders / greedy answers, checkpoint
  files). A low layer, right above `data`: the zoo, backends, lens and vlm use it.
- zoo.py: the `zoo:world-clip` / `zoo:world-llava` factories (Targets with their scorer).
- train/: plans as data (weights/NAME/plans.json), one training loop, held-out metrics, model cards, `neuronatlas zoo
  train|eval NAME`. The top layer; inference never imports it.

Weights live in `neuronatlas/worldmodels/weights/{world-clip,world-llava}/` with a MODEL_CARD.md.
This file imports nothing, so any layer may read the paths.
"""

import os

NAMES = ("world-clip", "world-llava")
WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")


def weights_dir(name: str) -> str:
    """The committed checkpoint directory of a world model ("world-clip" or "world-llava")."""
    return os.path.join(WEIGHTS_DIR, name)
