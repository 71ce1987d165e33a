"""TopK SAE (Gao et al. 2024): keep the k largest pre-activations of each token, ReLU them.

The auxiliary loss (AuxK) lets dead features (those that have not fired for a while) explain the
part of the input the live ones missed, so they come back instead of staying dead.
"""

from __future__ import annotations

import torch

from .base import SparseAutoencoder, register_architecture


def keep_topk(pre: torch.Tensor, k: int) -> torch.Tensor:
    values, indices = pre.topk(k, dim=-1, sorted=False)
    return torch.zeros_like(pre).scatter(-1, indices, values.relu())


def auxk_loss(sae: SparseAutoencoder, xs, recon, pre, dead) -> torch.Tensor:
    n_dead = int(dead.sum())
    if n_dead == 0 or sae.cfg.aux_coeff == 0:
        return xs.new_zeros(())
    k_aux = min(sae.cfg.n_aux, n_dead)
    residual = (xs - recon).detach()
    f_aux = keep_topk(pre.masked_fill(~dead, float("-inf")), k_aux)
    aux_recon = f_aux @ sae.W_dec
    weight = sae.cfg.aux_coeff * min(n_dead / k_aux, 1.0)
    return weight * (aux_recon - residual).pow(2).sum(-1).mean()


@register_architecture
class TopKSAE(SparseAutoencoder):
    architecture = "topk"

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        return keep_topk(pre, self.cfg.k)

    def aux_loss(self, xs, recon, pre, dead) -> torch.Tensor:
        return auxk_loss(self, xs, recon, pre, dead)
