"""Everything recorded for one layer during a pass: extremes and statistics, mergeable as a unit."""

from __future__ import annotations

import numpy as np
import torch

from .extremes import Extremes
from .stats import RunningStats

_EXT_KEYS = ("top_values", "top_index", "bottom_values", "bottom_index")


class LayerAccumulator:
    def __init__(self, n_units: int, k: int, device="cpu"):
        self.extremes = Extremes(n_units, k, device)
        self.stats = RunningStats(n_units, device)

    @property
    def n_units(self) -> int:
        return self.stats.mean.shape[0]

    def update(self, values_BU: torch.Tensor, index_B: torch.Tensor) -> None:
        self.extremes.update(values_BU, index_B)
        self.stats.update(values_BU)

    def merge(self, other: "LayerAccumulator") -> None:
        self.extremes.merge(other.extremes)
        self.stats.merge(other.stats)

    def state(self) -> dict[str, np.ndarray]:
        return {**self.extremes.state(), **self.stats.state()}

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray], device="cpu") -> "LayerAccumulator":
        acc = cls.__new__(cls)
        acc.extremes = Extremes.from_state({k: state[k] for k in _EXT_KEYS}, device)
        acc.stats = RunningStats.from_state({k: v for k, v in state.items() if k not in _EXT_KEYS},
                                            device)
        return acc
