"""What an SAE is (its architecture and size) and how it is trained: frozen, JSON round trip.

Two configs because they live in different places: `SAEConfig` goes with the weights (it is enough
to rebuild the dictionary), `TrainConfig` goes with the training run (data, schedule, seed).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from ..errors import UserError

ARCHITECTURE_NAMES = ("topk", "relu", "jumprelu", "batchtopk")
TOKEN_MODES = ("all", "patches", "cls")


def _from_dict(cls, d: dict):
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise UserError(f"unknown {cls.__name__} field(s) {', '.join(unknown)}: known are "
                        f"{', '.join(sorted(known))}")
    return cls(**d)


@dataclass(frozen=True)
class SAEConfig:
    """The dictionary itself: enough to rebuild it from its weights."""

    architecture: str = "topk"
    """topk (default), relu (ReLU + L1), jumprelu or batchtopk."""
    d_in: int = 0
    """Width of the activations it reads (the hooked layer's units)."""
    d_sae: int = 0
    """Number of features (latents)."""
    k: int = 32
    """Active features per token (topk, batchtopk: the mean over the batch)."""
    l1_coeff: float = 5.0
    """relu: weight of the L1 penalty (on activations times decoder norms)."""
    l0_coeff: float = 1.0
    """jumprelu: weight of the L0 penalty (straight-through estimate)."""
    jumprelu_bandwidth: float = 0.05
    """jumprelu: width of the rectangle kernel of the straight-through gradient."""
    jumprelu_init_threshold: float = 0.01
    """jumprelu: initial threshold of every feature."""
    aux_k: int = 0
    """topk, batchtopk: dead features used by the auxiliary loss (0: d_in // 2)."""
    aux_coeff: float = 1 / 32
    """topk, batchtopk: weight of the auxiliary top-k loss on dead features (Gao et al.)."""

    def __post_init__(self):
        if self.architecture not in ARCHITECTURE_NAMES:
            raise UserError(f"unknown SAE architecture '{self.architecture}': choose one of "
                            f"{', '.join(ARCHITECTURE_NAMES)}")
        if self.d_in < 1 or self.d_sae < 1:
            raise UserError(f"an SAE needs d_in >= 1 and d_sae >= 1, got {self.d_in} and "
                            f"{self.d_sae}: set --expansion or --features")
        if self.architecture in ("topk", "batchtopk") and not 1 <= self.k <= self.d_sae:
            raise UserError(f"k must be between 1 and the number of features ({self.d_sae}), got "
                            f"{self.k}: pass a smaller --k")
        for name in ("l1_coeff", "l0_coeff", "jumprelu_bandwidth", "aux_coeff"):
            if getattr(self, name) < 0:
                raise UserError(f"{name} must be >= 0, got {getattr(self, name)}")

    @property
    def n_aux(self) -> int:
        return self.aux_k or max(1, self.d_in // 2)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "SAEConfig":
        return _from_dict(cls, d)


@dataclass(frozen=True)
class TrainConfig:
    """How a dictionary is trained on a model's activations."""

    layer: str = ""
    """Hook point whose output is encoded (a name from `neuronatlas layers MODEL`)."""
    tokens: str = "all"
    """Which positions are training rows: all, patches (spatial grid only) or cls."""
    expansion: int = 8
    """Features per input unit (d_sae = expansion x d_in) unless `features` is set."""
    features: int = 0
    """Number of features (0: expansion x d_in)."""
    lr: float = 4e-4
    """Adam learning rate."""
    batch_tokens: int = 1024
    """Activation rows per training step."""
    buffer_tokens: int = 32768
    """Rows held in the shuffle buffer (the memory bound, independent of the probe set's size)."""
    epochs: int = 1
    """Passes over the probe set (each in a new seeded image order)."""
    image_batch: int = 32
    """Images per forward pass of the model."""
    dead_after: int = 100_000
    """A feature that has not fired for this many rows is dead (and gets the auxiliary loss)."""
    checkpoint_every: int = 50
    """Training steps between checkpoints (resume restarts from the last one)."""
    seed: int = 0
    """Seeds the weights, the image order and the shuffle buffer."""

    def __post_init__(self):
        if self.tokens not in TOKEN_MODES:
            raise UserError(f"unknown --tokens '{self.tokens}': choose one of {', '.join(TOKEN_MODES)}")
        if self.batch_tokens < 1 or self.image_batch < 1 or self.epochs < 1:
            raise UserError("batch_tokens, image_batch and epochs must each be >= 1")
        if self.buffer_tokens < 2 * self.batch_tokens:
            raise UserError(f"--buffer-tokens ({self.buffer_tokens}) must hold at least two training "
                            f"batches ({2 * self.batch_tokens}): raise it or lower --batch-tokens")
        if self.lr <= 0:
            raise UserError(f"--lr must be > 0, got {self.lr}")

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "TrainConfig":
        return _from_dict(cls, d)


def write_json(path: Path, obj: dict) -> None:
    """Atomic: a kill mid-write leaves the previous file, never half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True))
    tmp.replace(path)
