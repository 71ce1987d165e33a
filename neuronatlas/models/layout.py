"""How a hook point's output is laid out: where the units are and where space is.

Every hook output is brought to one canonical shape, `acts_BUS` = (batch, units, positions), so the
recorder, pooling and heatmaps never need to know the architecture:

- conv:   (B, C, H, W)  -> (B, C, H*W); every position is spatial, grid = (H, W). `channels_last`
          outputs (B, H, W, C) (Swin, ConvNeXt MLPs) are permuted first.
- tokens: (B, T, D)     -> (B, D, T); the first `n_prefix` tokens are CLS / register tokens, the rest
          form the patch grid `grid` (row-major). `seq_first` outputs (T, B, D) are permuted first.
- vector: (B, D)        -> (B, D, 1); no spatial layout (pooled embeddings, logits, classifier heads)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch


@dataclass(frozen=True)
class Layout:
    kind: str  # "conv" | "tokens" | "vector"
    n_units: int
    n_positions: int = 1
    grid: tuple[int, int] | None = None  # (h, w) of the spatial / patch grid
    cls_index: int | None = None  # position of the CLS token, if any
    register_indices: tuple[int, ...] = ()  # positions of register tokens
    seq_first: bool = False  # tokens given as (T, B, D)
    channels_last: bool = False  # conv maps given as (B, H, W, C)

    @property
    def patch_slice(self) -> slice:
        """Positions that form the spatial grid (all of them for conv)."""
        if self.kind == "conv":
            return slice(0, self.n_positions)
        if self.kind == "tokens" and self.grid is not None:
            n_patch = self.grid[0] * self.grid[1]
            return slice(self.n_positions - n_patch, self.n_positions)
        return slice(0, self.n_positions)

    @property
    def has_grid(self) -> bool:
        return self.grid is not None

    def canonical(self, x: torch.Tensor) -> torch.Tensor:
        """Bring a raw hook output to (B, U, S)."""
        if self.kind == "conv":
            return (x.permute(0, 3, 1, 2) if self.channels_last else x).flatten(2)
        if self.kind == "tokens":
            if self.seq_first:
                x = x.permute(1, 0, 2)
            return x.transpose(1, 2)
        return x.reshape(x.shape[0], -1, 1)

    def uncanonical(self, acts_BUS: torch.Tensor, raw: torch.Tensor) -> torch.Tensor:
        """The inverse of `canonical`: (B, U, S) back to the raw layout of `raw` (B, ...)."""
        b = acts_BUS.shape[0]
        if self.kind == "conv":
            if self.channels_last:
                return acts_BUS.transpose(1, 2).reshape(b, *raw.shape[1:])
            return acts_BUS.reshape(b, *raw.shape[1:])
        if self.kind == "tokens":
            x = acts_BUS.transpose(1, 2)  # (B, T, U)
            return x.permute(1, 0, 2).contiguous() if self.seq_first else x.contiguous()
        return acts_BUS.reshape(b, *raw.shape[1:])

    def spatial_map(self, acts_BUS: torch.Tensor) -> torch.Tensor:
        """(B, U, S) -> (B, U, h, w) over the patch grid only (CLS / registers dropped)."""
        if self.grid is None:
            raise ValueError(f"a {self.kind} layer has no spatial grid")
        h, w = self.grid
        return acts_BUS[:, :, self.patch_slice].reshape(acts_BUS.shape[0], acts_BUS.shape[1], h, w)

    def to_json(self) -> dict:
        d = asdict(self)
        d["grid"] = list(self.grid) if self.grid else None
        d["register_indices"] = list(self.register_indices)
        return d

    @classmethod
    def from_json(cls, d: dict) -> "Layout":
        d = dict(d)
        d["grid"] = tuple(d["grid"]) if d.get("grid") else None
        d["register_indices"] = tuple(d.get("register_indices") or ())
        return cls(**d)


@dataclass(frozen=True)
class TokenInfo:
    """What an adapter knows about a ViT's token sequence: used to infer token layouts."""

    n_prefix: int  # CLS + registers at the front
    cls_index: int | None
    register_indices: tuple[int, ...]
    grid: tuple[int, int]


def infer_layout(shape: tuple[int, ...], batch: int, tokens: TokenInfo | None) -> Layout | None:
    """Guess the layout of an output of `shape` (batch included). None if it is not unit-like."""
    if len(shape) == 4 and shape[0] == batch:
        _, a, b, c = shape
        # inputs are square, so maps are square: (B, H, W, C) shows as a == b != c
        if a == b != c:
            return Layout("conv", n_units=c, n_positions=a * b, grid=(a, b), channels_last=True)
        return Layout("conv", n_units=a, n_positions=b * c, grid=(b, c))
    if len(shape) == 3:
        seq_first = shape[0] != batch and shape[1] == batch
        t, d = (shape[0], shape[2]) if seq_first else (shape[1], shape[2])
        if shape[0] != batch and not seq_first:
            return None
        if tokens is not None:
            n_patch = tokens.grid[0] * tokens.grid[1]
            if t == tokens.n_prefix + n_patch:
                return Layout("tokens", d, t, tokens.grid, tokens.cls_index, tokens.register_indices,
                              seq_first)
            if t == n_patch:  # e.g. LLaVA projector output: patches only
                return Layout("tokens", d, t, tokens.grid, None, (), seq_first)
            # some other sequence (attention-pool queries...): do not invent a grid for it
            return Layout("tokens", d, t, None, None, (), seq_first)
        side = int(round(t ** 0.5))
        if side * side == t:
            return Layout("tokens", d, t, (side, side), None, (), seq_first)
        if side * side == t - 1:  # a CLS token in front, no adapter info
            return Layout("tokens", d, t, (side, side), 0, (), seq_first)
        return Layout("tokens", d, t, None, None, (), seq_first)
    if len(shape) == 2 and shape[0] == batch:
        return Layout("vector", n_units=shape[1], n_positions=1)
    return None
