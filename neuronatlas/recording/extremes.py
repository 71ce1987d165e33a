"""Streaming top-k and bottom-k per unit, with an exact merge.

Order is total, so any split of the probe set merges to exactly the single-pass answer:
top-k sorts by (value descending, image index ascending), bottom-k by (value ascending, image index
ascending). Empty slots hold index -1 and value -inf (top) / +inf (bottom). Bottom-k is kept on its own
values, never on negated buffers (the reference code mixed signs when merging).
"""

from __future__ import annotations

import numpy as np
import torch


_LOW32 = (1 << 32) - 1


def _ordered_int(values: torch.Tensor) -> torch.Tensor:
    """float32 -> int64 with the same order (IEEE bits, negatives flipped); -0.0 counts as +0.0."""
    bits = (values.float() + 0.0).view(torch.int32)
    return (bits ^ ((bits >> 31) & 0x7FFFFFFF)).to(torch.int64)


def _select(values: torch.Tensor, index: torch.Tensor, k: int, largest: bool):
    """Keep the k first candidates per row under the total order above. values/index: (U, n).

    One int64 key per candidate packs (value, image index) so a single topk gives the exact order:
    the value's order-preserving bits in the high word, the index (reversed for top-k, so the lower
    index wins a tie) in the low word. Activations are finite (the recorder rejects NaN/inf), so empty
    slots (index -1, value -inf / +inf) always come last.
    """
    low = (_LOW32 - (index + 1)) if largest else (index + 1)
    key = (_ordered_int(values) << 32) + low
    pos = torch.topk(key, min(k, key.shape[1]), dim=1, largest=largest, sorted=True).indices
    return values.gather(1, pos).contiguous(), index.gather(1, pos).contiguous()


class Extremes:
    """Top-k and bottom-k of U units. `update` takes a batch; `merge` another Extremes."""

    def __init__(self, n_units: int, k: int, device="cpu"):
        self.k = k
        self.top_values = torch.full((n_units, k), float("-inf"), device=device)
        self.top_index = torch.full((n_units, k), -1, dtype=torch.int64, device=device)
        self.bottom_values = torch.full((n_units, k), float("inf"), device=device)
        self.bottom_index = torch.full((n_units, k), -1, dtype=torch.int64, device=device)

    def update(self, values_BU: torch.Tensor, index_B: torch.Tensor) -> None:
        """Add a batch: values (B, U), probe indices (B,)."""
        if values_BU.shape[0] == 0:
            return
        vals = values_BU.T.to(self.top_values.dtype)
        idx = index_B.to(self.top_index.device).unsqueeze(0).expand_as(vals)
        self.top_values, self.top_index = _select(
            torch.cat([self.top_values, vals], 1), torch.cat([self.top_index, idx], 1), self.k, True)
        self.bottom_values, self.bottom_index = _select(
            torch.cat([self.bottom_values, vals], 1), torch.cat([self.bottom_index, idx], 1),
            self.k, False)

    def merge(self, other: "Extremes") -> None:
        assert other.k == self.k and other.top_values.shape == self.top_values.shape
        self.top_values, self.top_index = _select(
            torch.cat([self.top_values, other.top_values.to(self.top_values.device)], 1),
            torch.cat([self.top_index, other.top_index.to(self.top_index.device)], 1), self.k, True)
        self.bottom_values, self.bottom_index = _select(
            torch.cat([self.bottom_values, other.bottom_values.to(self.top_values.device)], 1),
            torch.cat([self.bottom_index, other.bottom_index.to(self.top_index.device)], 1),
            self.k, False)

    def state(self) -> dict[str, np.ndarray]:
        return {n: getattr(self, n).cpu().numpy() for n in
                ("top_values", "top_index", "bottom_values", "bottom_index")}

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray], device="cpu") -> "Extremes":
        n_units, k = state["top_values"].shape
        ext = cls(n_units, k, device)
        for n in ("top_values", "top_index", "bottom_values", "bottom_index"):
            setattr(ext, n, torch.as_tensor(state[n]).to(device))
        return ext
