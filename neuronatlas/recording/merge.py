"""Merge the shards of a run into its final tables and arrays.

Shards may have run on different machines; each left a complete checkpoint in RUN/partials/. The merge
is exact (bit for bit against one pass) for every accumulator: top/bottom-k, min/max, counts,
histograms, and mean/std (exact integer sums, recording/exact_sum.py).

The merge is idempotent: every output is written under a temporary name and renamed, run.json is
marked complete last, and the shards' inputs are deleted only after that. A merge killed at any step
(the named `fault_point`s below, exercised by tests/reliability/) is finished by the next one.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import numpy as np

from .. import run as rundir
from ..errors import UserError
from ..faults import fault_point
from .accumulator import LayerAccumulator
from .loop import shard_indices
from .stats import hist_edges

QUANTILES = (0.01, 0.5, 0.99)


def shard_status(out: Path) -> list[tuple[int, dict | None]]:
    """(shard, progress or None) for every shard the run expects."""
    meta = rundir.read_meta(out)
    n_shards, _mode = meta["key"]["sharding"]
    status = []
    for s in range(n_shards):
        ck = rundir.load_checkpoint(rundir.partial_dir(out, s, n_shards))
        status.append((s, ck[1] if ck else None))
    return status


def finalize(out: str | Path, require: bool = False):
    """Write the final run once every shard is complete; returns the Run, or None if shards are
    missing (an error instead when `require`)."""
    out = Path(out)
    rundir.read_meta(out)  # not a run: say so before taking a lock in it
    try:
        with rundir.merge_lock(out):
            return _finalize(out, require)
    except rundir.RunLocked:
        if require:
            raise
        return None  # another process is merging this run right now: it finishes it


def _finalize(out: Path, require: bool):
    meta = rundir.read_meta(out)
    if meta.get("status") == "complete":
        rundir.remove_partial_acts(out)  # a merge killed after marking the run complete
        return rundir.open_run(out)
    status = shard_status(out)
    missing = [s for s, prog in status if not (prog and prog["complete"])]
    if missing:
        if require:
            raise UserError(f"cannot merge {out}: shards {missing[:10]} of {len(status)} are not "
                            f"finished; run `neuronatlas record ... --shard I/{len(status)}` for them")
        return None
    n_shards, mode = meta["key"]["sharding"]
    n_images = meta["key"]["probe"]["n_images"]
    layers = [l["name"] for l in meta["layers"]]
    by_name = {l["name"]: l for l in meta["layers"]}

    merged: dict[str, LayerAccumulator] = {}
    progress = []
    for s in range(n_shards):
        states, prog = rundir.load_checkpoint(rundir.partial_dir(out, s, n_shards))
        progress.append(prog)
        for layer in layers:
            acc = LayerAccumulator.from_state(states[layer])
            if layer in merged:
                merged[layer].merge(acc)
            else:
                merged[layer] = acc

    fault_point("merge.start")
    images = _image_table(out, progress, n_shards)
    units = []
    for layer in layers:
        acc = merged[layer]
        rundir.write_layer_arrays(out, layer, {**acc.extremes.state(), **acc.histogram.state()})
        fault_point("merge.layer_arrays")
        units.append(_unit_rows(layer, acc, (by_name[layer].get("basis") or {}).get("name")))
        if meta["key"]["save_acts"] and not rundir.final_acts_path(out, layer).exists():
            # present only when a killed merge already renamed it into place (complete)
            _assemble_acts(out, layer, acc.n_units, n_images, n_shards, mode)
            fault_point("merge.acts")
    import pandas as pd

    rundir.write_table(out, "units", pd.concat(units, ignore_index=True))
    fault_point("merge.units")
    rundir.write_table(out, "images", images)
    fault_point("merge.images")
    rundir.write_hist_edges(out, hist_edges())
    counts = images["status"].value_counts()
    meta["status"] = "complete"
    meta["finished"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    meta["summary"] = {"n_images": n_images, "n_ok": int(counts.get("ok", 0)),
                       "n_unreadable": int(counts.get("unreadable", 0)),
                       "n_duplicate": int(counts.get("duplicate", 0))}
    rundir.write_meta(out, meta)
    fault_point("merge.complete")
    rundir.remove_partial_acts(out)
    return rundir.open_run(out)


def _unit_rows(layer: str, acc: LayerAccumulator, basis: str | None = None):
    import pandas as pd

    st = acc.stats
    n = acc.n_units
    q = acc.quantiles(list(QUANTILES))
    count = max(st.count, 1)
    return pd.DataFrame({
        "unit": [rundir.unit_id(layer, i, basis) for i in range(n)], "layer": layer,
        "index": np.arange(n),
        "count": st.count, "mean": st.mean.numpy(), "std": st.std.numpy(),
        "min": st.min.numpy(), "max": st.max.numpy(),
        "frac_positive": st.n_positive.numpy() / count,
        **{f"q{int(round(p * 100)):02d}": q[:, j] for j, p in enumerate(QUANTILES)},
    })


def _image_table(out: Path, progress: list[dict], n_shards: int):
    import pandas as pd

    images = rundir.read_table(out, "images")
    n = len(images)
    status = np.full(n, "pending", dtype=object)
    reason = np.full(n, None, dtype=object)
    dup_of = np.full(n, -1, dtype=np.int64)
    digest = np.full(n, None, dtype=object)
    for s, prog in enumerate(progress):
        recs = rundir.read_digests(rundir.partial_dir(out, s, n_shards))[:prog["n_digests"]]
        status[recs["index"]] = "ok"
        digest[recs["index"]] = [bytes(d).hex() for d in recs["digest"]]
        for idx, why in prog["failed"]:
            status[idx], reason[idx] = "unreadable", why
        for idx, first in prog["duplicates"]:
            status[idx], dup_of[idx] = "duplicate", first
    images["status"], images["reason"] = status, reason
    images["duplicate_of"], images["digest"] = dup_of, digest
    return images


def _assemble_acts(out: Path, layer: str, n_units: int, n_images: int, n_shards: int, mode: str):
    parts = [rundir.partial_acts_path(rundir.partial_dir(out, s, n_shards), layer)
             for s in range(n_shards)]
    if n_shards == 1:  # the shard's rows are already in probe order: link, don't copy
        rundir.link_final_acts(out, layer, parts[0])
        return
    writer = rundir.final_acts_writer(out, layer, n_images, n_units)
    try:
        for s, part in enumerate(parts):
            rows = np.load(part, mmap_mode="r")
            idx = shard_indices(n_images, s, n_shards, mode)
            step = max(1, (64 << 20) // (4 * n_units))  # ~64 MB at a time
            for a in range(0, len(idx), step):
                block, where = np.asarray(rows[a:a + step]), idx[a:a + step]
                if mode == "contiguous":
                    writer.write(int(where[0]), block)
                else:
                    for r, i in zip(block, where):
                        writer.write(int(i), r[None])
            del rows
            fault_point("merge.acts_shard")
        writer.flush()
    finally:
        writer.close()
    rundir.commit_final_acts(out, layer)
