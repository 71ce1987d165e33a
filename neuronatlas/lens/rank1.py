"""Rank-1 approximation and significance of second-order effects (the paper's `compute_pcas`).

Per neuron: centre its effects by their mean over images, take the k images with the largest
centred norm (k = 100 by default, about 2% of the reference's 5k training images), and keep the first
right-singular vector of those k centred effects, oriented so that most of their projections on it
are positive. The k-th largest centred norm is the neuron's significance threshold: an image's effect
is significant when its centred norm reaches it (on the images it was computed on, exactly the top
k; the reference used '>' against the k-th norm, i.e. k - 1 images).
"""

from __future__ import annotations

import numpy as np
import torch


@torch.no_grad()
def first_components(top_coef_NkK: torch.Tensor, head_vectors_KND: torch.Tensor,
                     block: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """(pc (N, D) unit vectors, explained variance ratio (N,)) of the rows X_n = top_coef[n] @ u_n,
    the centred top-k effects of each neuron (coefficients already centred)."""
    N = top_coef_NkK.shape[0]
    u = head_vectors_KND.to(torch.float64)
    pcs, ratios = [], []
    for s in range(0, N, block):
        x = torch.einsum("nik,knd->nid", top_coef_NkK[s:s + block].to(torch.float64), u[:, s:s + block])
        pc, ratio = pcs_of(x)
        pcs.append(pc)
        ratios.append(ratio)
    return torch.cat(pcs), torch.cat(ratios)


def pcs_of(x_nkD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """First right-singular vector (no further centring) and its share of the squared singular
    values, per neuron; the sign makes the majority of the rows' projections positive."""
    _, s, vh = torch.linalg.svd(x_nkD, full_matrices=False)
    pc = vh[:, 0]
    proj = torch.einsum("nid,nd->ni", x_nkD, pc)
    flip = (proj > 0).sum(1) < (proj < 0).sum(1)
    pc = torch.where(flip[:, None], -pc, pc)
    total = (s ** 2).sum(1)
    ratio = torch.where(total > 0, s[:, 0] ** 2 / total.clamp(min=1e-300), torch.zeros_like(total))
    return pc, ratio


def significance_threshold(top_norms_Nk: np.ndarray) -> np.ndarray:
    """(N,) the k-th largest centred effect norm of each neuron (top_norms sorted descending)."""
    return np.asarray(top_norms_Nk)[:, -1]


def significant(norms_BN, threshold_N):
    """(B, N) bool: centred effect norm >= the neuron's threshold (works on numpy or torch)."""
    if isinstance(norms_BN, torch.Tensor):
        return norms_BN >= torch.as_tensor(threshold_N, dtype=norms_BN.dtype, device=norms_BN.device)
    return np.asarray(norms_BN) >= np.asarray(threshold_N)[None, :]
