"""Pass 1 of the second-order lens on the shared shard loop (recording/loop.py): per image, the
factored effects (coefficients, N x K) go to the shard's rows on disk and into an exact running sum,
so the lens gets what `record` has: shards (`--shard I/N`), checkpoints that resume to the
uninterrupted result, and engines that run a shard elsewhere.

The lens keeps byte-identical copies (no dedup): the mean effect is over every readable image, as
in the reference. The shards' sums merge exactly (recording/exact_sum.py), so the mean coefficient
does not depend on how the images were split.
"""

from __future__ import annotations

import os
from typing import Callable

import numpy as np

from .. import run as rundir
from ..recording.exact_sum import ExactSum
from ..recording.loop import LoopOptions, ShardJob, ShardTask, run_tasks, shard_indices

ROWS = "coefficients"


class EffectsJob(ShardJob):
    """The lens's step: coefficients (B, N * K) float32 per batch of images."""

    def __init__(self, lens, transform: Callable):
        self.lens, self.transform = lens, transform
        self.label = f"second-order effects of {lens.unit_layer}"
        self.width = lens.n_neurons * lens.n_heads

    def accumulators(self, states):
        if states is None:
            return {ROWS: ExactSum(self.width, squares=False)}
        return {ROWS: ExactSum.from_state(states[ROWS])}

    def row_widths(self) -> dict[str, int]:
        return {ROWS: self.width}

    def step(self, pixels, probe, indices):
        co = self.lens.coefficients(pixels.to(self.lens.vit.device))
        return {ROWS: co.coef_BNK.float().reshape(len(indices), -1)}


def shard_files(store: "rundir.SecondOrderStore", shard: int, n_shards: int) -> "rundir.ShardFiles":
    return rundir.ShardFiles(store.dir, shard, n_shards)


def run_effects_shard(lens, target, probe, store, cfg, show_progress: bool, engine=None) -> None:
    """Compute (or resume, or skip when done) this process's shard of pass 1."""
    indices = shard_indices(len(probe), cfg.shard, cfg.n_shards, "contiguous")
    options = LoopOptions(batch_size=cfg.batch_size, num_workers=cfg.num_workers, dedup=False,
                          checkpoint_every=cfg.checkpoint_every)
    transform = target.preprocess.transform()
    task = ShardTask(lambda: EffectsJob(lens, transform), probe, indices,
                     shard_files(store, cfg.shard, cfg.n_shards), options)
    run_tasks([task], engine, show_progress)


def missing_shards(store, n_shards: int) -> list[int]:
    out = []
    for s in range(n_shards):
        ck = shard_files(store, s, n_shards).load_checkpoint()
        if not (ck and ck[1]["complete"]):
            out.append(s)
    return out


def merge_effects(store, n_images: int, n_neurons: int, n_heads: int, n_shards: int):
    """Merge finished shards: the coefficient rows in probe order (moved when there is one shard),
    and (mean coefficient (N, K) float64, n_ok, failed [[index, reason]])."""
    total, n_ok, failed = None, 0, []
    for s in range(n_shards):
        states, prog = shard_files(store, s, n_shards).load_checkpoint()
        acc = ExactSum.from_state(states[ROWS])
        if total is None:
            total = acc
        else:
            total.merge(acc)
        n_ok += prog["n_ok"]
        failed += prog["failed"]
    _assemble_rows(store, n_images, n_neurons * n_heads, n_shards)
    mean = total.mean().reshape(n_neurons, n_heads) if n_ok else np.zeros((n_neurons, n_heads))
    return mean, n_ok, sorted(failed)


def _assemble_rows(store, n_images: int, width: int, n_shards: int) -> None:
    parts = [shard_files(store, s, n_shards).rows_path(ROWS) for s in range(n_shards)]
    if not any(p.exists() for p in parts):
        return  # already assembled (a rerun after a crash in pass 2)
    if n_shards == 1:  # already in probe order: move, don't copy
        os.replace(parts[0], store.coefficients_path)
        return
    writer = rundir.fresh_row_writer(store.coefficients_path, n_images, width)
    try:
        for s, part in enumerate(parts):
            rows = np.load(part, mmap_mode="r")
            start = int(shard_indices(n_images, s, n_shards, "contiguous")[:1].sum())
            step = max(1, (64 << 20) // (4 * width))  # ~64 MB at a time
            for a in range(0, len(rows), step):
                writer.write(start + a, np.asarray(rows[a:a + step]))
            del rows
        writer.flush()
    finally:
        writer.close()
    for part in parts:
        part.unlink()
