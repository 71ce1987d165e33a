"""JumpReLU SAE (Rajamanoharan et al. 2024): a learned threshold per feature, an L0 penalty.

The threshold gets its gradient from a straight-through estimate with a rectangle kernel of width
`jumprelu_bandwidth`; it is kept as its log so it stays positive. On disk it is `threshold`
(SAELens's name), not the log.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .base import SparseAutoencoder, register_architecture


def _kernel(u: torch.Tensor) -> torch.Tensor:
    return ((u > -0.5) & (u < 0.5)).to(u.dtype)


class _JumpReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pre, threshold, bandwidth):
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return pre * (pre > threshold)

    @staticmethod
    def backward(ctx, grad):
        pre, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        d_pre = (pre > threshold) * grad
        d_thr = -(threshold / eps) * _kernel((pre - threshold) / eps) * grad
        return d_pre, d_thr.reshape(-1, threshold.shape[-1]).sum(0), None


class _Step(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pre, threshold, bandwidth):
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return (pre > threshold).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad):
        pre, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        d_thr = -(1.0 / eps) * _kernel((pre - threshold) / eps) * grad
        return torch.zeros_like(pre), d_thr.reshape(-1, threshold.shape[-1]).sum(0), None


@register_architecture
class JumpReluSAE(SparseAutoencoder):
    architecture = "jumprelu"

    def __init__(self, cfg, seed: int = 0):
        super().__init__(cfg, seed)
        self.log_threshold = nn.Parameter(
            torch.full((cfg.d_sae,), math.log(cfg.jumprelu_init_threshold)))

    @property
    def threshold(self) -> torch.Tensor:
        return self.log_threshold.exp()

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            return _JumpReLU.apply(pre, self.threshold, self.cfg.jumprelu_bandwidth)
        return pre * (pre > self.threshold)

    def sparsity_loss(self, f: torch.Tensor, pre: torch.Tensor) -> torch.Tensor:
        l0 = _Step.apply(pre, self.threshold, self.cfg.jumprelu_bandwidth).sum(-1).mean()
        return self.cfg.l0_coeff * l0

    def folded_state(self) -> dict[str, torch.Tensor]:
        # the threshold compares pre-activations, which folding the input scale leaves unchanged
        return {**super().folded_state(), "threshold": self.threshold.detach().clone()}

    def load_folded_state(self, state) -> None:
        super().load_folded_state(state)
        with torch.no_grad():
            self.log_threshold.copy_(state["threshold"].to(torch.float32).clamp_min(1e-30).log())
