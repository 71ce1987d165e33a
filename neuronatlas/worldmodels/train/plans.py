"""The training schedules ("plans") of the world models, as data: plain dicts of numbers, strings and
lists, so a plan prints, compares and is written into the model card and the resume file as it is.

world-clip (train/clip.py): the pools (world-seed offset from TRAIN_WORLD_SEED + seed, size, scene
options) and the phases run one after the other. Each phase draws every batch from its pools in
fixed proportions, trains the supervised heads (weights per head kind) and, when `contrastive`, adds
the CLIP loss with the supervised losses scaled by `sup_weight`. One cosine schedule spans all phases.

world-llava (train/llava.py): steps, batch, learning rate, the starting tower ("warmup": world-clip's
tower after its supervised phases, "final": its final tower), question sampling and the options
below. An option a plan leaves out is off (OPTIONS_OFF), so an earlier plan trains as it did.

The committed weights were trained with CLIP_PLAN (v4) and LLAVA_PLAN (v9); their model cards
(weights/NAME/MODEL_CARD.md) list every plan tried and its held-out numbers.
"""

from __future__ import annotations

# -- world-clip ------------------------------------------------------------------------------------
_SLOT_PATCH = dict(slot=1.0, patch=1.0, present=0.0)
_ALL_HEADS = dict(slot=1.0, patch=1.0, present=1.0)
CLIP_V1 = dict(  # the first schedule: 32 px / patch 4, solid objects first
    image_size=32, patch=4, batch=128, lr=1e-3, warmup=150, weight_decay=0.05,
    pools=dict(a1=dict(offset=0, n=12000, world=dict(n_objects=[1, 1], textures=["solid"],
                                                       sizes=["medium", "large"],
                                                       backgrounds=["gray", "gradient"])),
               full=dict(offset=0, n=24000, world=None),
               single=dict(offset=500, n=6000, world=dict(n_objects=[1, 1]))),
    phases=[dict(name="A1", steps=350, mix=dict(a1=1.0), heads=_SLOT_PATCH),
            dict(name="A2", steps=450, mix=dict(full=1.0), heads=_SLOT_PATCH),
            dict(name="B", steps=600, mix=dict(full=0.75, single=0.25), heads=_SLOT_PATCH,
                 contrastive=True, sup_weight=0.5)],
    eval_n=300, eval_every=200, checkpoint_every=100,
)
CLIP_V3 = dict(  # tried: 48 px / patch 6, batch 64, lr 2e-3, half single objects, all heads
    image_size=48, patch=6, batch=64, lr=2e-3, warmup=150, weight_decay=0.05,
    pools=dict(single=dict(offset=500, n=12000, world=dict(n_objects=[1, 1])),
               full=dict(offset=0, n=24000, world=None)),
    phases=[dict(name="A", steps=900, mix=dict(single=0.5, full=0.5), heads=_ALL_HEADS),
            dict(name="B", steps=500, mix=dict(single=0.5, full=0.5), heads=_ALL_HEADS,
                 contrastive=True, sup_weight=0.5)],
    eval_n=300, eval_every=100, checkpoint_every=100,
)
CLIP_V4 = dict(  # (arch.clip.COMMITTED_SIZE / _PATCH) 64 px / patch 8, a long supervised phase after an easy start, then contrastive
    image_size=64, patch=8, batch=128, lr=1.5e-3, warmup=200, weight_decay=0.05,
    pools=dict(easy=dict(offset=1, n=10000, world=dict(n_objects=[1, 1], textures=["solid"],
                                                        sizes=["medium", "large"])),
               single=dict(offset=500, n=30000, world=dict(n_objects=[1, 1])),
               full=dict(offset=0, n=24000, world=None)),
    phases=[dict(name="E", steps=400, mix=dict(easy=1.0), heads=_ALL_HEADS),
            dict(name="A", steps=2400, mix=dict(single=0.6, full=0.4), heads=_ALL_HEADS),
            dict(name="B", steps=1000, mix=dict(single=0.5, full=0.5), heads=_ALL_HEADS,
                 contrastive=True, sup_weight=0.5)],
    eval_n=300, eval_every=200, checkpoint_every=100,
)
CLIP_PLANS = {"v1": CLIP_V1, "v3": CLIP_V3, "v4": CLIP_V4}
CLIP_PLAN = CLIP_V4  # the committed weights; v1 (38.1% zero-shot shape) and v3 (28.5%) were tried before


def resolve_clip_plan(plan: dict | None = None) -> dict:
    """The full plan: CLIP_PLAN with `plan`'s entries replacing its own."""
    return dict(CLIP_PLAN, **(plan or {}))


# -- world-llava -----------------------------------------------------------------------------------
KIND_WEIGHT = {"presence": 4.0, "color": 3.0, "shape": 3.0, "texture": 0.7, "size": 0.5,
               "position": 1.0, "count": 0.3}
LLAVA_V1 = dict(  # the first schedule: from world-clip's final tower, answer loss only
    steps=1300, batch=32, lr=1e-3, warmup=100, vision_lr_scale=0.25, pool=24000, k=4, p_caption=0.25,
    sup_weight=0.0, kind_weight=dict(presence=3.0, color=2.0, shape=3.0, texture=1.0, size=0.7,
                                     position=1.0, count=0.5),
    eval_n=100, eval_every=250, checkpoint_every=100, tower="final")
LLAVA_V2 = dict(  # from world-clip v3's supervised tower, 8 questions per image, auxiliary scene heads
    steps=500, batch=32, lr=1.5e-3, warmup=60, vision_lr_scale=0.5, pool=12000, k=8, p_caption=0.1,
    sup_weight=0.5, kind_weight=KIND_WEIGHT, eval_n=80, eval_every=125, checkpoint_every=50,
    tower="warmup")
LLAVA_V3 = dict(  # world-clip v4's supervised 64 px tower, frozen; one-object scenes first
    steps=1400, batch=32, lr=1.5e-3, warmup=100, vision_lr_scale=0.0, pool=24000, k=3, p_caption=0.1,
    single_steps=300, single_pool=8000, sup_weight=0.0, kind_weight=KIND_WEIGHT, eval_n=100,
    eval_every=200, checkpoint_every=100, tower="warmup", prompt_order="image-first")
LLAVA_V4 = dict(  # v3 with world-clip's final tower (frozen), 8 questions per image, more steps
    LLAVA_V3, steps=2200, lr=2e-3, k=8, tower="final", eval_every=275)
LLAVA_V5 = dict(  # v4 with the caption as a last turn for most images (tried: stopped at step ~600,
    # validation colour 19.7%: the answers drift towards caption words)
    LLAVA_V4, p_caption=0.6)
LLAVA_V6 = dict(  # v4 with early-answer labels on the question's object-naming words (tried: stopped
    # at step ~800 of 1500, validation presence 50.2 / colour 54.8 / shape 53.3 at step 750)
    LLAVA_V4, steps=1500, eval_every=250, early_answer=True)
LLAVA_V7 = dict(  # v3 plus binding supervision (binding.py): at each question's "?", head 0 of layer 1
    # attends to the named object's patches ("no" presence questions: to <bos>). Validation presence /
    # colour / shape at step 1400 of the variants tried with v3's schedule: query at the object-naming
    # word, layer 0: 55.2 / 84.0 / 53.3; layer 1: 59.1 / 96.8 / 53.9; + "no" -> <bos>: 67.0 / 88.8 / 52.8;
    # the same without CLS among the image features: 66.3 / 85.1 / 48.9
    LLAVA_V3, bind_weight=1.0, bind_heads=[("answer", 1, 0)], bind_absent=True)
LLAVA_V8 = dict(  # v7 plus readout heads for the named object's shape and colour at the "?" after
    # layer 1 (the binding head must carry shape, not only colour), 2000 steps
    LLAVA_V7, steps=2000, bind_readout=1.0)
LLAVA_V9 = dict(  # v8 with a fifth of the images captioned alone (the caption right after the image,
    # as `generate_caption` asks it; v8 only ever saw it after three questions) instead of 10% last
    LLAVA_V8, p_caption=0.0, p_caption_only=0.2)
LLAVA_PLANS = {"v1": LLAVA_V1, "v2": LLAVA_V2, "v3": LLAVA_V3, "v4": LLAVA_V4, "v5": LLAVA_V5,
               "v6": LLAVA_V6, "v7": LLAVA_V7, "v8": LLAVA_V8, "v9": LLAVA_V9}
LLAVA_PLAN = LLAVA_V9  # the committed weights; v1-v8 were tried (see the model card)
# every option a plan may leave out, switched off (so an earlier plan trains as it did)
OPTIONS_OFF = dict(prompt_order="image-first", features="full", single_steps=0, single_pool=0,
                   early_answer=False, bind_weight=0.0, bind_heads=(), bind_absent=False,
                   bind_readout=0.0, p_caption_only=0.0)


def resolve_llava_plan(plan: dict | None = None) -> dict:
    """The full plan: `plan` (default: the committed LLAVA_PLAN) with the options it leaves out off."""
    return dict(OPTIONS_OFF, **(LLAVA_PLAN if plan is None else plan))
