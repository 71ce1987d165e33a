"""The shard loop: one streaming pass of a model over (a shard of) a probe set, shared by `record`
and the second-order lens.

    decode a batch (worker processes) -> drop byte-identical copies -> job.step(...) -> feed the
    job's accumulators and write its per-image rows -> checkpoint now and then -> repeat

What is computed per batch is the job's business (`ShardJob`: record pools hook outputs, the lens
computes factored effects); everything else is here once: shard order, decoding, dedup, progress,
the checkpoint that makes a killed process resume to exactly the uninterrupted result, and the rows
written in shard order for the merge. A batch is committed whole or not at all: the accumulators,
rows, digests and progress of a checkpoint always describe the same images.

The loop does not know where it runs. It reads and writes its shard only through a `ShardFiles`
(run/storage.py), and a `ShardTask` holds everything one shard needs as data, so an engine can call
`task.run()` in this process (`run_tasks`, the default) or on another machine that sees the run
directory (a Ray engine: neuronatlas/engines/). The merge of the shards is the user's
(recording/merge.py for `record`, lens/compute.py for the lens).
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from .. import run as rundir
from ..data import iter_batches, open_probe
from ..data.probe import ProbeSet
from ..errors import DiskFullError, UserError
from ..faults import fault_point
from .progress import Progress


def shard_indices(n_images: int, shard: int, n_shards: int, mode: str) -> np.ndarray:
    """Probe indices of one shard, ascending. Contiguous blocks or every n-th image."""
    if mode == "strided":
        return np.arange(shard, n_images, n_shards, dtype=np.int64)
    return np.array_split(np.arange(n_images, dtype=np.int64), n_shards)[shard]


@dataclass
class ShardProgress:
    position: int = 0  # shard indices consumed so far
    n_ok: int = 0
    failed: list = field(default_factory=list)  # [probe index, reason]
    duplicates: list = field(default_factory=list)  # [probe index, index of the first copy]
    complete: bool = False

    def to_json(self, n_digests: int) -> dict:
        return {"position": self.position, "n_ok": self.n_ok, "failed": self.failed,
                "duplicates": self.duplicates, "complete": self.complete, "n_digests": n_digests}


@dataclass(frozen=True)
class LoopOptions:
    batch_size: int = 32
    num_workers: int | None = None  # decoding processes; None = min(4, cores)
    dedup: bool = True  # byte-identical images are computed once (later copies: duplicates)
    checkpoint_seconds: float = 60.0
    checkpoint_every: int | None = None  # also checkpoint every N batches


class ShardJob:
    """What a user of the loop supplies. Override `step`, `accumulators` and, for per-image rows
    kept on disk, `row_widths`; `attached()` brackets the whole pass (e.g. registers hooks)."""

    label = "pass"  # progress-bar text
    transform: Callable = None  # PIL image -> input tensor, for the decoders

    def accumulators(self, states: dict[str, dict] | None) -> dict:
        """Fresh accumulators (states None) or the checkpointed ones, by output name."""
        return {}

    def row_widths(self) -> dict[str, int]:
        """Outputs written to disk per image (name -> width), in shard order."""
        return {}

    def step(self, pixels: torch.Tensor, probe: ProbeSet, indices: np.ndarray) -> dict:
        """{output name: (B, width) tensor} for the decoded images `indices` (pixels on CPU)."""
        raise NotImplementedError

    def attached(self):
        return nullcontext()


def run_shard(job: ShardJob, probe: ProbeSet, indices: np.ndarray, files: "rundir.ShardFiles",
              options: LoopOptions = LoopOptions(), show_progress: bool = False) -> ShardProgress:
    """Run (or resume, or skip when finished) one shard: the probe images `indices`, ascending.
    The shard is locked meanwhile: a second process on the same shard is refused at once."""
    files.create()
    with files.lock():
        return _run_shard(job, probe, indices, files, options, show_progress)


def _run_shard(job, probe, indices, files, options, show_progress) -> ShardProgress:
    ck = files.load_checkpoint()
    if ck is None:
        accs, prog, n_digests = job.accumulators(None), ShardProgress(), 0
    else:
        states, saved = ck
        n_digests = saved.pop("n_digests")
        accs, prog = job.accumulators(states), ShardProgress(**saved)
    if prog.complete:
        return prog
    seen = {bytes(r["digest"]): int(r["index"]) for r in files.read_digests()[:n_digests]}
    digest_log = files.open_digests(n_digests)
    writers = {name: files.rows_writer(name, len(indices), width)
               for name, width in job.row_widths().items()}

    def checkpoint():
        for w in writers.values():
            w.flush()
        digest_log.flush()
        files.save_checkpoint({n: a.state() for n, a in accs.items()}, prog.to_json(len(seen)))
        fault_point("shard.checkpoint")

    bar = Progress(f"{job.label} shard {files.shard}/{files.n_shards}", len(indices), prog.position,
                   enabled=show_progress)
    last_ck, n_batches = time.monotonic(), 0
    try:
        with job.attached():
            for batch in iter_batches(probe, job.transform, indices[prog.position:],
                                      options.batch_size, options.num_workers):
                keep, new_seen, dups = _dedup(batch, seen, options.dedup)
                outputs = _step(job, probe, batch, keep) if len(keep) else {}
                # Everything for this batch is computed and valid: commit it.
                idx_keep = torch.as_tensor(batch.indices[keep])
                for name, acc in accs.items():
                    if name in outputs:
                        acc.update(outputs[name], idx_keep.to(outputs[name].device))
                if writers:
                    _write_rows(writers, indices, batch, keep, outputs, prog.position)
                for idx, digest in new_seen:
                    seen[digest] = idx
                if new_seen:
                    digest_log.write(np.array(new_seen, rundir.DIGEST_RECORD).tobytes())
                span = len(batch.indices) + len(batch.failed)
                prog.failed += [[int(i), r] for i, r in batch.failed]
                prog.duplicates += dups
                prog.n_ok += len(keep)
                prog.position += span
                bar.advance(span)
                n_batches += 1
                fault_point("shard.batch")  # committed in memory, not yet checkpointed
                every = options.checkpoint_every
                if (every and n_batches % every == 0) or \
                        time.monotonic() - last_ck > options.checkpoint_seconds:
                    checkpoint()
                    last_ck = time.monotonic()
        if prog.position != len(indices):
            raise RuntimeError(f"loader returned {prog.position} of {len(indices)} images")
        prog.complete = True
        checkpoint()
        fault_point("shard.done")
    except DiskFullError:
        raise
    except UserError:
        checkpoint()  # keep everything committed before the bad batch
        raise
    finally:
        bar.close()
        digest_log.close()
        for w in writers.values():
            w.close()
    return prog


def _dedup(batch, seen: dict, dedup: bool):
    """Positions (in batch) to compute, new digests, and duplicates [index, first index]."""
    keep, new_seen, dups = [], [], []
    batch_seen: dict[bytes, int] = {}
    for j, (idx, digest) in enumerate(zip(batch.indices.tolist(), batch.digests)):
        first = seen.get(digest, batch_seen.get(digest)) if dedup else None
        if first is not None:
            dups.append([idx, first])
            continue
        batch_seen[digest] = idx
        keep.append(j)
        new_seen.append((idx, digest))
    return np.asarray(keep, dtype=np.int64), new_seen, dups


def _step(job: ShardJob, probe, batch, keep: np.ndarray) -> dict:
    pixels = batch.pixels if len(keep) == len(batch.indices) else \
        batch.pixels[torch.as_tensor(keep)]  # no copy in the usual all-kept case
    return job.step(pixels, probe, batch.indices[keep])


def _write_rows(writers, indices, batch, keep, outputs, start: int) -> None:
    """Rows of this batch at their shard positions; failed and duplicate images stay NaN."""
    span = len(batch.indices) + len(batch.failed)
    pos = np.searchsorted(indices[start:start + span], batch.indices[keep])
    for name, writer in writers.items():
        block = np.full((span, writer.n_units), np.nan, dtype=np.float32)
        if name in outputs:
            block[pos] = outputs[name].float().cpu().numpy()
        writer.write(start, block)


# -- shards as data, and where they run -------------------------------------------------------------
@dataclass
class ShardTask:
    """One shard of a pass as data: `run()` does it wherever it is called. `open_job` builds the
    job (the model, its hooks) in the process that runs the shard."""

    open_job: Callable[[], ShardJob]
    probe: ProbeSet | str
    indices: np.ndarray
    files: "rundir.ShardFiles"
    options: LoopOptions = LoopOptions()

    def run(self, show_progress: bool = False) -> ShardProgress:
        probe = self.probe if isinstance(self.probe, ProbeSet) else open_probe(self.probe)
        return run_shard(self.open_job(), probe, self.indices, self.files, self.options,
                         show_progress)


def run_tasks(tasks: list[ShardTask], engine=None, show_progress: bool = False) -> list:
    """Run shard tasks: here, one after the other (engine None), or with `engine.run(tasks)`."""
    if engine is not None:
        return engine.run(tasks, show_progress=show_progress)
    return [t.run(show_progress) for t in tasks]
