"""The accumulator protocol, and the accumulator `record` keeps per layer.

An accumulator folds a stream of per-image values into a fixed-size summary:

    acc.update(values_BU, index_B, *payload)   add a batch (values per image, their probe indices)
    acc.merge(other)                           add another accumulator of the same shape
    acc.state() -> {name: ndarray}             everything it holds, as plain arrays (checkpoints)
    Cls.from_state(state, device)              the same accumulator back, bit for bit

The invariant that makes shards, checkpoints and (later) remote workers safe: for ANY split of a set
of images into parts, fed in any batch sizes, `merge` of the parts equals one pass over all of them.
Order-free summaries (counts, min/max, histograms, top-k under a total order) meet it exactly, and so
do the moments of `RunningStats`: they come from exact integer sums (exact_sum.py), rounded once.
`from_state(state())` is exact for every accumulator, so a checkpointed accumulator resumes as if the
process had never stopped. The property tests in tests/recording/test_accumulators.py hold every
implementation to this.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import torch

from .extremes import Extremes
from .stats import Histogram, RunningStats


@runtime_checkable
class Accumulator(Protocol):
    def update(self, values, index, *payload) -> None: ...

    def merge(self, other) -> None: ...

    def state(self) -> dict[str, np.ndarray]: ...

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray], device="cpu"): ...


_EXT_KEYS = ("top_values", "top_index", "bottom_values", "bottom_index")
_HIST_KEYS = ("hist",)


class LayerAccumulator:
    """What `record` keeps for one layer: extremes, moments and the histogram, as one accumulator
    whose state is the flat union of theirs (the checkpoint format of docs/run-format.md)."""

    def __init__(self, n_units: int, k: int, device="cpu"):
        self.extremes = Extremes(n_units, k, device)
        self.stats = RunningStats(n_units, device)
        self.histogram = Histogram(n_units, device)

    @property
    def n_units(self) -> int:
        return self.stats.min.shape[0]

    def update(self, values_BU: torch.Tensor, index_B: torch.Tensor) -> None:
        self.extremes.update(values_BU, index_B)
        self.stats.update(values_BU, index_B)
        self.histogram.update(values_BU, index_B)

    def merge(self, other: "LayerAccumulator") -> None:
        self.extremes.merge(other.extremes)
        self.stats.merge(other.stats)
        self.histogram.merge(other.histogram)

    def quantiles(self, qs: list[float]) -> np.ndarray:
        return self.histogram.quantiles(qs, self.stats.min, self.stats.max)

    def state(self) -> dict[str, np.ndarray]:
        return {**self.extremes.state(), **self.stats.state(), **self.histogram.state()}

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray], device="cpu") -> "LayerAccumulator":
        acc = cls.__new__(cls)
        acc.extremes = Extremes.from_state({k: state[k] for k in _EXT_KEYS}, device)
        acc.histogram = Histogram.from_state({k: state[k] for k in _HIST_KEYS}, device)
        acc.stats = RunningStats.from_state(
            {k: v for k, v in state.items() if k not in _EXT_KEYS + _HIST_KEYS}, device)
        return acc


def merge_all(accumulators):
    """Merge an iterable of accumulators into the first one (returned); None when empty."""
    merged = None
    for acc in accumulators:
        if merged is None:
            merged = acc
        else:
            merged.merge(acc)
    return merged
