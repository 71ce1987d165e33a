"""Where training rows come from: a model's hook over a probe set, or a tensor (tests, caches).

A source yields chunks (rows, consumed) for one epoch from a cursor; `consumed` counts the items
(images, or rows of a tensor) each chunk used up, so a checkpoint can name the cursor and a resumed
run restarts from exactly there. Each epoch visits the items in its own seeded order.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


class ModelSource:
    def __init__(self, target, probe, point, tokens: str, image_batch: int,
                 num_workers: int | None = 0):
        from .activations import positions

        self.target, self.probe, self.point = target, probe, point
        self.tokens, self.image_batch, self.num_workers = tokens, image_batch, num_workers
        pos = positions(point, tokens)
        self.rows_per_item = len(range(point.layout.n_positions)[pos]) if isinstance(pos, slice) \
            else len(pos)
        self.n_items = len(probe)
        self.d_in = point.n_units

    def chunks(self, seed: int, epoch: int, cursor: int) -> Iterator[tuple[torch.Tensor, int]]:
        from .activations import stream_rows

        order = epoch_order(self.n_items, seed, epoch)[cursor:]
        yield from stream_rows(self.target, self.probe, self.point, self.tokens, order,
                               self.image_batch, self.num_workers)


class TensorSource:
    """Rows of an in-memory (N, d) tensor, `chunk` rows at a time."""

    def __init__(self, x: torch.Tensor, chunk: int = 256):
        self.x, self.chunk = x.to(torch.float32), chunk
        self.n_items, self.d_in, self.rows_per_item = len(x), x.shape[1], 1

    def chunks(self, seed: int, epoch: int, cursor: int) -> Iterator[tuple[torch.Tensor, int]]:
        order = torch.as_tensor(epoch_order(self.n_items, seed, epoch))
        for i in range(cursor, self.n_items, self.chunk):
            idx = order[i:i + self.chunk]
            yield self.x[idx], len(idx)
