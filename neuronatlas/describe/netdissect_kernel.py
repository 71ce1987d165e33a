"""The NetDissect counting kernel: the per-unit quantile (pass 1) and the active-pixel counts (pass 2).

Pass 2 never materialises (units x pixels) tensors. Two facts make it cheap and exact:

- a bilinear (align_corners=False) output pixel is a convex combination of at most four grid values,
  so a (unit, image) map whose grid maximum is <= the threshold has no active pixel ("cold"): only
  the hot maps (about 12% of them at the 0.5% quantile on a ViT) are upsampled;
- a pixel's concept masks form a *pattern* (the set of concepts covering it); the probe set has few
  distinct patterns. Counting, per unit, the active pixels of each pattern gives every IoU count:
  |A_u & M_c| = sum over patterns p containing c of n_u(p), |M_c| = sum of N(p) over those p, and
  the same table answers any boolean formula of concepts (compositional NetDissect, describe/
  compositional.py) without touching pixels again.

Exactness: the hot maps are upsampled by a float32 matmul with the interpolation weights, which
may differ from `F.interpolate` by a few float32 ulps; pixels within a safe margin of the threshold
(rare: about one in a million) are decided by `F.interpolate` on their map, so every count is the
count of `F.interpolate(maps) > threshold` (checked against the direct formula in
tests/describe/test_netdissect_reference.py). Counts are int64: no float32 2**24 limit.
"""

from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F

from ..errors import UserError

_U32 = 2.0 ** -24  # float32 unit roundoff


def default_memory_budget() -> int:
    """A quarter of the machine's RAM, in bytes."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4)
    except (ValueError, OSError, AttributeError):
        return 2 << 30


def parse_memory(value) -> int:
    """'2G', '512M', '1.5GB' or a byte count -> bytes (None: default_memory_budget())."""
    if value is None:
        return default_memory_budget()
    if isinstance(value, (int, float)):
        n = int(value)
    else:
        text = str(value).strip().upper().removesuffix("B")
        mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}.get(text[-1:], 1)
        try:
            n = int(float(text[:-1] if mult > 1 else text) * mult)
        except ValueError:
            raise UserError(f"--memory-budget must look like 2G, 512M or a byte count "
                            f"(got '{value}')") from None
    if n < 16 << 20:
        raise UserError(f"--memory-budget {value} is too small: give at least 16M")
    return n


# -- pass 1: streaming per-unit quantile -------------------------------------------------------------
class DoublingHistogram:
    """Per-unit histogram of `bins` equal bins; a unit's range doubles (pairs of bins merge) until it
    covers every value seen. `update((U, n) values)`, then `upper_quantile(q)` -> (U,) thresholds.

    Only the units whose range must grow are touched by a doubling (each unit's sequence of
    doublings is its own), counts are int32 and values are binned in float64 (grid values, not
    pixels)."""

    def __init__(self, n_units: int, bins: int = 2048):
        if bins < 2 or bins % 2:
            raise ValueError("bins must be an even number >= 2")
        self.n_units, self.bins = n_units, bins
        self.counts = torch.zeros(n_units, bins, dtype=torch.int32)  # < 2**31 values per unit
        self.lo = self.width = None

    def update(self, x: torch.Tensor) -> None:
        x = x.detach().reshape(self.n_units, -1)
        if x.shape[1] == 0:
            return
        xmin, xmax = x.amin(1).to(torch.float64), x.amax(1).to(torch.float64)
        if not (torch.isfinite(xmin).all() and torch.isfinite(xmax).all()):  # NaN propagates
            raise UserError("non-finite activations (NaN/inf) in the layer: check the model weights "
                            "and input normalisation")
        if self.lo is None:
            span = xmax - xmin
            tiny = torch.clamp(xmax.abs() * 1e-6, min=1e-12)
            self.lo = xmin.clone()
            self.width = torch.where(span > 0, span * (1 + 1e-9), tiny) / self.bins
        self._grow(xmin, xmax)
        x = x.to(torch.float64)
        idx = ((x - self.lo[:, None]) / self.width[:, None]).floor_().clamp_(0, self.bins - 1).long()
        idx += (torch.arange(self.n_units) * self.bins)[:, None]
        flat = idx.reshape(-1)  # a basis layer's maps arrive transposed (not contiguous)
        self.counts.view(-1).index_add_(0, flat, torch.ones(1, dtype=self.counts.dtype).expand(len(flat)))

    def _grow(self, xmin: torch.Tensor, xmax: torch.Tensor) -> None:
        half = self.bins // 2
        g = torch.arange(self.n_units)
        for _ in range(2100):  # float64 ranges cannot double more often than this
            lo, width = self.lo[g], self.width[g]
            down = xmin[g] < lo
            grow = down | (xmax[g] >= lo + self.bins * width)
            if not grow.any():
                return
            g, down, lo, width = g[grow], down[grow], lo[grow], width[grow]
            pairs = self.counts[g].view(len(g), half, 2).sum(-1)
            new = torch.zeros(len(g), self.bins, dtype=self.counts.dtype)
            new[:, :half] = torch.where(down[:, None], 0, pairs)  # up: range [lo, lo + 2 B w)
            new[:, half:] = torch.where(down[:, None], pairs, 0)  # down: [lo - B w, lo + B w)
            self.counts[g] = new
            self.lo[g] = torch.where(down, lo - self.bins * width, lo)
            self.width[g] = width * 2

    def upper_quantile(self, q: float) -> torch.Tensor:
        """T such that a fraction `q` of each unit's values lie above T (linear within a bin)."""
        if self.lo is None:
            raise ValueError("no values seen")
        counts = self.counts.to(torch.float64)
        total = counts.sum(1)
        want = q * total  # values that should lie above T
        above = counts.flip(1).cumsum(1).flip(1) - counts  # strictly higher bins
        # the bin holding T: the highest bin whose count + everything above reaches `want`
        reach = (above + counts) >= want[:, None]
        j = (reach.long() * torch.arange(self.bins)).amax(1)
        n_j = counts.gather(1, j[:, None])[:, 0]
        a_j = above.gather(1, j[:, None])[:, 0]
        frac = torch.where(n_j > 0, (want - a_j) / n_j.clamp(min=1), torch.zeros_like(n_j))
        upper = self.lo + (j + 1).to(torch.float64) * self.width
        return upper - frac.clamp(0, 1) * self.width

    def state(self) -> dict:
        return {"counts": self.counts.numpy(), "lo": self.lo.numpy(), "width": self.width.numpy()}

    @classmethod
    def from_state(cls, state: dict) -> "DoublingHistogram":
        h = cls(*state["counts"].shape)
        h.counts = torch.as_tensor(state["counts"]).clone()
        h.lo, h.width = torch.as_tensor(state["lo"]).clone(), torch.as_tensor(state["width"]).clone()
        return h


def float32_below(thresholds: torch.Tensor) -> torch.Tensor:
    """The largest float32 <= each (float64) threshold: for float32 x, x > t iff x > this."""
    thr = thresholds.to(torch.float64)
    t32 = thr.to(torch.float32)
    return torch.where(t32.to(torch.float64) > thr, torch.nextafter(t32, torch.tensor(-math.inf)), t32)


# -- concept patterns ---------------------------------------------------------------------------------
class ConceptPatterns:
    """The distinct sets of concepts that cover a pixel, numbered in order of first sight, with the
    number of pixels N(p) of each. `ids((B, C, M, M) bool masks)` -> (B, M*M) int64 pattern ids."""

    WORD = 62  # concepts per int64 word of a packed pattern

    def __init__(self, n_concepts: int):
        self.n_concepts = n_concepts
        self.words = max(1, -(-n_concepts // self.WORD))
        self._index: dict[tuple, int] = {}
        self._rows: list[tuple] = []
        self.counts = torch.zeros(0, dtype=torch.int64)

    def __len__(self) -> int:
        return len(self._rows)

    def ids(self, masks_BCMM: torch.Tensor) -> torch.Tensor:
        b, c = masks_BCMM.shape[:2]
        masks = masks_BCMM.reshape(b, c, -1).to(torch.bool)
        packed = torch.zeros(self.words, b * masks.shape[2], dtype=torch.int64)
        for k in range(c):
            packed[k // self.WORD].bitwise_or_(masks[:, k].reshape(-1).to(torch.int64)
                                              << (k % self.WORD))
        if self.words == 1:
            uniq, inv = torch.unique(packed[0], return_inverse=True)
            rows = [(v,) for v in uniq.tolist()]
        else:
            uniq, inv = torch.unique(packed.T, dim=0, return_inverse=True)
            rows = [tuple(r) for r in uniq.tolist()]
        lut = torch.tensor([self._id(r) for r in rows], dtype=torch.int64)
        if len(self._rows) > len(self.counts):
            self.counts = torch.cat([self.counts, torch.zeros(len(self._rows) - len(self.counts),
                                                              dtype=torch.int64)])
        self.counts.index_add_(0, lut, torch.bincount(inv, minlength=len(rows)))
        return lut[inv].view(b, -1)

    def _id(self, row: tuple) -> int:
        i = self._index.get(row)
        if i is None:
            i = self._index[row] = len(self._rows)
            self._rows.append(row)
        return i

    def bits(self) -> torch.Tensor:
        """(P, C) bool: bits[p, c] = concept c covers the pixels of pattern p."""
        if not self._rows:
            return torch.zeros(0, self.n_concepts, dtype=torch.bool)
        packed = torch.tensor(self._rows, dtype=torch.int64)  # (P, words)
        shift = torch.arange(self.n_concepts) % self.WORD
        word = torch.arange(self.n_concepts) // self.WORD
        return ((packed[:, word] >> shift) & 1).to(torch.bool)

    def state(self) -> dict:
        import numpy as np

        return {"rows": np.array(self._rows, dtype=np.int64).reshape(-1, self.words),
                "counts": self.counts.numpy(), "n_concepts": np.array(self.n_concepts)}

    @classmethod
    def from_state(cls, state: dict) -> "ConceptPatterns":
        p = cls(int(state["n_concepts"]))
        for r in state["rows"].tolist():
            p._id(tuple(r))
        p.counts = torch.as_tensor(state["counts"]).clone()
        return p


# -- pass 2: active pixels per (unit, pattern) --------------------------------------------------------
def interp_weights(n_in: int, n_out: int, neighbours: bool = False):
    """(n_out, n_in) float32 matrix of bilinear weights, align_corners=False (PyTorch's rule:
    source = max((i + 0.5) * n_in / n_out - 0.5, 0), neighbours clamped at the last index); with
    `neighbours`, also the (2, n_out) indices of the two source positions of each output."""
    w = torch.zeros(n_out, n_in, dtype=torch.float64)
    pairs = torch.zeros(2, n_out, dtype=torch.int64)
    for i in range(n_out):
        src = max((i + 0.5) * n_in / n_out - 0.5, 0.0)
        i0 = min(int(math.floor(src)), n_in - 1)
        i1 = min(i0 + 1, n_in - 1)
        lam = src - i0
        w[i, i0] += 1 - lam
        w[i, i1] += lam
        pairs[0, i], pairs[1, i] = i0, i1
    return (w.to(torch.float32), pairs) if neighbours else w.to(torch.float32)


class ActiveCounter:
    """For one layer: n_u(p), the number of active pixels (upsampled map > threshold) of unit u
    covered by concept pattern p, summed over images. Kept as a dense (U, P) int64 table while it
    fits an eighth of the memory budget, else sparse (int64 keys u * 2**32 + p)."""

    BYTES_PER_PIXEL = 5  # float32 values + one bool plane
    CHUNK_BYTES = 32 << 20  # larger chunks are no faster (they fall out of the cache)

    def __init__(self, thresholds: torch.Tensor, mask_size: int, memory_budget: int | None = None,
                 device="cpu"):
        self.thresholds = thresholds.to(torch.float64).cpu()
        self.n_units, self.mask_size = len(thresholds), mask_size
        self.device = torch.device(device)
        self.thr = float32_below(self.thresholds).to(self.device)
        budget = memory_budget or default_memory_budget()
        self.dense_limit = budget // 8
        # at most an eighth of the budget for one chunk of upsampled maps; the rest holds the
        # batch's maps, masks and the count table
        self.chunk = max(1, min(budget // 8, self.CHUNK_BYTES)
                         // (self.BYTES_PER_PIXEL * mask_size * mask_size))
        self.dense = torch.zeros(self.n_units, 0, dtype=torch.int64, device=self.device)
        self.keys = torch.zeros(0, dtype=torch.int64)
        self.values = torch.zeros(0, dtype=torch.int64)
        self._pending: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._pending_n = 0
        self._buffers: dict[str, torch.Tensor] = {}
        self._weights: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self.exact_maps = 0  # maps with a pixel near the threshold, decided by F.interpolate

    def _buffer(self, name: str, rows: int, shape: tuple, dtype) -> torch.Tensor:
        """A (rows, *shape) view of a flat buffer kept across batches (grown, never shrunk)."""
        size = rows * math.prod(shape)
        buf = self._buffers.get(name)
        if buf is None or buf.numel() < size or buf.dtype != dtype:
            buf = self._buffers[name] = torch.empty(size, dtype=dtype, device=self.device)
        return buf[:size].view((rows,) + tuple(shape))

    def update(self, maps_BUhw: torch.Tensor, pattern_ids_BP: torch.Tensor) -> None:
        b, n_units, h, w = maps_BUhw.shape
        if n_units != self.n_units:
            raise ValueError(f"maps have {n_units} units, thresholds {self.n_units}")
        maps = maps_BUhw.to(self.device, torch.float32)
        pids = pattern_ids_BP.to(self.device)
        self._fit_dense(int(pids.max()) + 1 if pids.numel() else 0)
        # a map is hot when its grid maximum comes within the margin of the threshold (float32
        # weights may sum to 1 + 1 ulp: a flat map at the threshold can still cross it)
        margin = self.margin(h, w) * maps.abs().flatten(2).amax(2)
        hot = (maps.flatten(2).amax(2) > self.thr[None, :] - margin).nonzero()  # (n, 2): image, unit
        for a in range(0, len(hot), self.chunk):
            part = hot[a:a + self.chunk]
            self._count(maps, pids, part, margin[part[:, 0], part[:, 1]])
        if self._pending_n > 4 * max(len(self.keys), 1 << 20):
            self._coalesce()

    def _fit_dense(self, n_patterns: int) -> None:
        if self.dense is None or n_patterns <= self.dense.shape[1]:
            return
        have = self.dense.shape[1]
        cap = max(64, have * 2, n_patterns)
        if self.n_units * cap * 8 > self.dense_limit:  # too many patterns: go sparse for good
            self._spill()
            self.dense = None
            return
        grown = torch.zeros(self.n_units, cap, dtype=torch.int64, device=self.device)
        grown[:, :have] = self.dense
        self.dense = grown

    def _spill(self) -> None:
        if self.dense is not None and self.dense.numel():
            u, p = self.dense.nonzero(as_tuple=True)
            self._pending.append(((u.cpu() << 32) | p.cpu(), self.dense[u, p].cpu()))
            self._pending_n += len(u)
            self.dense.zero_()

    @staticmethod
    def margin(h: int, w: int) -> float:
        """The margin around the threshold, relative to a map's largest |value|: our float32 GEMMs
        and F.interpolate round at most a few ulps of it apart (weights rounded to float32 carry
        ~h ulps of the source coordinate); 4x that."""
        return 4 * (max(h, w) + 8) * _U32

    def _count(self, maps, pids, hot, margin) -> None:
        m = self.mask_size
        img, unit = hot[:, 0], hot[:, 1]
        planes = maps[img, unit]  # (n, h, w)
        n, h, w = planes.shape
        thr = self.thr[unit]
        if self.device.type == "cpu":
            key = (h, w)
            if key not in self._weights:
                wy, y01 = interp_weights(h, m, neighbours=True)
                self._weights[key] = (wy, interp_weights(w, m).T.contiguous(), y01)
            wy, wx_T, y01 = self._weights[key]
            # output row i mixes grid rows y0(i), y1(i): it can only be active where one of them
            # reaches the threshold (about a third of a hot map's rows)
            rowmax = planes.amax(2).T  # (h, n)
            lo = thr - margin
            rows = ((rowmax[y01[0]] > lo) | (rowmax[y01[1]] > lo)).nonzero(as_tuple=True)
            # two plain GEMMs into reused buffers: columns of every row, then the candidate rows
            cols = torch.matmul(wy, planes.permute(1, 0, 2).reshape(h, n * w),
                                out=self._buffer("cols", m, (n * w,), torch.float32)).view(m, n, w)
            k = len(rows[0])
            picked = self._buffer("picked", k, (w,), torch.float32)
            torch.index_select(cols.view(m * n, w), 0, rows[0] * n + rows[1], out=picked)
            up = torch.matmul(picked, wx_T, out=self._buffer("up", k, (m,), torch.float32))
            # one compare over the pixels: candidates above thr - margin, then the few values
            cand = torch.gt(up, lo[rows[1], None],
                            out=self._buffer("cand", k, (m,), torch.bool))
            r, j = cand.nonzero(as_tuple=True)
            i, which = rows[0][r], rows[1][r]
            d = up[r, j] - thr[which]  # exact near the threshold (Sterbenz)
            near = d <= margin[which]
            keep = ~near
            if near.any():
                maps_near, inv = torch.unique(which[near], return_inverse=True)
                self.exact_maps += len(maps_near)
                exact = F.interpolate(planes[maps_near, None], size=(m, m), mode="bilinear",
                                      align_corners=False)[:, 0]
                keep[near] = exact[inv, i[near], j[near]] > thr[which[near]]
            which, pixel = which[keep], i[keep] * m + j[keep]
        else:  # accelerators: F.interpolate itself (fast there, and matmuls may use TF32)
            up = F.interpolate(planes[:, None], size=(m, m), mode="bilinear", align_corners=False)
            which, pixel = (up[:, 0] > thr[:, None, None]).view(n, m * m).nonzero(as_tuple=True)
        u, p = unit[which], pids[img[which], pixel]
        if self.dense is not None:
            flat = u * self.dense.shape[1] + p
            self.dense.view(-1).index_add_(0, flat, torch.ones(1, dtype=torch.int64,
                                                               device=self.device).expand(len(flat)))
        else:
            k, c = torch.unique((u << 32) | p, return_counts=True)
            self._pending.append((k.cpu(), c.cpu()))
            self._pending_n += len(k)

    def _coalesce(self) -> None:
        if not self._pending:
            return
        keys = torch.cat([self.keys] + [k for k, _ in self._pending])
        values = torch.cat([self.values] + [c for _, c in self._pending])
        self.keys, inv = torch.unique(keys, return_inverse=True)
        self.values = torch.zeros(len(self.keys), dtype=torch.int64).index_add_(0, inv, values)
        self._pending, self._pending_n = [], 0

    def table(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(units, patterns, counts): the nonzero n_u(p), sorted by unit then pattern."""
        self._spill()
        self._coalesce()
        return self.keys >> 32, self.keys & 0xFFFFFFFF, self.values

    def state(self) -> dict:
        self.table()
        return {"keys": self.keys.numpy(), "values": self.values.numpy(),
                "thresholds": self.thresholds.numpy()}

    @classmethod
    def from_state(cls, state: dict, mask_size: int, memory_budget=None, device="cpu"):
        c = cls(torch.as_tensor(state["thresholds"]), mask_size, memory_budget, device)
        c.keys = torch.as_tensor(state["keys"]).clone()
        c.values = torch.as_tensor(state["values"]).clone()
        return c


def concept_counts(units, patterns, counts, bits: torch.Tensor, pattern_counts: torch.Tensor,
                   n_units: int):
    """From the (unit, pattern) table: inter (U, C) = |A_u & M_c|, act (U,) = |A_u|, mask (C,) =
    |M_c|, float64 (exact integers)."""
    b = bits.to(torch.float64)
    idx = torch.stack([units, patterns])
    table = torch.sparse_coo_tensor(idx, counts.to(torch.float64), (n_units, len(b)),
                                    is_coalesced=True, check_invariants=False)
    inter = torch.sparse.mm(table, b) if len(counts) else torch.zeros(n_units, b.shape[1],
                                                                       dtype=torch.float64)
    act = torch.zeros(n_units, dtype=torch.float64).index_add_(0, units, counts.to(torch.float64))
    mask = pattern_counts.to(torch.float64) @ b
    return inter, act, mask


def iou_table(inter: torch.Tensor, act: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """IoU = |A & M| / |A | M| (0 where both are empty)."""
    union = act[:, None] + mask[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(union))
