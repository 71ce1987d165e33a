"""The built-in architectures (one small file each, registering itself with
`base.register_architecture`) and `build_sae`, which builds one by name. Kept apart from base.py so
that base never imports its own subclasses (no import cycle)."""

from __future__ import annotations

from ..errors import UserError
from . import batchtopk, jumprelu, relu, topk  # noqa: F401  (each registers itself)
from .base import ARCHITECTURES, SparseAutoencoder
from .config import SAEConfig


def build_sae(cfg: SAEConfig, seed: int = 0) -> SparseAutoencoder:
    """A fresh SAE of `cfg.architecture` (one of ARCHITECTURES), seeded."""
    if cfg.architecture not in ARCHITECTURES:
        raise UserError(f"unknown SAE architecture '{cfg.architecture}': known are "
                        f"{', '.join(sorted(ARCHITECTURES))}")
    return ARCHITECTURES[cfg.architecture](cfg, seed=seed)
