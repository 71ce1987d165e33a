"""The procedural world: scenes of 1-3 shapes with full ground truth (masks, captions, QA).

    from neuronatlas.data.world import CONCEPTS, sample_scene, render, caption, questions
    scene = sample_scene(seed=0, index=42)          # a frozen Scene, a pure function of (seed, index)
    image, masks = render(scene, 64)                 # PIL RGB + {concept id | object:K: HxW bool}
    caption(scene), questions(scene)                 # "a small red solid circle on the left on ...", [QA]
    open_probe("world:n=10000,size=224,seed=0")      # as a probe set (WorldProbeSet)

See docs/world.md.
"""

from .render import render, render_image, render_labels
from .scene import Scene, SceneOptions, WorldObject, sample_scene
from .source import Annotation, WorldProbeSet, open_source
from .text import QA, all_words, caption, caption_concepts, parse_caption, questions, tokenize
from .vocab import CATEGORIES, CONCEPTS, Concept, Vocabulary

__all__ = [
    "CATEGORIES", "CONCEPTS", "Concept", "Vocabulary", "Scene", "SceneOptions", "WorldObject",
    "sample_scene", "render", "render_image", "render_labels", "caption", "caption_concepts",
    "parse_caption", "questions", "QA", "tokenize", "all_words", "Annotation", "WorldProbeSet",
    "open_source",
]
