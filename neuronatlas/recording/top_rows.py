"""`TopRows`: the running top-k per neuron of (value, image index), each with a payload row (the
second-order lens keeps every top image's centred coefficients for its rank-1 step).

An accumulator (accumulator.py): highest value first, ties to the lower image index, NaN
values never enter, empty slots hold index -1, value -inf and a zero row. The order is total, so any
split of the images, fed in any blocks and merged in any order, gives the one-pass result exactly.
"""

from __future__ import annotations

import numpy as np

_LAST = np.iinfo(np.int64).max


class TopRows:
    def __init__(self, n: int, k: int, width: int):
        self.values = np.full((n, k), -np.inf)
        self.index = np.full((n, k), -1, np.int64)
        self.rows = np.zeros((n, k, width))
        self.k = k

    def update(self, values_BN: np.ndarray, index_B: np.ndarray, rows_BNK: np.ndarray) -> None:
        """Add a block: values (B, N), probe indices (B,), payload rows (B, N, width)."""
        v = np.where(np.isnan(values_BN), -np.inf, values_BN).T  # (N, B)
        idx = np.broadcast_to(np.asarray(index_B, np.int64)[None, :], v.shape)
        self._keep(v, np.where(np.isinf(v), -1, idx), np.nan_to_num(rows_BNK.transpose(1, 0, 2)))

    def merge(self, other: "TopRows") -> None:
        assert other.values.shape == self.values.shape and other.rows.shape == self.rows.shape
        self._keep(other.values, other.index, other.rows)

    def _keep(self, values_NB, index_NB, rows_NBW) -> None:
        allv = np.concatenate([self.values, values_NB], 1)
        alli = np.concatenate([self.index, index_NB], 1)
        allr = np.concatenate([self.rows, rows_NBW], 1)
        # value descending, then index ascending; empty slots (index -1, -inf) last
        order = np.lexsort((np.where(alli < 0, _LAST, alli), -allv), axis=-1)[:, :self.k]
        self.values = np.take_along_axis(allv, order, 1)
        self.index = np.take_along_axis(alli, order, 1)
        self.rows = np.take_along_axis(allr, order[..., None], 1)

    def result(self):
        return self.values, self.index, self.rows

    def state(self) -> dict[str, np.ndarray]:
        return {"values": self.values, "index": self.index, "rows": self.rows}

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray], device="cpu") -> "TopRows":
        n, k, width = state["rows"].shape
        top = cls(n, k, width)
        top.values = np.array(state["values"], np.float64)
        top.index = np.array(state["index"], np.int64)
        top.rows = np.array(state["rows"], np.float64)
        return top
