"""The one training loop of both world models. What differs between them (how a batch's loss is
made, when and how to validate, what to save along the way) comes in a `Job`; the loop owns the
rest: the learning-rate schedule, the optimiser step, the training log, keeping the checkpoint that
validates best, the periodic resume state, the time budget and interruptions.

Deterministic given the job: the loop itself draws no random numbers, so a run resumed from its
state file continues exactly (same losses, same weights)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..arch.checkpoint import save
from .resume import TrainingState


def lr_at(step: int, total: int, base: float, warmup: int) -> float:
    """Both world models' schedule: linear warm-up, then one cosine from base down to 5% of it."""
    import math

    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return base * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


@dataclass
class Job:
    """One model's training run, as the loop sees it. Optimiser param groups may carry a "scale"
    (their learning rate is the schedule's times it; default 1)."""

    model: torch.nn.Module
    tokenizer: object
    opt: torch.optim.Optimizer
    state: TrainingState
    total: int
    """Steps in the run."""
    lr: float
    warmup: int
    checkpoint_every: int
    """Steps between resume-state saves."""
    loss: Callable[[int], tuple]
    """step -> (loss to minimise, the training-log fields of this step, from `step` on)."""
    validates: Callable[[int], bool]
    """After step `step` (1-based): validate now?"""
    validate: Callable[[], tuple]
    """() -> (validation metrics, score; higher is better, ties keep the later checkpoint)."""
    progress: Callable[[dict], str]
    """A training-log record -> the progress line printed every 25 steps."""
    after_step: Callable[[int], None] = field(default=lambda step: None)
    """Called after each step (1-based), before validation (world-clip saves its tower here)."""


def run(job: Job, out_dir: str | None, t0: float, minutes: float | None = None,
        stop_at: int | None = None, resume: bool = True, log=print) -> tuple[list, int]:
    """Train until job.total steps (or the time budget, or `stop_at`, an interruption that keeps the
    state file). With out_dir: the best-validating checkpoint is saved there (the last one when the
    run never validated). Returns (history, steps done)."""
    model, opt = job.model, job.opt
    params = [p for g in opt.param_groups for p in g["params"]]
    history, best, step = job.state.load(log) if resume else ([], None, 0)
    deadline = t0 + minutes * 60 if minutes else None
    model.train()
    while step < job.total:
        if deadline and time.time() > deadline:
            log(f"  time budget reached at step {step}")
            break
        if stop_at is not None and step >= stop_at:  # an interruption (tests): the state file stays
            break
        for g in opt.param_groups:
            g["lr"] = lr_at(step, job.total, job.lr, job.warmup) * g.get("scale", 1.0)
        loss, fields = job.loss(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        rec = dict(step=step, **fields, t=round(time.time() - t0, 1))
        history.append(rec)
        if step % 25 == 0:
            log(job.progress(rec))
        job.after_step(step)
        if job.validates(step):
            model.eval()
            m, score = job.validate()
            model.train()
            rec["val"] = m
            log(f"  validation step {step}: {m}")
            if out_dir and (best is None or score >= best):
                best = score
                save(model, job.tokenizer, out_dir, extra=dict(step=step, val=m))
        if step % job.checkpoint_every == 0 and step < job.total:
            job.state.save(history, best, step)
    model.eval()
    if out_dir and best is None:
        save(model, job.tokenizer, out_dir, extra=dict(step=step))
    if step >= job.total:
        job.state.finish()
    log(f"  done at step {step} ({time.time() - t0:.0f}s)")
    return history, step
