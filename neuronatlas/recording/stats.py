"""Per-unit running statistics and a histogram sketch, both accumulators (recording/accumulator.py).

- count, mean, M2 from exact integer sums of x and x^2 (exact_sum.py), each rounded once to float64;
  min, max, number of positive images, histogram counts: integers / order-free. Every merge is exact:
  any split of the images gives the one-pass state bit for bit.

The histogram has fixed bin edges shared by every unit and run, spaced evenly in asinh(x / SCALE):
fine near zero, relative width ~11% for large values, covering +-1e4 (values beyond land in the end
bins). Fixed edges are what make shard histograms add up exactly.
"""

from __future__ import annotations

import numpy as np
import torch

from .exact_sum import ExactSum

HIST_BINS = 256
HIST_SCALE = 1e-2
HIST_LIMIT = 1e4
_A = float(np.arcsinh(HIST_LIMIT / HIST_SCALE))


def hist_edges() -> np.ndarray:
    """The HIST_BINS + 1 bin edges (float64)."""
    return np.sinh(np.linspace(-_A, _A, HIST_BINS + 1)) * HIST_SCALE


def _bin_of(values: torch.Tensor) -> torch.Tensor:
    # float32 is enough: a value's bin only has to be a fixed function of the value (exact merges)
    pos = (torch.asinh(values.float() / HIST_SCALE) + _A) * (HIST_BINS / (2 * _A))
    return pos.floor().clamp_(0, HIST_BINS - 1).long()


class RunningStats:
    """count, mean, M2, min, max and the number of positive values per unit. The mean and M2 come
    from exact sums (exact_sum.py), so every split of the images merges to the same bits."""

    def __init__(self, n_units: int, device="cpu"):
        self.sums = ExactSum(n_units, squares=True, device=device)
        self.min = torch.full((n_units,), float("inf"), device=device)
        self.max = torch.full((n_units,), float("-inf"), device=device)
        self.n_positive = torch.zeros(n_units, dtype=torch.int64, device=device)

    @property
    def count(self) -> int:
        return self.sums.count

    def update(self, values_BU: torch.Tensor, index_B=None) -> None:
        """Add a batch (B, U); the probe indices are not needed (the summary is order-free)."""
        if values_BU.shape[0] == 0:
            return
        self.sums.update(values_BU)
        # + 0.0 turns -0.0 into 0.0: min(-0.0, 0.0) would otherwise depend on the order
        self.min = torch.minimum(self.min, values_BU.amin(0).float() + 0.0)
        self.max = torch.maximum(self.max, values_BU.amax(0).float() + 0.0)
        self.n_positive += (values_BU > 0).sum(0).to(self.n_positive.device)

    def merge(self, other: "RunningStats") -> None:
        self.sums.merge(other.sums)
        self.min = torch.minimum(self.min, other.min.to(self.min.device))
        self.max = torch.maximum(self.max, other.max.to(self.max.device))
        self.n_positive += other.n_positive.to(self.n_positive.device)

    @property
    def mean(self) -> torch.Tensor:
        """float64 (U,), the exact mean rounded once."""
        return torch.as_tensor(self.sums.mean())

    @property
    def m2(self) -> torch.Tensor:
        """float64 (U,), the exact sum of squared deviations rounded once."""
        return torch.as_tensor(self.sums.m2())

    @property
    def std(self) -> torch.Tensor:
        """Population standard deviation."""
        return (self.m2 / max(self.count, 1)).sqrt()

    def state(self) -> dict[str, np.ndarray]:
        return {**self.sums.state(), "min": self.min.cpu().numpy(), "max": self.max.cpu().numpy(),
                "n_positive": self.n_positive.cpu().numpy()}

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray], device="cpu") -> "RunningStats":
        st = cls(len(state["min"]), device)
        st.sums = ExactSum.from_state(state, device)
        for name in ("min", "max", "n_positive"):
            setattr(st, name, torch.as_tensor(np.array(state[name])).to(device))
        return st


class Histogram:
    """Counts of values per unit in the HIST_BINS fixed bins of `hist_edges()` (exact merges)."""

    def __init__(self, n_units: int, device="cpu"):
        self.hist = torch.zeros((n_units, HIST_BINS), dtype=torch.int64, device=device)

    def update(self, values_BU: torch.Tensor, index_B=None) -> None:
        if values_BU.shape[0] == 0:
            return
        n_units = values_BU.shape[1]
        offsets = torch.arange(n_units, device=values_BU.device) * HIST_BINS
        flat = (_bin_of(values_BU) + offsets).reshape(-1).to(self.hist.device)
        self.hist.view(-1).index_add_(0, flat, torch.ones_like(flat))

    def merge(self, other: "Histogram") -> None:
        self.hist += other.hist.to(self.hist.device)

    def quantiles(self, qs: list[float], lo=None, hi=None) -> np.ndarray:
        """Approximate quantiles (n_units, len(qs)) from the histogram, clipped to [lo, hi] (the
        units' min and max, from RunningStats) when given."""
        hist = self.hist.cpu().numpy().astype(np.float64)
        edges = hist_edges()
        cum = np.cumsum(hist, axis=1)
        total = np.maximum(cum[:, -1:], 1)
        out = np.empty((hist.shape[0], len(qs)))
        for j, q in enumerate(qs):
            target = q * total
            b = np.minimum((cum < target).sum(1), HIST_BINS - 1)
            below = np.where(b > 0, cum[np.arange(len(b)), b - 1], 0.0)
            inside = hist[np.arange(len(b)), b]
            frac = np.where(inside > 0, (target[:, 0] - below) / np.maximum(inside, 1), 0.5)
            out[:, j] = edges[b] + frac * (edges[b + 1] - edges[b])
        if lo is None or hi is None:
            return out
        return np.clip(out, _numpy(lo)[:, None], _numpy(hi)[:, None])

    def state(self) -> dict[str, np.ndarray]:
        return {"hist": self.hist.cpu().numpy()}

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray], device="cpu") -> "Histogram":
        h = cls(state["hist"].shape[0], device)
        h.hist = torch.as_tensor(state["hist"]).to(device)
        return h


def _numpy(x) -> np.ndarray:
    return x.cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
