"""`ExactSum`: the exact sum per unit of float32 values (and, optionally, of their squares), so that
the mean and variance of any split of the images merge to the one-pass values bit for bit.

Floating-point addition is not associative: a float64 running sum (or Chan's parallel update) of the
same values in another order or another split differs in the last bits. Here every float32 value is
an integer mantissa times a power of two, m * 2^e (|m| < 2^24, -172 <= e <= 104), so the sum of any
number of them is one big fixed-point integer with its lowest bit at 2^-172. It is held in int64
limbs of 32 bits each (limb j = bits 32j .. 32j+31); an update scatters every value's shifted
mantissa into its two limbs, then carries are propagated so that every limb but the top one lies in
[0, 2^32). That form is unique, so the state is the same array for every order and split. Squares
are exact in float64 (48-bit mantissas, split in two 24-bit halves) and summed the same way.

The mean and M2 are computed from the integers with Python's exact rational arithmetic and rounded
once (correctly) to float64: Σx / n and Σx² - (Σx)² / n. Cost per update: 2 (sums) or 6 (with
squares) scatter-adds over the batch; memory 11 (+ 20) int64 per unit.
"""

from __future__ import annotations

import numpy as np
import torch

_LIMB = 32
_MASK = (1 << _LIMB) - 1
# value bit positions: x = m * 2^e with m < 2^24 (float32: e in [-172, 104]); x^2: m < 2^48,
# e in [-345, 208]. Limbs cover the highest bit plus a carry limb (room for 2^63 / 2^32 additions).
_SPEC = {1: (172, 24, 11), 2: (345, 48, 20)}  # power: (offset, mantissa bits, limbs)


def _limbs_of(x: torch.Tensor, power: int):
    """(limb index, limb value) pairs (flat tensors) whose sum is the exact fixed-point x^power."""
    offset, bits, _ = _SPEC[power]
    v = x.double() ** 2 if power == 2 else x.float()
    mant, exp = torch.frexp(v)
    m = (mant * float(2 ** bits)).to(torch.int64)  # exact: a power-of-two scale
    p = exp.to(torch.int64) - bits + offset  # bit position of m's lowest bit, >= 0
    halves = [(m, p)] if power == 1 else [(m & 0xFFFFFF, p), (m >> 24, p + 24)]
    out = []
    for mm, pp in halves:
        j, s = pp // _LIMB, pp % _LIMB
        shifted = mm << s  # |shifted| < 2^56
        out += [(j, shifted & _MASK), (j + 1, shifted >> _LIMB)]
    return out


def _carry(limbs: torch.Tensor) -> None:
    """Normalise in place: limbs 0..L-2 in [0, 2^32), the top limb signed (the unique form)."""
    for j in range(limbs.shape[1] - 1):
        c = limbs[:, j] >> _LIMB
        limbs[:, j] -= c << _LIMB
        limbs[:, j + 1] += c


def _to_ints(limbs: np.ndarray) -> list[int]:
    obj = limbs.astype(object)
    shifts = np.array([1 << (_LIMB * j) for j in range(limbs.shape[1])], dtype=object)
    return list((obj * shifts).sum(axis=1)) if limbs.shape[0] else []


class ExactSum:
    """Exact per-unit Σx (and Σx² when `squares`) of float32 values; an accumulator."""

    def __init__(self, n_units: int, squares: bool = True, device="cpu"):
        self.count = 0
        self.sums = {p: torch.zeros((n_units, _SPEC[p][2]), dtype=torch.int64, device=device)
                     for p in ((1, 2) if squares else (1,))}

    @property
    def n_units(self) -> int:
        return self.sums[1].shape[0]

    def update(self, values_BU: torch.Tensor, index_B=None) -> None:
        n, n_units = values_BU.shape
        if n == 0:
            return
        self.count += n
        for power, limbs in self.sums.items():
            L = limbs.shape[1]
            base = (torch.arange(n_units, device=values_BU.device) * L)[None, :]
            flat = limbs.view(-1)
            for j, v in _limbs_of(values_BU, power):
                flat.index_add_(0, (base + j).reshape(-1).to(flat.device), v.reshape(-1).to(flat.device))
            _carry(limbs)

    def merge(self, other: "ExactSum") -> None:
        self.count += other.count
        for power, limbs in self.sums.items():
            limbs += other.sums[power].to(limbs.device)
            _carry(limbs)

    def _ints(self, power: int) -> list[int]:
        return _to_ints(self.sums[power].cpu().numpy())

    def mean(self) -> np.ndarray:
        """Σx / n per unit, correctly rounded to float64 (0 when nothing was added)."""
        d = max(self.count, 1) << _SPEC[1][0]
        return np.array([s / d for s in self._ints(1)], dtype=np.float64)

    def m2(self) -> np.ndarray:
        """Σ (x - mean)² = Σx² - (Σx)² / n per unit, exact then correctly rounded to float64."""
        n = max(self.count, 1)
        o1, o2 = _SPEC[1][0], _SPEC[2][0]
        # Σx = S / 2^o1, Σx² = Q / 2^o2 (o2 = 2 o1 + 1): M2 = (n Q - 2 S²) / (n 2^o2)
        assert o2 == 2 * o1 + 1
        d = n << o2
        return np.array([(n * q - 2 * s * s) / d for s, q in zip(self._ints(1), self._ints(2))],
                        dtype=np.float64)

    def state(self) -> dict[str, np.ndarray]:
        out = {"count": np.array(self.count, dtype=np.int64)}
        for power, limbs in self.sums.items():
            out[f"sum{power}_limbs"] = limbs.cpu().numpy()
        return out

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray], device="cpu") -> "ExactSum":
        acc = cls(state["sum1_limbs"].shape[0], "sum2_limbs" in state, device)
        acc.count = int(state["count"])
        for power in acc.sums:
            acc.sums[power] = torch.as_tensor(np.array(state[f"sum{power}_limbs"])).to(device)
        return acc
