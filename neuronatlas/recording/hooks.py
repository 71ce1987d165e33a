"""Capture the outputs of chosen hook points during one forward pass.

The output is reduced (pooled, or cloned) inside the hook itself: later in-place operations
(`relu(inplace=True)` after a BatchNorm, `out += identity` in a ResNet block) would otherwise change
the captured tensor under our feet. Once every chosen point has fired, the rest of the network is
useless for recording, so the capture stops the forward pass early (saves the head and later blocks).
A module called several times in one forward pass (a shared activation) is captured at its first call.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable

import torch

from ..models.inputs import ImageBatch
from ..models.target import HookPoint, Target


class _StopForward(Exception):
    pass


class Capture:
    def __init__(self, target: Target, points: list[HookPoint], stop_early: bool = True,
                 reduce: dict[str, Callable[[torch.Tensor], torch.Tensor]] | None = None):
        """`reduce[name]` maps the raw output to what is kept (default: a copy of it)."""
        self.target, self.points, self.stop_early = target, points, stop_early
        self.reduce = reduce or {}
        self.outputs: dict[str, torch.Tensor] = {}

    @contextmanager
    def attached(self):
        modules = dict(self.target.model.named_modules())
        handles = [modules[p.name].register_forward_hook(self._hook(p.name)) for p in self.points]
        try:
            yield self
        finally:
            for h in handles:
                h.remove()

    def _hook(self, name: str):
        def hook(_module, _inp, out):
            if name in self.outputs:  # a module called twice: keep its first output
                return
            out = out[0] if isinstance(out, (tuple, list)) else out
            reduce = self.reduce.get(name)
            self.outputs[name] = reduce(out.detach()) if reduce else out.detach().clone()
            if self.stop_early and len(self.outputs) == len(self.points):
                raise _StopForward
        return hook

    @torch.no_grad()
    def run(self, batch: ImageBatch | torch.Tensor, probe=None, indices=None) -> dict[str, torch.Tensor]:
        """Forward one batch (`target.make_batch(...)`; or pixels, with the probe and the indices they
        come from, made into the target's batch here); return {point name: reduced output}."""
        if isinstance(batch, torch.Tensor):
            batch = self.target.make_batch(batch, indices, probe)
        self.outputs = {}
        try:
            self.target.run(batch)
        except _StopForward:
            pass
        missing = [p.name for p in self.points if p.name not in self.outputs]
        if missing:
            raise RuntimeError(f"hook points never ran in the forward pass: {missing}")
        return self.outputs
