"""A shuffle buffer: bounded memory between the model's activation stream and the training steps.

Rows of one image are highly correlated (neighbouring patches), so training on them in stream order
biases every step. The buffer holds up to `capacity` rows; when full it shuffles them (seeded) and
hands out the first half as training batches, keeping the rest to mix with what comes next. Its whole
state (rows held and the generator) is saved in checkpoints, so a resumed run draws the same batches.
"""

from __future__ import annotations

import torch


class ShuffleBuffer:
    def __init__(self, capacity: int, d: int, batch: int, seed: int = 0):
        self.capacity, self.batch = capacity, batch
        self.rows = torch.empty(capacity, d)
        self.count = 0
        self.gen = torch.Generator().manual_seed(seed)

    def push(self, x: torch.Tensor):
        """Add rows; yield the training batches that become ready."""
        x = x.reshape(-1, self.rows.shape[1]).to(torch.float32)
        while len(x):
            take = min(len(x), self.capacity - self.count)
            self.rows[self.count:self.count + take] = x[:take]
            self.count += take
            x = x[take:]
            if self.count == self.capacity:
                yield from self._release(self.capacity // 2)

    def drain(self):
        """End of the stream: every remaining full batch (a last partial batch is dropped)."""
        yield from self._release(self.count)

    def _release(self, n_out: int):
        perm = torch.randperm(self.count, generator=self.gen)
        self.rows[:self.count] = self.rows[perm]
        n_out = (n_out // self.batch) * self.batch
        out = self.rows[:n_out].clone()
        keep = self.count - n_out
        self.rows[:keep] = self.rows[n_out:self.count].clone()
        self.count = keep
        for i in range(0, n_out, self.batch):
            yield out[i:i + self.batch]

    def state(self) -> dict:
        return {"rows": self.rows[:self.count].clone(), "gen": self.gen.get_state()}

    def load_state(self, state: dict) -> None:
        n = len(state["rows"])
        self.rows[:n] = state["rows"]
        self.count = n
        self.gen.set_state(state["gen"])


def geometric_median(x: torch.Tensor, iters: int = 100, tol: float = 1e-6) -> torch.Tensor:
    """The point minimising the sum of distances to the rows of x (Weiszfeld's algorithm).

    Used to initialise b_dec: unlike the mean it is not pulled by the few rows of very large norm
    that transformer activations have.
    """
    x = x.to(torch.float64)
    y = x.mean(0)
    for _ in range(iters):
        w = 1.0 / (x - y).norm(dim=1).clamp_min(1e-12)
        y_new = (w[:, None] * x).sum(0) / w.sum()
        if (y_new - y).norm() <= tol * max(1.0, float(y.norm())):
            y = y_new
            break
        y = y_new
    return y.to(torch.float32)
