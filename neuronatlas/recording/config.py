"""The recording configuration: a frozen dataclass that round-trips through JSON."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields

from ..errors import UserError


@dataclass(frozen=True)
class RecordConfig:
    layers: tuple[str, ...]  # glob patterns over hook-point names
    pooling: str | None = None  # None: each layer's documented default (conv mean, ViT patch_mean)
    k: int = 20  # exemplars kept per unit, at each end
    batch_size: int = 32
    num_workers: int | None = None  # decoding processes; None = min(4, cores)
    save_acts: bool = False  # also write the pooled (images x units) matrix
    dedup: bool = True  # record byte-identical images once
    shard: int = 0
    n_shards: int = 1
    shard_mode: str = "contiguous"  # or "strided"
    seed: int = 0  # seeds random weights and anything random
    weights: str | None = None  # local weights file / dir
    random_weights: bool = False
    device: str | None = None  # None: cuda if available, else cpu
    checkpoint_seconds: float = 60.0
    checkpoint_every: int | None = None  # also checkpoint every N batches (tests, tiny runs)
    stop_early: bool = True  # skip the layers after the last recorded one

    def __post_init__(self):
        if self.k < 1:
            raise UserError(f"--k must be at least 1 (got {self.k})")
        if self.batch_size < 1:
            raise UserError(f"--batch-size must be at least 1 (got {self.batch_size})")
        if not 0 <= self.shard < self.n_shards:
            raise UserError(f"shard {self.shard}/{self.n_shards} is out of range: use --shard I/N "
                            f"with 0 <= I < N")
        if self.shard_mode not in ("contiguous", "strided"):
            raise UserError(f"--shard-mode must be contiguous or strided (got {self.shard_mode})")
        if not self.layers:
            raise UserError("no layers given: pass --layers PATTERN (see `neuronatlas layers MODEL`)")

    def to_json(self) -> dict:
        d = asdict(self)
        d["layers"] = list(self.layers)
        return d

    @classmethod
    def from_json(cls, d: dict) -> "RecordConfig":
        names = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in names}
        d["layers"] = tuple(d["layers"])
        return cls(**d)

    def dumps(self) -> str:
        return json.dumps(self.to_json())


def parse_shard(text: str) -> tuple[int, int]:
    """'I/N' -> (I, N)."""
    try:
        i, n = (int(x) for x in str(text).split("/"))
    except ValueError:
        raise UserError(f"--shard must look like I/N, e.g. 0/4 (got '{text}')") from None
    if n < 1 or not 0 <= i < n:
        raise UserError(f"--shard {text} is out of range: use I/N with 0 <= I < N")
    return i, n
