"""BatchTopK SAE (Bussmann et al. 2024): the k x batch largest activations over the whole batch.

Training picks features per batch, so a token may use more or fewer than k. At inference the
batch is gone: a single threshold, the running mean of the smallest activation kept in training,
decides (a JumpReLU with one shared threshold; SAELens saves it that way, and so do we).
"""

from __future__ import annotations

import torch

from .base import SparseAutoencoder, register_architecture
from .topk import auxk_loss

THRESHOLD_LR = 0.01  # weight of each batch's minimum in the running threshold


@register_architecture
class BatchTopKSAE(SparseAutoencoder):
    architecture = "batchtopk"

    def __init__(self, cfg, seed: int = 0):
        super().__init__(cfg, seed)
        self.register_buffer("threshold", torch.tensor(0.0))

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return pre * (pre > self.threshold)
        acts = pre.relu()
        flat = acts.reshape(-1)
        n_keep = min(self.cfg.k * acts.reshape(-1, acts.shape[-1]).shape[0], flat.numel())
        values, indices = flat.topk(n_keep, sorted=False)
        out = torch.zeros_like(flat).scatter(0, indices, values).reshape(acts.shape)
        positive = values[values > 0]
        if positive.numel():
            with torch.no_grad():
                self.threshold.mul_(1 - THRESHOLD_LR).add_(THRESHOLD_LR * positive.min())
        return out

    def aux_loss(self, xs, recon, pre, dead) -> torch.Tensor:
        return auxk_loss(self, xs, recon, pre, dead)

    def folded_state(self) -> dict[str, torch.Tensor]:
        return {**super().folded_state(),
                "threshold": self.threshold.detach().expand(self.cfg.d_sae).clone()}

    def load_folded_state(self, state) -> None:
        super().load_folded_state(state)
        with torch.no_grad():
            self.threshold.fill_(float(state["threshold"].reshape(-1)[0]))
