"""Per-unit running statistics and a histogram sketch, both mergeable.

- count, mean, M2 (Chan et al.'s parallel update, float64): mean and std of any split merge to the
  single-pass values up to float64 rounding.
- min, max, number of positive images, histogram counts: integers / order-free, so merges are exact.

The histogram has fixed bin edges shared by every unit and run, spaced evenly in asinh(x / SCALE):
fine near zero, relative width ~11% for large values, covering +-1e4 (values beyond land in the end
bins). Fixed edges are what make shard histograms add up exactly.
"""

from __future__ import annotations

import numpy as np
import torch

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
    def __init__(self, n_units: int, device="cpu"):
        self.count = 0
        self.mean = torch.zeros(n_units, dtype=torch.float64, device=device)
        self.m2 = torch.zeros(n_units, dtype=torch.float64, device=device)
        self.min = torch.full((n_units,), float("inf"), device=device)
        self.max = torch.full((n_units,), float("-inf"), device=device)
        self.n_positive = torch.zeros(n_units, dtype=torch.int64, device=device)
        self.hist = torch.zeros((n_units, HIST_BINS), dtype=torch.int64, device=device)

    def update(self, values_BU: torch.Tensor) -> None:
        n = values_BU.shape[0]
        if n == 0:
            return
        v = values_BU.double()
        b_mean = v.mean(0)
        b_m2 = ((v - b_mean) ** 2).sum(0)
        self._combine(n, b_mean, b_m2)
        self.min = torch.minimum(self.min, values_BU.amin(0).float())
        self.max = torch.maximum(self.max, values_BU.amax(0).float())
        self.n_positive += (values_BU > 0).sum(0)
        n_units = values_BU.shape[1]
        flat = (_bin_of(values_BU) + torch.arange(n_units, device=v.device) * HIST_BINS).reshape(-1)
        self.hist.view(-1).index_add_(0, flat, torch.ones_like(flat))

    def _combine(self, n_b: int, mean_b: torch.Tensor, m2_b: torch.Tensor) -> None:
        n_a = self.count
        n = n_a + n_b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (n_b / n)
        self.m2 = self.m2 + m2_b + delta ** 2 * (n_a * n_b / n)
        self.count = n

    def merge(self, other: "RunningStats") -> None:
        if other.count == 0:
            return
        self._combine(other.count, other.mean.to(self.mean.device), other.m2.to(self.m2.device))
        self.min = torch.minimum(self.min, other.min.to(self.min.device))
        self.max = torch.maximum(self.max, other.max.to(self.max.device))
        self.n_positive += other.n_positive.to(self.n_positive.device)
        self.hist += other.hist.to(self.hist.device)

    @property
    def std(self) -> torch.Tensor:
        """Population standard deviation."""
        return (self.m2 / max(self.count, 1)).sqrt()

    def quantiles(self, qs: list[float]) -> np.ndarray:
        """Approximate quantiles (n_units, len(qs)) from the histogram, clipped to [min, max]."""
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
        lo, hi = self.min.cpu().numpy()[:, None], self.max.cpu().numpy()[:, None]
        return np.clip(out, lo, hi)

    def state(self) -> dict[str, np.ndarray]:
        return {"count": np.array(self.count, dtype=np.int64), "mean": self.mean.cpu().numpy(),
                "m2": self.m2.cpu().numpy(), "min": self.min.cpu().numpy(),
                "max": self.max.cpu().numpy(), "n_positive": self.n_positive.cpu().numpy(),
                "hist": self.hist.cpu().numpy()}

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray], device="cpu") -> "RunningStats":
        st = cls(len(state["mean"]), device)
        st.count = int(state["count"])
        for name in ("mean", "m2", "min", "max", "n_positive", "hist"):
            setattr(st, name, torch.as_tensor(state[name]).to(device))
        return st
