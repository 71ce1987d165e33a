"""An SAE as a unit basis: record a layer's SAE features as its units (ids LAYER:INDEX@NAME).

`SAEEncoder` fulfils recording/basis.py's encoder contract with a trained dictionary: the features of
every position of the hook output are `sae.encode(x)` (the input scale folded in, as saved), so
record, describe, evaluate, the study export and the atlas see features exactly as they see neurons.
The run stores the SAE's arrays in RUN/basis/LAYER.npz and its config in run.json; importing
neuronatlas.sae registers the kind, so replays rebuild it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..recording.basis import check_name, encoder_kind
from .architectures import build_sae
from .base import SparseAutoencoder
from .config import SAEConfig


@encoder_kind("sae")
class SAEEncoder:
    def __init__(self, sae: SparseAutoencoder, name: str = "sae"):
        self.sae = sae.eval()
        self.name = check_name(name)
        self.n_features, self.d_in = sae.cfg.d_sae, sae.cfg.d_in

    @torch.no_grad()
    def encode(self, acts: torch.Tensor) -> torch.Tensor:
        sae = self.sae.to(acts.device)
        return sae.encode(acts.float())

    def to_json(self) -> dict:
        return {"kind": "sae", "name": self.name, "n_features": self.n_features, "d_in": self.d_in,
                "sae_config": self.sae.cfg.to_json()}

    def state(self) -> dict[str, np.ndarray]:
        return {k: v.cpu().numpy() for k, v in self.sae.folded_state().items()}

    @classmethod
    def from_state(cls, config: dict, state: dict[str, np.ndarray]) -> "SAEEncoder":
        sae = build_sae(SAEConfig.from_json(config["sae_config"]))
        sae.load_folded_state({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()})
        return cls(sae, config["name"])


def sae_encoder(folder: str | Path, name: str = "sae") -> SAEEncoder:
    """The encoder of an SAE folder (ours or SAELens's) or hub id."""
    from .format import load_sae

    return SAEEncoder(load_sae(folder), name)


def sae_layer(folder: str | Path) -> str | None:
    """The hook point an SAE folder was trained on (neuronatlas.json, else cfg.json's hook_name)."""
    import json

    folder = Path(folder)
    for file, keys in (("neuronatlas.json", ("layer",)), ("cfg.json", ("metadata", "hook_name"))):
        try:
            d = json.loads((folder / file).read_text())
        except (OSError, ValueError):
            continue
        for key in keys:
            d = d.get(key) if isinstance(d, dict) else None
        if d:
            return str(d)
    return None
