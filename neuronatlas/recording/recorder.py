"""One streaming pass over (a shard of) a probe set: hooks -> pooling -> extremes + statistics.

Memory is flat in the number of images: per layer we hold (units x k) extremes and (units x bins)
histograms; pooled rows, when saved, go straight to disk. Progress is checkpointed atomically, so a
killed process resumes where its last checkpoint left it and ends with the same result.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .. import run as rundir
from ..data import open_probe
from ..errors import UserError
from ..models.target import HookPoint, Target
from .accumulator import LayerAccumulator
from .config import RecordConfig
from .hooks import Capture
from .loop import LoopOptions, ShardJob, ShardProgress, ShardTask, run_tasks, shard_indices  # noqa: F401
from .basis import UnitView, check_encoder, encoder_from_state
from .meta import build_meta, listing_table
from .pooling import check_pooling


class RecordJob(ShardJob):
    """`record`'s step of the shard loop: hooks pool every chosen layer inside the forward pass (in
    its unit basis: recording/basis.py), the pooled values feed one LayerAccumulator per layer (and,
    with save_acts, the rows on disk)."""

    label = "recording"

    def __init__(self, target: Target, views: list[UnitView], poolings: dict[str, str],
                 cfg: RecordConfig, out: Path):
        self.target, self.views, self.poolings, self.cfg, self.out = target, views, poolings, cfg, out
        self.points = [v.point for v in views]
        self.device = target.device
        self.transform = target.preprocess.transform()
        # Pool inside the hooks: nothing later in the forward pass can alter the values.
        reduce = {v.name: (lambda o, v=v: v.pooled(o, poolings[v.name]).float()) for v in views}
        self.capture = Capture(target, self.points, cfg.stop_early, reduce)

    def accumulators(self, states):
        if states is None:
            return {v.name: LayerAccumulator(v.n_units, self.cfg.k, self.device) for v in self.views}
        return {v.name: LayerAccumulator.from_state(states[v.name], self.device) for v in self.views}

    def row_widths(self) -> dict[str, int]:
        return {v.name: v.n_units for v in self.views} if self.cfg.save_acts else {}

    def attached(self):
        return self.capture.attached()

    def step(self, pixels, probe, indices) -> dict[str, torch.Tensor]:
        pixels = pixels.to(self.device, non_blocking=True)
        outs = self.capture.run(self.target.make_batch(pixels, indices, probe))
        for p in self.points:
            _check_finite(outs[p.name], p.name, indices, self.out)
        return outs


def _check_finite(values: torch.Tensor, layer: str, indices: np.ndarray, out: Path) -> None:
    # One reduction; the full check only when it fails (a finite sum can also overflow).
    bad = None if torch.isfinite(values.sum()) else ~torch.isfinite(values)
    if bad is not None and bad.any():
        units = torch.nonzero(bad.any(0)).flatten().tolist()
        imgs = np.asarray(indices)[bad.any(1).cpu().numpy()].tolist()
        shown = ", ".join(f"{layer}:{u}" for u in units[:5])
        raise UserError(
            f"non-finite activations (NaN/inf) in {len(units)} units ({shown}"
            f"{', ...' if len(units) > 5 else ''}) on probe images {imgs[:5]}: check the "
            f"model weights and input normalisation; images recorded before them are kept "
            f"in {out}")


def loop_options(cfg: RecordConfig) -> LoopOptions:
    return LoopOptions(batch_size=cfg.batch_size, num_workers=cfg.num_workers, dedup=cfg.dedup,
                       checkpoint_seconds=cfg.checkpoint_seconds,
                       checkpoint_every=cfg.checkpoint_every)


def record(model: str | Target, data, out: str | Path, config: RecordConfig | None = None, *,
           show_progress: bool = False, engine=None, basis: dict | None = None, **options):
    """Record `model`'s units over `data` into the run directory `out`.

    Returns the finished `Run`, or None when this was one shard and others are still missing.
    Options are the fields of `RecordConfig` (layers, pooling, k, batch_size, save_acts, shard...).
    `engine` runs the shard task (default: here, in this process; see recording/loop.py).
    `basis` {layer: encoder} records those layers' units in an encoder's basis (features as units,
    ids LAYER:INDEX@NAME; recording/basis.py); a run recorded with one finds it again on resume.
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
    rundir.check_run_path(out)
    views = unit_views(points, basis if basis is not None else stored_basis(out))
    with rundir.setup_lock(out):  # shards starting together create these files once
        meta = rundir.create_or_verify(out, build_meta(target, probe, views, poolings, config))
        if meta.get("status") != "complete":
            if not rundir.has_table(out, "images"):
                rundir.write_table(out, "images", listing_table(probe))
            for v in views:
                if v.encoder is not None and not rundir.basis_path(out, v.name).exists():
                    rundir.write_basis(out, v.name, v.encoder.to_json(), v.encoder.state())
            if target.truth is not None:  # synthetic units: their true labels
                rundir.write_truth(out, target.truth)
    if meta.get("status") == "complete":
        return finalize(out)  # returns the run (and tidies up after a merge killed at its end)
    task = ShardTask(lambda: RecordJob(target, views, poolings, config, out), probe,
                     shard_indices(len(probe), config.shard, config.n_shards, config.shard_mode),
                     rundir.ShardFiles(out, config.shard, config.n_shards), loop_options(config))
    run_tasks([task], engine, show_progress)  # each shard under its lock (loop.run_shard)
    return finalize(out)


def unit_views(points: list[HookPoint], basis: dict | None) -> list[UnitView]:
    """Each chosen point in its unit basis (identity unless `basis` names it)."""
    basis = dict(basis or {})
    names = [p.name for p in points]
    unknown = [name for name in basis if name not in names]
    if unknown:
        raise UserError(f"basis for {', '.join(unknown)}: not among the recorded layers "
                        f"({', '.join(names[:8])}); add it to --layers or fix the name")
    for p in points:
        if p.name in basis:
            check_encoder(basis[p.name], p)
    return [UnitView(p, basis.get(p.name)) for p in points]


def stored_basis(out: Path) -> dict:
    """The encoders an existing run at `out` was recorded with (none for a new run)."""
    if not rundir.is_run(out):
        return {}
    layers = rundir.read_meta(out).get("key", {}).get("basis") or {}
    return {layer: encoder_from_state(*rundir.read_basis(out, layer)) for layer in layers}
