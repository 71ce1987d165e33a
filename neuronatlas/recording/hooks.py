"""Capture the outputs of chosen hook points during one forward pass.

Once every chosen point has fired, the rest of the network is useless for recording, so the capture
stops the forward pass early (saves the head and later blocks).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from ..models.target import HookPoint, Target


class _StopForward(Exception):
    pass


class Capture:
    def __init__(self, target: Target, points: list[HookPoint], stop_early: bool = True):
        self.target, self.points, self.stop_early = target, points, stop_early
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
            self.outputs[name] = out.detach()
            if self.stop_early and len(self.outputs) == len(self.points):
                raise _StopForward
        return hook

    @torch.no_grad()
    def run(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Forward `pixels`; return {point name: raw output}."""
        self.outputs = {}
        try:
            self.target.forward(pixels)
        except _StopForward:
            pass
        missing = [p.name for p in self.points if p.name not in self.outputs]
        if missing:
            raise RuntimeError(f"hook points never ran in the forward pass: {missing}")
        return self.outputs
