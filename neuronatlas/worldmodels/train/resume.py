"""Exact resume of a world-model training run: everything that decides the next step (weights, heads,
optimiser, data-order generators, torch's RNG, history, best score, step) in one file, replaced
atomically, removed when training finishes."""

from __future__ import annotations

import json
import os
import random

import torch

from ...errors import UserError

RESUME_FILE = "resume.pt"  # written every checkpoint_every steps, removed at the end


class TrainingState:
    def __init__(self, out_dir: str | None, model, heads, opt, gen: torch.Generator,
                 rng: random.Random, plan: dict | None = None):
        self.path = os.path.join(out_dir, RESUME_FILE) if out_dir else None
        if out_dir:
            os.makedirs(out_dir, exist_ok=True)
        self.model, self.heads, self.opt, self.gen, self.rng = model, heads, opt, gen, rng
        # a resume file only continues the run that wrote it: same plan, same seed-driven data
        self.plan = json.dumps(plan, sort_keys=True, default=str) if plan is not None else None

    def load(self, log=print):
        """(history, best, step) of the saved run, or a fresh start when there is none."""
        if not (self.path and os.path.isfile(self.path)):
            return [], None, 0
        st = torch.load(self.path, weights_only=False)
        if st.get("plan") != self.plan:
            raise UserError(f"{self.path} is the state of a run with another plan; resume it with that "
                            f"plan, or delete the file (or choose another --out) to start this one")
        self.model.load_state_dict(st["model"])
        self.heads.load_state_dict(st["heads"])
        self.opt.load_state_dict(st["opt"])
        self.gen.set_state(st["gen"])
        self.rng.setstate(st["rng"])
        torch.set_rng_state(st["torch_rng"])
        log(f"  resumed from {self.path} at step {st['step']}")
        return st["history"], st["best"], st["step"]

    def save(self, history, best, step: int) -> None:
        if not self.path:
            return
        torch.save(dict(model=self.model.state_dict(), heads=self.heads.state_dict(),
                        opt=self.opt.state_dict(), gen=self.gen.get_state(), rng=self.rng.getstate(),
                        torch_rng=torch.get_rng_state(), history=history, best=best, step=step,
                        plan=self.plan),
                   self.path + ".tmp")
        os.replace(self.path + ".tmp", self.path)

    def finish(self) -> None:
        if self.path and os.path.isfile(self.path):
            os.remove(self.path)
