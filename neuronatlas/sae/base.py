"""The one base class of every SAE architecture, and the registry that maps names to them.

Conventions are SAELens's (so its files load without conversion): W_enc [d_in, d_sae], W_dec
[d_sae, d_in] (one decoder direction per row, kept at unit norm while training), b_enc [d_sae],
b_dec [d_in] subtracted from the input before encoding. An input scale `scale` (a buffer, stored with
the weights) brings activations to mean norm sqrt(d_in) so one learning rate fits every layer; the
SAE works in scaled space and `decode` maps back. An architecture only says how pre-activations
become features (`activate`) and what sparsity costs (`sparsity_loss`).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from .config import SAEConfig

ARCHITECTURES: dict[str, type["SparseAutoencoder"]] = {}


def register_architecture(cls: type["SparseAutoencoder"]) -> type["SparseAutoencoder"]:
    """Class decorator: make `cls.architecture` buildable by name (refuses a second one)."""
    name = cls.architecture
    if name in ARCHITECTURES:
        raise ValueError(f"SAE architecture '{name}' is already registered by "
                         f"{ARCHITECTURES[name].__module__}")
    ARCHITECTURES[name] = cls
    return cls


class SparseAutoencoder(nn.Module):
    architecture: ClassVar[str] = ""

    def __init__(self, cfg: SAEConfig, seed: int = 0):
        super().__init__()
        self.cfg = cfg
        gen = torch.Generator().manual_seed(seed)
        w_dec = torch.randn(cfg.d_sae, cfg.d_in, generator=gen)
        w_dec /= w_dec.norm(dim=1, keepdim=True)
        # tied initialisation (encoder = decoder transposed): fewer dead features early (Gao et al.)
        self.W_dec = nn.Parameter(w_dec)
        self.W_enc = nn.Parameter(w_dec.T.clone())
        self.b_enc = nn.Parameter(torch.zeros(cfg.d_sae))
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_in))
        self.register_buffer("scale", torch.tensor(1.0))

    # -- inference ----------------------------------------------------------------------------
    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        """Raw activations (.., d_in) -> pre-activations (.., d_sae)."""
        return (x * self.scale - self.b_dec) @ self.W_enc + self.b_enc

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.activate(self.pre_acts(x))

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        """Features -> reconstruction in the units of the raw activations."""
        return (f @ self.W_dec + self.b_dec) / self.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    @property
    def n_features(self) -> int:
        return self.cfg.d_sae

    # -- training -----------------------------------------------------------------------------
    def sparsity_loss(self, f: torch.Tensor, pre: torch.Tensor) -> torch.Tensor:
        return f.new_zeros(())

    def aux_loss(self, xs, recon, pre, dead) -> torch.Tensor:
        return xs.new_zeros(())

    def training_loss(self, x: torch.Tensor, dead: torch.Tensor | None = None):
        """Loss on a batch of raw activations; `dead` marks features that have stopped firing."""
        xs = x * self.scale
        pre = (xs - self.b_dec) @ self.W_enc + self.b_enc
        f = self.activate(pre)
        recon = f @ self.W_dec + self.b_dec
        mse = (recon - xs).pow(2).sum(-1).mean()
        sparsity = self.sparsity_loss(f, pre)
        aux = self.aux_loss(xs, recon, pre, dead) if dead is not None else xs.new_zeros(())
        fired = (f > 0)
        info = {"mse": mse.detach(), "l0": fired.sum(-1).float().mean(), "fired": fired.any(0),
                "aux": aux.detach(), "sparsity": sparsity.detach()}
        return mse + sparsity + aux, info

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        self.W_dec /= self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12)

    @torch.no_grad()
    def remove_parallel_gradient(self) -> None:
        """Drop the part of W_dec's gradient along its own rows: the norm step would undo it."""
        if self.W_dec.grad is None:
            return
        w = self.W_dec / self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12)
        self.W_dec.grad -= (self.W_dec.grad * w).sum(1, keepdim=True) * w

    # -- storage ------------------------------------------------------------------------------
    def folded_state(self) -> dict[str, torch.Tensor]:
        """Weights that act on raw activations (scale folded in), SAELens tensor names."""
        s = float(self.scale)
        return {"W_enc": (self.W_enc * s).detach().clone(), "b_enc": self.b_enc.detach().clone(),
                "W_dec": (self.W_dec / s).detach().clone(), "b_dec": (self.b_dec / s).detach().clone()}

    def load_folded_state(self, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
                getattr(self, name).copy_(state[name].to(torch.float32))
            self.scale.fill_(1.0)
