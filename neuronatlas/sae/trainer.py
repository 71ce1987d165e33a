"""Train an SAE on a stream of activation rows: seeded, checkpointed, resumable to the same bits.

The loop is: chunk of rows from the source -> shuffle buffer -> training steps. Checkpoints are taken
only between chunks (never in the middle of one), and hold everything the rest of the run depends
on: the weights, Adam's moments, the buffer's rows and generator, the dead-feature counters, the epoch
and the cursor into it. A run killed at any point and rerun from its last checkpoint therefore
computes exactly what the uninterrupted run computes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import UserError
from ..faults import fault_point
from .architectures import build_sae
from .base import SparseAutoencoder
from .buffer import ShuffleBuffer, geometric_median
from .config import SAEConfig, TrainConfig

CHECKPOINT = "checkpoint.pt"


@dataclass
class TrainState:
    step: int = 0
    epoch: int = 0
    cursor: int = 0
    initialised: bool = False
    checkpoints: int = 0
    log: list = field(default_factory=list)  # one dict per checkpoint: step, loss, mse, l0, dead


class Trainer:
    def __init__(self, sae_cfg: SAEConfig, cfg: TrainConfig, source, out: Path | None,
                 show_progress: bool = False):
        self.sae_cfg, self.cfg, self.source, self.out = sae_cfg, cfg, source, out
        self.show_progress = show_progress
        self.sae: SparseAutoencoder = build_sae(sae_cfg, seed=cfg.seed)
        self.opt = torch.optim.Adam(self.sae.parameters(), lr=cfg.lr)
        self.buffer = ShuffleBuffer(cfg.buffer_tokens, sae_cfg.d_in, cfg.batch_tokens, seed=cfg.seed)
        self.since_fired = torch.zeros(sae_cfg.d_sae, dtype=torch.int64)
        self.state = TrainState()
        self._last = {"loss": float("nan"), "mse": float("nan"), "l0": float("nan")}

    # -- checkpoints --------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path | None:
        return None if self.out is None else self.out / CHECKPOINT

    def save_checkpoint(self) -> None:
        if self.out is None:
            return
        self.state.checkpoints += 1
        blob = {"sae": self.sae.state_dict(), "opt": self.opt.state_dict(),
                "buffer": self.buffer.state(), "since_fired": self.since_fired,
                "state": self.state.__dict__, "sae_config": self.sae_cfg.to_json(),
                "train_config": self.cfg.to_json()}
        tmp = self.checkpoint_path.with_name(CHECKPOINT + ".tmp")
        torch.save(blob, tmp)
        os.replace(tmp, self.checkpoint_path)  # a kill mid-save keeps the previous checkpoint
        fault_point("sae.checkpoint")  # tests kill the process here (NEURONATLAS_FAULT)

    def try_resume(self) -> bool:
        path = self.checkpoint_path
        if path is None or not path.exists():
            return False
        try:
            blob = torch.load(path, weights_only=False)
        except Exception as e:  # a damaged file: say which, keep it for inspection
            raise UserError(f"checkpoint {path} cannot be read ({type(e).__name__}): delete it to "
                            f"train again from the start") from None
        if blob["sae_config"] != self.sae_cfg.to_json() or blob["train_config"] != self.cfg.to_json():
            raise UserError(f"{self.out} holds a training run with other settings: pass another "
                            f"--out, or the same options to resume it")
        self.sae.load_state_dict(blob["sae"])
        self.opt.load_state_dict(blob["opt"])
        self.buffer.load_state(blob["buffer"])
        self.since_fired = blob["since_fired"]
        self.state = TrainState(**blob["state"])
        return True

    # -- the loop -----------------------------------------------------------------------------
    def _initialise(self, rows: torch.Tensor) -> None:
        """Input scale to mean norm sqrt(d_in); b_dec at the geometric median of the scaled rows."""
        mean_norm = float(rows.norm(dim=1).mean())
        if mean_norm == 0:
            raise UserError("every activation row is zero at this layer: pick another --layer")
        with torch.no_grad():
            self.sae.scale.fill_(self.sae_cfg.d_in ** 0.5 / mean_norm)
            self.sae.b_dec.copy_(geometric_median(rows * self.sae.scale))
        self.state.initialised = True

    def _step(self, x: torch.Tensor) -> None:
        dead = self.since_fired >= self.cfg.dead_after
        loss, info = self.sae.training_loss(x, dead)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.sae.remove_parallel_gradient()
        self.opt.step()
        self.sae.normalize_decoder()
        self.since_fired += len(x)
        self.since_fired[info["fired"]] = 0
        self.state.step += 1
        self._last = {"loss": float(loss.detach()), "mse": float(info["mse"]), "l0": float(info["l0"])}

    def _train_on(self, ready: list[torch.Tensor]) -> None:
        if ready and not self.state.initialised:
            self._initialise(torch.cat(ready))
        for x in ready:
            self._step(x)

    def dead_fraction(self) -> float:
        return float((self.since_fired >= self.cfg.dead_after).float().mean())

    def _log_entry(self) -> dict:
        return {"step": self.state.step, **self._last, "dead": self.dead_fraction()}

    def run(self) -> SparseAutoencoder:
        self.try_resume()
        total = self.cfg.epochs * self.source.n_items
        bar = _Bar(total, self.state.epoch * self.source.n_items + self.state.cursor,
                   self.show_progress)
        last_ck = self.state.step
        try:
            while self.state.epoch < self.cfg.epochs:
                for rows, consumed in self.source.chunks(self.cfg.seed, self.state.epoch,
                                                         self.state.cursor):
                    self._train_on(list(self.buffer.push(rows)))
                    self.state.cursor += consumed
                    bar.update(consumed, self._last, self.dead_fraction())
                    if self.state.step - last_ck >= self.cfg.checkpoint_every:
                        self.state.log.append(self._log_entry())
                        self.save_checkpoint()
                        last_ck = self.state.step
                self._train_on(list(self.buffer.drain()))
                self.state.epoch, self.state.cursor = self.state.epoch + 1, 0
                self.state.log.append(self._log_entry())
                self.save_checkpoint()
                last_ck = self.state.step
        finally:
            bar.close()
        if not self.state.initialised:
            raise UserError(f"the probe set gave fewer rows than one training batch "
                            f"({self.cfg.batch_tokens}): lower --batch-tokens or use more images")
        self.sae.eval()
        return self.sae


class _Bar:
    """Progress over images (or rows) with the loss, L0 and dead fraction of the latest step."""

    def __init__(self, total: int, completed: int, enabled: bool):
        self._bar = None
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._bar = Progress(TextColumn("sae"), BarColumn(), MofNCompleteColumn(),
                             TextColumn("{task.fields[stats]}"), TimeRemainingColumn(),
                             console=Console(stderr=True))
        self._bar.start()
        self._task = self._bar.add_task("sae", total=total, completed=completed, stats="")

    def update(self, n: int, last: dict, dead: float) -> None:
        if self._bar is not None:
            stats = f"loss {last['loss']:.4g}  L0 {last['l0']:.1f}  dead {dead:.1%}"
            self._bar.update(self._task, advance=n, stats=stats)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
