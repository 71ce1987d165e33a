"""Low-level files of a run directory: atomic writes, run.json and its identity key, shard
checkpoints and image digests, and the final per-layer arrays and tables."""

from __future__ import annotations

import errno
import json
import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..errors import DiskFullError, UserError


FORMAT = "neuronatlas-run"
FORMAT_VERSION = 1
DIGEST_RECORD = np.dtype([("index", "<i8"), ("digest", "V16")])


# -- writing helpers ------------------------------------------------------------------------------
@contextmanager
def disk_errors(what: Path | str, resumable: bool = True):
    """Turn 'out of disk' into one clear line; the previous checkpoint stays intact."""
    try:
        yield
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            tail = " ; the last checkpoint is kept and rerunning the same command resumes from it" \
                if resumable else ""
            raise DiskFullError(f"out of disk space while writing {what}: free some space or choose "
                            f"another --out directory{tail}") from None
        raise


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with disk_errors(path):
        try:
            with open(tmp, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()


def write_json(path: Path, obj: dict) -> None:
    _atomic_write(Path(path), lambda f: f.write(json.dumps(obj, indent=2, sort_keys=False).encode()))


def layer_dir(run: Path, layer: str) -> Path:
    return Path(run) / "layers" / layer


def acts_path(run: Path, layer: str) -> Path:
    """RUN/layers/LAYER/acts.npy: the pooled (images x units) matrix, when recorded."""
    return layer_dir(run, layer) / "acts.npy"


def cache_dir(run: Path, kind: str) -> Path:
    """RUN/cache/KIND/: derived caches of one kind (embeddings, ...), safe to delete."""
    return Path(run) / "cache" / kind


def partial_dir(run: Path, shard: int, n_shards: int) -> Path:
    """ROOT/partials/shard-IIIII-of-NNNNN/ (ROOT: the run, or a lens result's directory)."""
    return Path(run) / "partials" / f"shard-{shard:05d}-of-{n_shards:05d}"


def shard_lock(run: Path | str, shard: int, n_shards: int):
    """RUN/partials/SHARD/lock: held while one process records that shard. Other shards of the same
    run take their own locks, so they still record at the same time. (Here, not in lock.py, which
    knows no run paths: lock.py stays below storage.)"""
    from .lock import RESUME, run_lock

    fix = RESUME + (f"; other shards record at the same time with --shard I/{n_shards}"
                    if n_shards > 1 else "")
    return run_lock(partial_dir(run, shard, n_shards) / "lock", f"{run} (shard {shard}/{n_shards})",
                    fix)


def is_run(path: Path) -> bool:
    """Whether `path` holds a recording (its run.json), finished or not."""
    return (Path(path) / "run.json").exists()


def check_run_path(run: Path) -> None:
    """Refuse a run path that exists but is not a directory, before anything is written."""
    run = Path(run)
    if run.exists() and not run.is_dir():
        raise UserError(f"{run} is a file, not a run directory: pass a new or existing run "
                        f"directory as --out (or move the file away)")
    for parent in run.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"{parent} is a file, so {run} cannot be created: pass another "
                                f"--out path")
            break


# -- identity: never mix two recordings in one directory ------------------------------------------
def create_or_verify(run: Path, meta: dict) -> dict:
    """Create RUN/run.json, or check that the existing one has the same identity key."""
    run = Path(run)
    path = run / "run.json"
    if path.exists():
        old = read_meta(run)
        refuse_other_identity(old, meta, f"{run} already holds a recording",
                              "choose a new --out directory or delete the old run")
        return old
    with disk_errors(run, resumable=False):
        run.mkdir(parents=True, exist_ok=True)
    write_json(path, meta)
    return meta


def refuse_other_identity(old: dict, meta: dict, holder: str, fix: str) -> None:
    """Raise when `old` (what a directory holds) has another identity key than `meta`: two results
    of different models, data or settings are never mixed in one directory."""
    diffs = [k for k in meta["key"] if old["key"].get(k) != meta["key"][k]]
    if diffs:
        field = diffs[0]
        raise UserError(f"{holder} with a different {field} ({_short(old['key'].get(field))} vs "
                        f"{_short(meta['key'][field])}); refusing to mix them: {fix}")


def _short(v) -> str:
    s = json.dumps(v, sort_keys=True)
    return s if len(s) <= 80 else s[:77] + "..."


def write_meta(run: Path, meta: dict) -> None:
    write_json(Path(run) / "run.json", meta)


# -- reading files of a run: a damaged one is one line naming it -----------------------------------
def damaged(path: Path, why: str, fix: str) -> UserError:
    return UserError(f"{path} is damaged ({' '.join(str(why).split())[:160]}): {fix}")


def read_json_file(path: Path, fix: str = "re-create it with the command that wrote it"):
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path} is missing: {fix}") from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise damaged(path, f"not valid JSON: {exc}", fix) from None


def read_parquet_file(path: Path, fix: str = "re-create it with the command that wrote it"):
    """A Parquet table; a missing, truncated or foreign file is a one-line UserError naming it."""
    import pandas as pd

    path = Path(path)
    try:
        return pd.read_parquet(path)
    except FileNotFoundError:
        raise UserError(f"{path} is missing: {fix}") from None
    except Exception as exc:  # pyarrow.ArrowInvalid / OSError: truncated, not Parquet
        if isinstance(exc, (KeyboardInterrupt, MemoryError)):
            raise
        raise damaged(path, f"{type(exc).__name__}: {exc}", fix) from None


RERECORD = "re-record the run (the same record command into a new --out directory)"


def read_meta(run: Path) -> dict:
    path = Path(run) / "run.json"
    if not path.exists():
        raise UserError(f"{run} is not a neuronatlas run (no run.json): record one with "
                        f"`neuronatlas record MODEL --layers ... --data ... --out {run}`")
    meta = read_json_file(path, "re-record the run into a new --out directory (its shards' "
                                "checkpoints cannot be merged without it)")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise UserError(f"{path} is not a neuronatlas run file: point at a directory written by "
                        f"`neuronatlas record`, or re-record the run into a new --out directory")
    return meta


# -- checkpoints -----------------------------------------------------------------------------------
def save_checkpoint(pdir: Path, layer_states: dict[str, dict], progress: dict) -> None:
    arrays = {f"{layer}/{name}": arr for layer, st in layer_states.items() for name, arr in st.items()}
    arrays["__progress__"] = np.frombuffer(json.dumps(progress).encode(), dtype=np.uint8)
    _atomic_write(Path(pdir) / "checkpoint.npz", lambda f: np.savez(f, **arrays))


def load_checkpoint(pdir: Path) -> tuple[dict[str, dict], dict] | None:
    path = Path(pdir) / "checkpoint.npz"
    if not path.exists():
        return None
    with np.load(path) as z:
        progress = json.loads(bytes(z["__progress__"]).decode())
        states: dict[str, dict] = {}
        for key in z.files:
            if key == "__progress__":
                continue
            layer, name = key.rsplit("/", 1)
            states.setdefault(layer, {})[name] = z[key]
    return states, progress


def open_digests(pdir: Path, n_keep: int):
    """Open the append-only digest log, dropping records written after the last checkpoint."""
    path = Path(pdir) / "digests.bin"
    path.parent.mkdir(parents=True, exist_ok=True)
    size = n_keep * DIGEST_RECORD.itemsize
    with open(path, "ab"):
        pass
    if path.stat().st_size > size:
        os.truncate(path, size)
    return open(path, "ab")


def read_digests(pdir: Path) -> np.ndarray:
    path = Path(pdir) / "digests.bin"
    return np.fromfile(path, dtype=DIGEST_RECORD) if path.exists() else np.zeros(0, DIGEST_RECORD)


class RowWriter:
    """A (rows, units) float32 .npy file written a row block at a time, without memory mapping
    (so resident memory stays flat however many rows are written)."""

    def __init__(self, path: Path, n_rows: int, n_units: int):
        self.path, self.n_units = Path(path), n_units
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with disk_errors(self.path):
            if not self.path.exists():
                header = {"descr": "<f4", "fortran_order": False, "shape": (n_rows, n_units)}
                with open(self.path, "wb") as f:
                    np.lib.format.write_array_header_1_0(f, header)
                    self.offset = f.tell()
                    f.truncate(self.offset + n_rows * n_units * 4)  # sparse; holes read as 0
            with open(self.path, "rb") as f:
                np.lib.format.read_magic(f)
                np.lib.format.read_array_header_1_0(f)
                self.offset = f.tell()
            self.f = open(self.path, "r+b")

    def write(self, row: int, block: np.ndarray) -> None:
        with disk_errors(self.path):
            self.f.seek(self.offset + row * self.n_units * 4)
            self.f.write(np.ascontiguousarray(block, dtype="<f4").tobytes())

    def flush(self) -> None:
        with disk_errors(self.path):
            self.f.flush()
            os.fsync(self.f.fileno())

    def close(self) -> None:
        self.f.close()


# -- final outputs (written by record.merge once every shard is complete) --------------------------
def write_layer_arrays(run: Path, layer: str, arrays: dict[str, np.ndarray]) -> None:
    d = layer_dir(run, layer)
    with disk_errors(d, resumable=False):
        d.mkdir(parents=True, exist_ok=True)
    for name, arr in arrays.items():
        _atomic_write(d / f"{name}.npy", lambda f, arr=arr: np.save(f, arr))


# The pooled matrix of the final run is assembled under a temporary name and renamed into place, and
# the shards' rows it came from are deleted only once run.json says complete: a merge killed at any
# step leaves its inputs intact, and the next merge finds each final file either whole or absent.
def final_acts_path(run: Path, layer: str) -> Path:
    return acts_path(run, layer)


def _acts_tmp(run: Path, layer: str) -> Path:
    return layer_dir(run, layer) / "acts.npy.tmp"


def final_acts_writer(run: Path, layer: str, n_rows: int, n_units: int) -> "RowWriter":
    """A writer of the final matrix under its temporary name; `commit_final_acts` renames it."""
    tmp = _acts_tmp(run, layer)
    if tmp.exists():  # left by a merge that was killed: start over
        tmp.unlink()
    return RowWriter(tmp, n_rows, n_units)


def commit_final_acts(run: Path, layer: str) -> None:
    with disk_errors(final_acts_path(run, layer), resumable=False):
        os.replace(_acts_tmp(run, layer), final_acts_path(run, layer))


def link_final_acts(run: Path, layer: str, source: Path) -> None:
    """Make `source` (one shard's rows, already in probe order) the final matrix without copying it:
    a hard link, so the shard keeps its file until the run is complete (a copy where the file system
    has no hard links)."""
    tmp = _acts_tmp(run, layer)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    if tmp.exists():
        tmp.unlink()
    with disk_errors(tmp, resumable=False):
        try:
            os.link(source, tmp)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise
            import shutil

            shutil.copyfile(source, tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
    commit_final_acts(run, layer)


def fresh_row_writer(path: Path, n_rows: int, n_units: int) -> "RowWriter":
    """A RowWriter on a new file at `path` (an older file there is replaced)."""
    path = Path(path)
    if path.exists():
        path.unlink()
    return RowWriter(path, n_rows, n_units)


def partial_acts_path(pdir: Path, layer: str) -> Path:
    return Path(pdir) / "acts" / f"{layer}.npy"


def remove_partial_acts(run: Path) -> None:
    """Delete the shards' pooled rows (their copy is in the final run). Only once run.json says
    complete; the checkpoints and digest logs stay (they are small)."""
    for path in sorted(Path(run).glob("partials/shard-*/acts/*.npy")):
        path.unlink(missing_ok=True)


class ShardFiles:
    """One shard's working files, ROOT/partials/shard-IIIII-of-NNNNN/ (ROOT: a run directory for
    `record`, RUN/lens/second-order/LAYER for the lens): the checkpoint (accumulator states +
    progress), the digest log of decoded images, and the per-image rows in shard order (acts/NAME.npy).
    The shard loop (recording/loop.py) reads and writes a shard only through this class."""

    def __init__(self, root: Path | str, shard: int, n_shards: int):
        self.root, self.shard, self.n_shards = Path(root), shard, n_shards
        self.dir = partial_dir(root, shard, n_shards)

    def __repr__(self) -> str:
        return f"ShardFiles({str(self.dir)!r})"

    def create(self) -> None:
        with disk_errors(self.dir):
            self.dir.mkdir(parents=True, exist_ok=True)

    def lock(self):
        """Held while one process writes this shard (run/lock.py): a second is refused at once."""
        return shard_lock(self.root, self.shard, self.n_shards)

    def load_checkpoint(self) -> tuple[dict[str, dict], dict] | None:
        return load_checkpoint(self.dir)

    def save_checkpoint(self, states: dict[str, dict], progress: dict) -> None:
        save_checkpoint(self.dir, states, progress)

    def open_digests(self, n_keep: int):
        return open_digests(self.dir, n_keep)

    def read_digests(self) -> np.ndarray:
        return read_digests(self.dir)

    def rows_path(self, name: str) -> Path:
        return partial_acts_path(self.dir, name)

    def rows_writer(self, name: str, n_rows: int, width: int) -> "RowWriter":
        return RowWriter(self.rows_path(name), n_rows, width)


def has_table(run: Path, name: str) -> bool:
    return (Path(run) / f"{name}.parquet").exists()


def read_table(run: Path, name: str):
    return read_parquet_file(Path(run) / f"{name}.parquet", RERECORD)


def write_table(run: Path, name: str, df) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(df, preserve_index=False)
    _atomic_write(Path(run) / f"{name}.parquet", lambda f: pq.write_table(table, f))


def write_hist_edges(run: Path, edges: np.ndarray) -> None:
    _atomic_write(Path(run) / "hist_edges.npy", lambda f: np.save(f, edges))
