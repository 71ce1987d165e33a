"""Training entry points: `train(name, out_dir, minutes=None, seed=0)`, `evaluate(name)` and the
commands `train_cmd` / `eval_cmd` (`neuronatlas zoo train NAME`, `neuronatlas zoo eval NAME`), also
as the `zoo_app` typer sub-app.

Training is deterministic given the seed (seeded torch / random, fixed data order, fixed step
counts, deterministic algorithms, 2 threads); `--minutes` only caps the wall time as a safety stop
(a run stopped by it is no longer the reference run). Writes model.safetensors, config.json,
tokenizer.json, metrics.json, train_log.jsonl and MODEL_CARD.md into the output directory.
"""

from __future__ import annotations

import json
import os
import random
import time
from typing import Optional

import typer

from .. import NAMES


def _setup(seed: int, threads: int = 2):
    import torch

    torch.manual_seed(seed)
    random.seed(seed)
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    try:
        torch.use_deterministic_algorithms(True, warn_only=True)
    except Exception:  # pragma: no cover
        pass


def train(name: str, out_dir: Optional[str] = None, minutes: Optional[float] = None, seed: int = 0,
          log=print, threads: int = 2, **kwargs) -> dict:
    """Train a world model and write its checkpoint, metrics and model card to out_dir
    (default: the package's committed weights directory). Returns the held-out metrics."""
    from .. import weights_dir

    if name not in NAMES:
        raise typer.BadParameter(f"unknown world model {name!r}; choose one of {', '.join(NAMES)}")
    out_dir = out_dir or weights_dir(name)
    os.makedirs(out_dir, exist_ok=True)
    _setup(seed, threads)
    t0 = time.time()
    if name == "world-clip":
        from .clip import train_clip

        model, tokenizer, history = train_clip(out_dir, seed=seed, minutes=minutes, log=log, **kwargs)
    else:
        from .llava import train_llava

        model, tokenizer, history = train_llava(out_dir, seed=seed, minutes=minutes, log=log, **kwargs)
    wall = time.time() - t0
    return finish(name, out_dir, history, wall, seed, threads, kwargs.get("plan"), log)


def finish(name: str, out_dir: str, history: list, wall: float, seed: int, threads: int,
           plan: Optional[dict] = None, log=print) -> dict:
    """After training: write train_log.jsonl, evaluate the saved checkpoint on the held-out test
    world, write metrics.json and MODEL_CARD.md. Returns the metrics."""
    with open(os.path.join(out_dir, "train_log.jsonl"), "w") as f:
        for rec in history:
            f.write(json.dumps(rec) + "\n")
    log(f"trained {name} in {wall / 60:.1f} min; evaluating the saved checkpoint on held-out data")
    metrics = evaluate(name, out_dir)
    metrics.update(train_seconds=round(wall), steps=history[-1]["step"] if history else 0, seed=seed)
    with open(os.path.join(out_dir, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=1)
    log(json.dumps(metrics))
    from .card import write_card
    from .plans import resolve_plan, write_plan

    full = resolve_plan(name, plan)
    write_plan(out_dir, full)  # the plan that made these weights, next to them
    write_card(name, out_dir, metrics, full, threads)
    return metrics


def evaluate(name: str, weights: Optional[str] = None, n: Optional[int] = None) -> dict:
    """Held-out metrics of a saved world model (see metrics.py for the protocol)."""
    import torch

    from ..arch.checkpoint import load_world_model
    from . import metrics as M

    torch.set_num_threads(2)
    model, tokenizer = load_world_model(name, weights)
    size = M.image_size(model)
    if name == "world-clip":
        n = n or 1000
        pool = M.clip_eval_pool(n, size=size)
        out = M.clip_zero_shot(model, tokenizer, pool)
        out["by"] = M.clip_breakdown(model, tokenizer, pool)
    else:
        n = n or 300
        out = M.llava_qa(model, tokenizer, M.llava_eval_pool(n, size=size))
    return out


def train_cmd(name: str = typer.Argument(..., help="world-clip or world-llava"),
              out: Optional[str] = typer.Option(None, "--out", help="Output directory (default: the "
                                                "package's weights/NAME, overwriting the committed one)."),
              minutes: Optional[float] = typer.Option(None, "--minutes", help="Wall-time cap (safety stop)."),
              seed: int = typer.Option(0, "--seed", help="Training seed."),
              threads: int = typer.Option(2, "--threads", help="torch threads (1 on a busy machine)."),
              plan: Optional[str] = typer.Option(None, "--plan", help="Schedule: world-clip v1 | v3 | v4, "
                                                 "world-llava v1 - v9 (default: the committed one; "
                                                 "every plan is in weights/NAME/plans.json)."),
              clip_weights: Optional[str] = typer.Option(None, "--clip-weights", help="world-llava: "
                                                         "the world-clip directory whose warm-up tower "
                                                         "(warmup_vision.safetensors) it starts from "
                                                         "(default: the committed world-clip).")):
    """Train a world model from scratch (deterministic given --seed; ~30 min on 2 CPU cores)."""
    kwargs = {}
    if plan:
        from .plans import CLIP_PLANS, LLAVA_PLANS

        plans = CLIP_PLANS if name == "world-clip" else LLAVA_PLANS
        if plan not in plans:
            raise typer.BadParameter(f"unknown plan {plan!r}; choose one of {', '.join(plans)}")
        kwargs["plan"] = plans[plan]
    if clip_weights:
        if name != "world-llava":
            raise typer.BadParameter("--clip-weights is for world-llava")
        kwargs["clip_weights"] = clip_weights
    train(name, out, minutes=minutes, seed=seed, threads=threads, **kwargs)


def eval_cmd(name: str = typer.Argument(..., help="world-clip or world-llava"),
             weights: Optional[str] = typer.Option(None, "--weights", help="Checkpoint directory "
                                                   "(default: the committed weights)."),
             n: Optional[int] = typer.Option(None, "--n", help="Held-out images (default 1000 for "
                                             "world-clip, 300 scenes for world-llava).")):
    """Held-out metrics of a world model (the protocol of its model card)."""
    if name not in NAMES:
        raise typer.BadParameter(f"unknown world model {name!r}; choose one of {', '.join(NAMES)}")
    typer.echo(json.dumps(evaluate(name, weights, n)))


zoo_app = typer.Typer(add_completion=False, no_args_is_help=True,
                      help="Train and evaluate the world models (zoo:world-clip, zoo:world-llava).")
zoo_app.command("train")(train_cmd)
zoo_app.command("eval")(eval_cmd)
