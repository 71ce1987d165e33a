"""One streaming pass over (a shard of) a probe set: hooks -> pooling -> extremes + statistics.

Memory is flat in the number of images: per layer we hold (units x k) extremes and (units x bins)
histograms; pooled rows, when saved, go straight to disk. Progress is checkpointed atomically, so a
killed process resumes where its last checkpoint left it and ends with the same result.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .. import run as rundir
from ..data import iter_batches, open_probe
from ..data.probe import ProbeSet
from ..errors import DiskFullError, UserError
from ..models.target import HookPoint, Target
from .accumulator import LayerAccumulator
from .config import RecordConfig
from .hooks import Capture
from .meta import build_meta, listing_table
from .pooling import check_pooling, pool_output
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


class ShardRecorder:
    def __init__(self, target: Target, probe: ProbeSet, points: list[HookPoint],
                 poolings: dict[str, str], out: Path, cfg: RecordConfig, show_progress: bool):
        self.target, self.probe, self.points, self.poolings = target, probe, points, poolings
        self.out, self.cfg, self.show_progress = Path(out), cfg, show_progress
        self.indices = shard_indices(len(probe), cfg.shard, cfg.n_shards, cfg.shard_mode)
        self.pdir = rundir.partial_dir(self.out, cfg.shard, cfg.n_shards)
        self.device = target.device

    def _restore(self):
        ck = rundir.load_checkpoint(self.pdir)
        if ck is None:
            accs = {p.name: LayerAccumulator(p.n_units, self.cfg.k, self.device) for p in self.points}
            return accs, ShardProgress(), 0
        states, prog = ck
        accs = {p.name: LayerAccumulator.from_state(states[p.name], self.device) for p in self.points}
        n_digests = prog.pop("n_digests")
        return accs, ShardProgress(**prog), n_digests

    def run(self) -> ShardProgress:
        self.pdir.mkdir(parents=True, exist_ok=True)
        accs, prog, n_digests = self._restore()
        if prog.complete:
            return prog
        seen = {bytes(r["digest"]): int(r["index"]) for r in rundir.read_digests(self.pdir)[:n_digests]}
        digest_log = rundir.open_digests(self.pdir, n_digests)
        writers = {p.name: rundir.RowWriter(rundir.partial_acts_path(self.pdir, p.name),
                                            len(self.indices), p.n_units)
                   for p in self.points} if self.cfg.save_acts else {}
        # Pool inside the hooks: nothing later in the forward pass can alter the values.
        reduce = {p.name: (lambda out, p=p: pool_output(out, p.layout, self.poolings[p.name]).float())
                  for p in self.points}
        capture = Capture(self.target, self.points, self.cfg.stop_early, reduce)

        def checkpoint():
            for w in writers.values():
                w.flush()
            digest_log.flush()
            rundir.save_checkpoint(self.pdir, {n: a.state() for n, a in accs.items()},
                                   prog.to_json(len(seen)))

        todo = self.indices[prog.position:]
        bar = Progress(f"recording shard {self.cfg.shard}/{self.cfg.n_shards}", len(self.indices),
                       prog.position, enabled=self.show_progress)
        last_ck, n_batches = time.monotonic(), 0
        try:
            with capture.attached():
                for batch in iter_batches(self.probe, self.target.preprocess.transform(), todo,
                                          self.cfg.batch_size, self.cfg.num_workers):
                    keep, new_seen, dups = self._dedup(batch, seen)
                    pooled = self._pool(capture, batch, keep) if len(keep) else {}
                    # Everything for this batch is computed and valid: commit it.
                    idx_keep = torch.as_tensor(batch.indices[keep])
                    for name, values in pooled.items():
                        accs[name].update(values, idx_keep.to(values.device))
                    if writers:
                        self._write_rows(writers, batch, keep, pooled, prog.position)
                    for idx, digest in new_seen:
                        seen[digest] = idx
                    if new_seen:
                        digest_log.write(np.array(new_seen, rundir.DIGEST_RECORD).tobytes())
                    prog.failed += [[int(i), r] for i, r in batch.failed]
                    prog.duplicates += dups
                    prog.n_ok += len(keep)
                    prog.position += len(batch.indices) + len(batch.failed)
                    bar.advance(len(batch.indices) + len(batch.failed))
                    n_batches += 1
                    every = self.cfg.checkpoint_every
                    if (every and n_batches % every == 0) or \
                            time.monotonic() - last_ck > self.cfg.checkpoint_seconds:
                        checkpoint()
                        last_ck = time.monotonic()
            if prog.position != len(self.indices):
                raise RuntimeError(f"loader returned {prog.position} of {len(self.indices)} images")
            prog.complete = True
            checkpoint()
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

    def _dedup(self, batch, seen: dict):
        """Positions (in batch) to record, new digests, and duplicates [index, first index]."""
        keep, new_seen, dups = [], [], []
        batch_seen: dict[bytes, int] = {}
        for j, (idx, digest) in enumerate(zip(batch.indices.tolist(), batch.digests)):
            first = seen.get(digest, batch_seen.get(digest)) if self.cfg.dedup else None
            if first is not None:
                dups.append([idx, first])
                continue
            batch_seen[digest] = idx
            keep.append(j)
            new_seen.append((idx, digest))
        return np.asarray(keep, dtype=np.int64), new_seen, dups

    def _pool(self, capture: Capture, batch, keep: np.ndarray) -> dict[str, torch.Tensor]:
        pixels = batch.pixels if len(keep) == len(batch.indices) else \
            batch.pixels[torch.as_tensor(keep)]  # no copy in the usual all-kept case
        pixels = pixels.to(self.device, non_blocking=True)
        outs = capture.run(self.target.make_batch(pixels, batch.indices[keep], self.probe))
        pooled = {}
        for p in self.points:
            values = outs[p.name]
            # One reduction; the full check only when it fails (a finite sum can also overflow).
            bad = None if torch.isfinite(values.sum()) else ~torch.isfinite(values)
            if bad is not None and bad.any():
                units = torch.nonzero(bad.any(0)).flatten().tolist()
                imgs = batch.indices[keep][bad.any(1).cpu().numpy()].tolist()
                shown = ", ".join(f"{p.name}:{u}" for u in units[:5])
                raise UserError(
                    f"non-finite activations (NaN/inf) in {len(units)} units ({shown}"
                    f"{', ...' if len(units) > 5 else ''}) on probe images {imgs[:5]}: check the "
                    f"model weights and input normalisation; images recorded before them are kept "
                    f"in {self.out}")
            pooled[p.name] = values
        return pooled

    def _write_rows(self, writers, batch, keep, pooled, start: int) -> None:
        """Rows of this batch in shard order; failed and duplicate images stay NaN."""
        span = len(batch.indices) + len(batch.failed)
        pos = np.searchsorted(self.indices[start:start + span], batch.indices[keep])
        for name, values in pooled.items():
            block = np.full((span, values.shape[1]), np.nan, dtype=np.float32)
            block[pos] = values.cpu().numpy()
            writers[name].write(start, block)


def record(model: str | Target, data, out: str | Path, config: RecordConfig | None = None, *,
           show_progress: bool = False, **options):
    """Record `model`'s units over `data` into the run directory `out`.

    Returns the finished `Run`, or None when this was one shard and others are still missing.
    Options are the fields of `RecordConfig` (layers, pooling, k, batch_size, save_acts, shard...).
    """
    from .merge import finalize

    if config is None:
        layers = options.get("layers") or ()
        layers = [layers] if isinstance(layers, str) else list(layers)
        options["layers"] = tuple(p.strip() for spec in layers for p in spec.split(",") if p.strip())
        config = RecordConfig(**options)
    torch.manual_seed(config.seed)
    if isinstance(model, Target):
        target = model
    else:
        from ..models import load_target

        target = load_target(model, weights=config.weights, random_weights=config.random_weights,
                             device=config.device)
    probe = open_probe(data)
    if len(probe) == 0:
        raise UserError(f"probe set {getattr(probe, 'spec', data)} has no images: point --data at "
                        f"a folder, file list, tar shards or dataset that contains images")
    points = target.select(list(config.layers))
    poolings = {p.name: config.pooling or target.default_pooling(p) for p in points}
    for p in points:
        check_pooling(poolings[p.name], p.layout, p.name)
    out = Path(out)
    meta = rundir.create_or_verify(out, build_meta(target, probe, points, poolings, config))
    if meta.get("status") == "complete":
        return finalize(out)  # returns the run (and tidies up after a merge killed at its end)
    if not (out / "images.parquet").exists():
        rundir.write_table(out, "images", listing_table(probe))
    if target.truth is not None:  # synthetic units: their true labels
        rundir.write_truth(out, target.truth)
    ShardRecorder(target, probe, points, poolings, out, config, show_progress).run()
    return finalize(out)
