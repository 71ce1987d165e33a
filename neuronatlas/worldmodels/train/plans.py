"""The training schedules ("plans") of the world models, as data next to the weights they made:
`weights/NAME/plans.json` holds every plan tried for NAME (plain numbers, strings, lists and dicts),
a note on each, and which one trained the committed weights. This module only reads those files and
fills in defaults; a training run writes the full plan it used to OUT/plan.json, next to its
checkpoint, and into the model card and the resume file.

world-clip (train/clip.py): the pools (world-seed offset from TRAIN_WORLD_SEED + seed, size, scene
options) and the phases run one after the other. Each phase draws every batch from its pools in
fixed proportions, trains the supervised heads (weights per head kind) and, when `contrastive`, adds
the CLIP loss with the supervised losses scaled by `sup_weight`. One cosine schedule spans all phases.

world-llava (train/llava.py): steps, batch, learning rate, the starting tower ("warmup": world-clip's
tower after its supervised phases, "final": its final tower), question sampling and the options
below. An option a plan leaves out is off (OPTIONS_OFF), so an earlier plan trains as it did.
"""

from __future__ import annotations

import json
import os

from .. import weights_dir

PLANS_FILE = "plans.json"  # in weights/NAME/: every plan tried, its note, the committed one
PLAN_FILE = "plan.json"  # in a checkpoint directory: the full plan that trained it


def read_plans(name: str) -> tuple[dict, str, dict]:
    """(plans by version, the committed version, notes by version) of world model `name`."""
    with open(os.path.join(weights_dir(name), PLANS_FILE)) as f:
        doc = json.load(f)
    return doc["plans"], doc["committed"], doc.get("notes", {})


CLIP_PLANS, _clip_committed, CLIP_NOTES = read_plans("world-clip")
CLIP_PLAN = CLIP_PLANS[_clip_committed]  # the committed weights' plan (v4)


def resolve_clip_plan(plan: dict | None = None) -> dict:
    """The full plan: CLIP_PLAN with `plan`'s entries replacing its own."""
    return dict(CLIP_PLAN, **(plan or {}))


LLAVA_PLANS, _llava_committed, LLAVA_NOTES = read_plans("world-llava")
LLAVA_PLAN = LLAVA_PLANS[_llava_committed]  # the committed weights' plan (v9)
KIND_WEIGHT = LLAVA_PLAN["kind_weight"]  # question kinds' sampling weights (plans v2 on)
# every option a plan may leave out, switched off (so an earlier plan trains as it did)
OPTIONS_OFF = dict(prompt_order="image-first", features="full", single_steps=0, single_pool=0,
                   early_answer=False, bind_weight=0.0, bind_heads=(), bind_absent=False,
                   bind_readout=0.0, p_caption_only=0.0)


def resolve_llava_plan(plan: dict | None = None) -> dict:
    """The full plan: `plan` (default: the committed LLAVA_PLAN) with the options it leaves out off."""
    return dict(OPTIONS_OFF, **(LLAVA_PLAN if plan is None else plan))


def resolve_plan(name: str, plan: dict | None = None) -> dict:
    return resolve_clip_plan(plan) if name == "world-clip" else resolve_llava_plan(plan)


def write_plan(out_dir: str, plan: dict) -> None:
    """OUT/plan.json: the full plan a checkpoint was trained with."""
    with open(os.path.join(out_dir, PLAN_FILE), "w") as f:
        json.dump(plan, f, indent=1)
        f.write("\n")
