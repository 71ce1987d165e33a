"""ReLU SAE with an L1 penalty (Bricken et al. 2023; SAELens "standard")."""

from __future__ import annotations

import torch

from .base import SparseAutoencoder, register_architecture


@register_architecture
class ReluSAE(SparseAutoencoder):
    architecture = "relu"

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        return pre.relu()

    def sparsity_loss(self, f: torch.Tensor, pre: torch.Tensor) -> torch.Tensor:
        # weighted by the decoder norms, so shrinking a decoder row cannot buy a smaller penalty
        return self.cfg.l1_coeff * (f * self.W_dec.norm(dim=1)).sum(-1).mean()
