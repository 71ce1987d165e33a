"""Sparse autoencoders on a model's activations: train them, measure them, make their features units.

    sae = na.sae.train("timm:vit_tiny_patch16_224", layer="blocks.5.mlp.fc1", data="world:n=256",
                       out="saes/b5")
    f = sae.encode(acts)  # (rows, d_sae)

Architectures (TopK default, ReLU + L1, JumpReLU, BatchTopK) are one file each behind
`SparseAutoencoder`; files are SAELens's format (cfg.json + sae_weights.safetensors).
"""

from .architectures import build_sae
from .base import ARCHITECTURES, SparseAutoencoder, register_architecture
from .config import SAEConfig, TrainConfig
from .format import load_sae, save_sae
from . import basis  # noqa: F401,E402  (registers the "sae" encoder kind for runs recorded with one)

__all__ = ["ARCHITECTURES", "SAEConfig", "SparseAutoencoder", "TrainConfig", "build_sae",
           "load_sae", "register_architecture", "save_sae"]
