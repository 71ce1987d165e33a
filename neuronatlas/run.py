"""The run directory: the one module that knows its format (documented in docs/run-format.md).

    RUN/run.json                       what was recorded and how (identity key, layouts, versions)
    RUN/images.parquet                 one row per probe image: index, image_id, path, label, status
    RUN/units.parquet                  one row per unit: unit id `layer:index`, statistics
    RUN/hist_edges.npy                 histogram bin edges shared by all units
    RUN/layers/LAYER/*.npy             top/bottom values and image indices (U, k), histogram (U, bins),
                                       and with --save-acts the pooled matrix acts.npy (N, U) float32
    RUN/labels/METHOD.parquet          labels from one describe method: unit, method, rank, label, score
    RUN/labels/METHOD.json             that method's config (backend, concept set, parameters)
    RUN/truth.parquet                  true labels of units that have them (synthetic units): unit,
                                       truth, kind, concepts; `Run.units` joins it
    RUN/evaluation/NAME.parquet        evaluation tables (ground_truth, simulation, agreement, summary)
    RUN/partials/SHARD/checkpoint.npz  a shard's accumulators + progress, replaced atomically
    RUN/partials/SHARD/digests.bin     (index int64, blake2b-16) per decoded image, append-only
    RUN/partials/SHARD/acts/LAYER.npy  a shard's pooled rows, in shard order
"""

from __future__ import annotations

import errno
import json
import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .errors import DiskFullError, UserError, near_matches

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


def partial_dir(run: Path, shard: int, n_shards: int) -> Path:
    return Path(run) / "partials" / f"shard-{shard:05d}-of-{n_shards:05d}"


# -- identity: never mix two recordings in one directory ------------------------------------------
def create_or_verify(run: Path, meta: dict) -> dict:
    """Create RUN/run.json, or check that the existing one has the same identity key."""
    run = Path(run)
    path = run / "run.json"
    if path.exists():
        old = read_meta(run)
        diffs = [k for k in meta["key"] if old["key"].get(k) != meta["key"][k]]
        if diffs:
            field = diffs[0]
            raise UserError(
                f"{run} already holds a recording with a different {field} "
                f"({_short(old['key'].get(field))} vs {_short(meta['key'][field])}); refusing to mix "
                f"them: choose a new --out directory or delete the old run")
        return old
    with disk_errors(run, resumable=False):
        run.mkdir(parents=True, exist_ok=True)
    write_json(path, meta)
    return meta


def _short(v) -> str:
    s = json.dumps(v, sort_keys=True)
    return s if len(s) <= 80 else s[:77] + "..."


def read_meta(run: Path) -> dict:
    path = Path(run) / "run.json"
    if not path.exists():
        raise UserError(f"{run} is not a neuronatlas run (no run.json): record one with "
                        f"`neuronatlas record MODEL --layers ... --data ... --out {run}`")
    meta = json.loads(path.read_text())
    if meta.get("format") != FORMAT:
        raise UserError(f"{path} is not a neuronatlas run file")
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


def final_acts_writer(run: Path, layer: str, n_rows: int, n_units: int) -> "RowWriter":
    path = layer_dir(run, layer) / "acts.npy"
    if path.exists():
        path.unlink()
    return RowWriter(path, n_rows, n_units)


def partial_acts_path(pdir: Path, layer: str) -> Path:
    return Path(pdir) / "acts" / f"{layer}.npy"


def write_table(run: Path, name: str, df) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(df, preserve_index=False)
    _atomic_write(Path(run) / f"{name}.parquet", lambda f: pq.write_table(table, f))


def write_hist_edges(run: Path, edges: np.ndarray) -> None:
    _atomic_write(Path(run) / "hist_edges.npy", lambda f: np.save(f, edges))


# -- labels (written by the describe stages) -------------------------------------------------------
LABEL_COLUMNS = ("unit", "method", "rank", "label", "score")


def write_labels(run: Path, method: str, df, config: dict) -> None:
    """Store one method's labels: a table with at least LABEL_COLUMNS (extra columns are kept), and
    the config that produced them. Rewriting a method replaces its labels."""
    missing = [c for c in LABEL_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"labels table lacks columns {missing}")
    d = Path(run) / "labels"
    with disk_errors(d, resumable=False):
        d.mkdir(parents=True, exist_ok=True)
    write_table(d, method, df)
    write_json(d / f"{method}.json", config)


def read_labels(run: Path, method: str):
    """One method's labels table from RUN/labels/METHOD.parquet (any run directory, recorded or
    lens-only), or None when that method has not labelled it."""
    import pandas as pd

    path = Path(run) / "labels" / f"{method}.parquet"
    return pd.read_parquet(path) if path.exists() else None


def lens_app_path(run: Path, name: str) -> Path:
    """RUN/lens/apps/NAME: outputs of the second-order applications (segmentation.json,
    adversarial/SOURCE-to-TARGET/, discovery.json)."""
    path = Path(run) / "lens" / "apps" / name
    with disk_errors(path.parent, resumable=False):
        path.parent.mkdir(parents=True, exist_ok=True)
    return path


# -- ground truth and evaluation (written by record for synthetic units, and by evaluate) ----------
def write_truth(run: Path, df) -> None:
    """RUN/truth.parquet: one row per unit with a known true label (columns unit, truth, ...)."""
    if "unit" not in df.columns or "truth" not in df.columns:
        raise ValueError("truth table needs columns unit and truth")
    write_table(run, "truth", df)


def read_evaluation(run: Path, name: str):
    """RUN/evaluation/NAME.parquet as a DataFrame, or None when there is none (any run directory)."""
    import pandas as pd

    path = Path(run) / "evaluation" / f"{name}.parquet"
    return pd.read_parquet(path) if path.exists() else None


def write_evaluation(run: Path, name: str, df) -> None:
    d = Path(run) / "evaluation"
    with disk_errors(d, resumable=False):
        d.mkdir(parents=True, exist_ok=True)
    write_table(d, name, df)


# -- the finished run ----------------------------------------------------------------------------
class Run:
    """Read access to a recorded run: `neuronatlas.open_run(path)`."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.meta = read_meta(self.path)
        if self.meta.get("status") != "complete":
            raise UserError(f"{self.path} is not complete yet (status {self.meta.get('status')}): "
                            f"rerun the record command to resume, or `neuronatlas merge {self.path}` "
                            f"when every shard has finished")
        self.layers = {l["name"]: l for l in self.meta["layers"]}
        self._units = self._images = None
        self._arrays: dict[tuple[str, str], np.ndarray] = {}

    def __repr__(self) -> str:
        return (f"Run({str(self.path)!r}, model={self.meta['key']['model']['spec']!r}, "
                f"layers={list(self.layers)}, images={self.meta['summary']['n_ok']})")

    @property
    def units(self):
        import pandas as pd

        if self._units is None:
            units = pd.read_parquet(self.path / "units.parquet")
            if (self.path / "truth.parquet").exists():  # units with known true labels
                truth = pd.read_parquet(self.path / "truth.parquet")
                truth = truth.rename(columns={c: f"truth_{c}" for c in truth.columns
                                              if c not in ("unit", "truth")})
                units = units.merge(truth, on="unit", how="left")
            self._units = units
        return self._units

    @property
    def images(self):
        import pandas as pd

        if self._images is None:
            self._images = pd.read_parquet(self.path / "images.parquet")
        return self._images

    def parse_unit(self, unit: str) -> tuple[str, int]:
        """`layer:index` -> (layer, index), with clear errors for unknown layers / out of range."""
        layer, sep, idx = str(unit).rpartition(":")
        if not sep or not idx.lstrip("-").isdigit():
            raise UserError(f"unit '{unit}' is not of the form LAYER:INDEX (e.g. "
                            f"{next(iter(self.layers))}:0)")
        if layer not in self.layers:
            hint = near_matches(layer, list(self.layers))
            raise UserError(f"layer '{layer}' is not in this run; recorded layers: "
                            f"{', '.join(hint or list(self.layers)[:8])}")
        n = self.layers[layer]["n_units"]
        i = int(idx)
        if not 0 <= i < n:
            raise UserError(f"unit index {i} is out of range for {layer}, which has {n} units "
                            f"(0..{n - 1})")
        return layer, i

    def array(self, layer: str, name: str) -> np.ndarray:
        key = (layer, name)
        if key not in self._arrays:
            path = layer_dir(self.path, layer) / f"{name}.npy"
            if not path.exists():
                if name == "acts":
                    raise UserError(f"{self.path} has no pooled activation matrix for {layer}: "
                                    f"record with --save-acts")
                raise UserError(f"{path} is missing: the run is damaged, re-record it")
            self._arrays[key] = np.load(path, mmap_mode="r")
        return self._arrays[key]

    def acts(self, layer: str) -> np.ndarray:
        """Pooled activations (n_images, n_units) float32, memory-mapped; NaN for skipped images."""
        return self.array(layer, "acts")

    def _extreme(self, unit: str, which: str, k: int | None):
        import pandas as pd

        layer, i = self.parse_unit(unit)
        values = np.asarray(self.array(layer, f"{which}_values")[i])
        index = np.asarray(self.array(layer, f"{which}_index")[i])
        keep = index >= 0
        values, index = values[keep][:k], index[keep][:k]
        ids = self.images["image_id"].to_numpy()[index]
        return pd.DataFrame({"rank": np.arange(len(index)), "index": index, "image_id": ids,
                             "value": values})

    def topk(self, unit: str, k: int | None = None):
        """The unit's top images: columns rank, index, image_id, value (highest first)."""
        return self._extreme(unit, "top", k)

    def bottomk(self, unit: str, k: int | None = None):
        """The unit's bottom images: columns rank, index, image_id, value (lowest first)."""
        return self._extreme(unit, "bottom", k)

    def labels(self, method: str | None = None):
        """Every label of every method: columns unit, method, rank, label, score (+ method extras).
        Several rows per unit and method when a method ranks its labels (rank 0 = best)."""
        import pandas as pd

        d = self.path / "labels"
        files = sorted(d.glob("*.parquet")) if d.exists() else []
        if method is not None:
            files = [f for f in files if f.stem == method]
            if not files:
                known = [f.stem for f in sorted(d.glob("*.parquet"))] if d.exists() else []
                raise UserError(f"{self.path} has no labels from method '{method}'"
                                + (f"; it has: {', '.join(known)}" if known else
                                   f"; run `neuronatlas describe {self.path} --method {method}`"))
        if not files:
            return pd.DataFrame({c: pd.Series(dtype=t) for c, t in
                                 zip(LABEL_COLUMNS, ("str", "str", "int64", "str", "float64"))})
        return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)

    def evaluation(self, name: str = "summary"):
        """An evaluation table written by `neuronatlas.evaluate` (summary, ground_truth, ...)."""
        import pandas as pd

        path = self.path / "evaluation" / f"{name}.parquet"
        if not path.exists():
            raise UserError(f"{self.path} has no evaluation table '{name}': run "
                            f"`neuronatlas evaluate {self.path}` first")
        return pd.read_parquet(path)

    def label_config(self, method: str) -> dict:
        return json.loads((self.path / "labels" / f"{method}.json").read_text())

    def histogram(self, unit: str) -> tuple[np.ndarray, np.ndarray]:
        """(bin edges, counts) of the unit's pooled activations."""
        layer, i = self.parse_unit(unit)
        return np.load(self.path / "hist_edges.npy"), np.asarray(self.array(layer, "hist")[i])


def open_run(path: Path | str) -> Run:
    return Run(path)


# -- the second-order lens (written by neuronatlas.lens, documented in docs/run-format.md) ----------
SECOND_ORDER_FORMAT = "neuronatlas-second-order"


def second_order_dir(run: Path | str, layer: str) -> Path:
    return Path(run) / "lens" / "second-order" / layer


class SecondOrderStore:
    """Writer of RUN/lens/second-order/LAYER/ (see docs/run-format.md). `layer` is the unit layer
    (the neurons' hook-point name), so unit ids match a `record` of the same layer."""

    COEFFICIENTS = "coefficients.npy"

    def __init__(self, run: Path | str, layer: str):
        self.run, self.layer = Path(run), layer
        self.dir = second_order_dir(run, layer)

    @property
    def meta_path(self) -> Path:
        return self.dir / "lens.json"

    def create_or_verify(self, meta: dict) -> dict:
        """Create lens.json, or check that an existing one has the same identity key."""
        if self.meta_path.exists():
            old = json.loads(self.meta_path.read_text())
            diffs = [k for k in meta["key"] if old["key"].get(k) != meta["key"][k]]
            if diffs:
                f = diffs[0]
                raise UserError(
                    f"{self.dir} already holds second-order effects with a different {f} "
                    f"({_short(old['key'].get(f))} vs {_short(meta['key'][f])}); refusing to mix them: "
                    f"choose another --out directory or delete {self.dir}")
            return old
        with disk_errors(self.dir, resumable=False):
            self.dir.mkdir(parents=True, exist_ok=True)
        write_json(self.meta_path, meta)
        return meta

    def update_meta(self, **fields) -> dict:
        meta = json.loads(self.meta_path.read_text())
        meta.update(fields)
        write_json(self.meta_path, meta)
        return meta

    def coefficient_writer(self, n_images: int, n_neurons: int, n_heads: int) -> RowWriter:
        """(n_images, N * K) float32 rows, row i = image i's (N, K) coefficients, row-major."""
        return RowWriter(self.dir / self.COEFFICIENTS, n_images, n_neurons * n_heads)

    def coefficients(self, n_neurons: int, n_heads: int) -> np.ndarray:
        arr = np.load(self.dir / self.COEFFICIENTS, mmap_mode="r")
        return arr.reshape(arr.shape[0], n_neurons, n_heads)

    def save_checkpoint(self, state: dict[str, np.ndarray], progress: dict) -> None:
        save_checkpoint(self.dir, {"state": state}, progress)

    def load_checkpoint(self) -> tuple[dict[str, np.ndarray], dict] | None:
        ck = load_checkpoint(self.dir)
        return None if ck is None else (ck[0].get("state", {}), ck[1])

    def write_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        for name, arr in arrays.items():
            _atomic_write(self.dir / f"{name}.npy", lambda f, arr=arr: np.save(f, arr))

    def array_writer(self, name: str, n_rows: int, n_cols: int) -> RowWriter:
        path = self.dir / f"{name}.npy"
        if path.exists():
            path.unlink()
        return RowWriter(path, n_rows, n_cols)

    def write_table(self, name: str, df) -> None:
        write_table(self.dir, name, df)


class SecondOrderResult:
    """Read access to finished second-order effects: `neuronatlas.run.open_second_order(run, layer)`.

    Per neuron (N of them, unit ids `layer:INDEX`): mean_effect (N, D), pc (N, D) unit vectors,
    explained_variance (N,), threshold (N,), top_norms / top_index (N, k). Per image: norms
    (n_images, N), coefficients (n_images, N, K), significant() (n_images, N) bool. Weights:
    head_vectors (K, N, D) with heads[k] = (block, head). Arrays are memory-mapped.
    """

    def __init__(self, run: Path | str, layer: str):
        self.store = SecondOrderStore(run, layer)
        self.path, self.layer = self.store.dir, layer
        if not self.store.meta_path.exists():
            raise UserError(f"{run} has no second-order effects for {layer}: compute them with "
                            f"`neuronatlas lens second-order MODEL --layer ... --data ... --out {run}`")
        self.meta = json.loads(self.store.meta_path.read_text())
        if self.meta.get("status") != "complete":
            raise UserError(f"the second-order effects in {self.path} are not complete yet: rerun the "
                            f"same `neuronatlas lens second-order` command to resume")
        self.block = int(self.meta["block"])
        self.heads = [tuple(h) for h in self.meta["heads"]]
        self.n_neurons = int(self.meta["n_neurons"])
        self._cache: dict[str, np.ndarray] = {}
        self._images = None

    def __repr__(self) -> str:
        return (f"SecondOrderResult({str(self.path)!r}, model={self.meta['key']['model']['spec']!r}, "
                f"layer={self.layer!r}, neurons={self.n_neurons}, images={self.meta['summary']['n_ok']})")

    def _array(self, name: str) -> np.ndarray:
        if name not in self._cache:
            path = self.path / f"{name}.npy"
            if not path.exists():
                raise UserError(f"{path} is missing: the second-order result is damaged; delete "
                                f"{self.path} and compute it again")
            self._cache[name] = np.load(path, mmap_mode="r")
        return self._cache[name]

    @property
    def units(self) -> list[str]:
        return [f"{self.layer}:{i}" for i in range(self.n_neurons)]

    @property
    def images(self):
        import pandas as pd

        if self._images is None:
            self._images = pd.read_parquet(self.path / "images.parquet")
        return self._images

    @property
    def neurons(self):
        """Per-neuron table: unit, index, threshold, explained_variance, mean_effect_norm."""
        import pandas as pd

        return pd.read_parquet(self.path / "neurons.parquet")

    mean_effect = property(lambda self: self._array("mean_effect"))
    mean_coefficient = property(lambda self: self._array("mean_coefficient"))
    pc = property(lambda self: self._array("pc"))
    explained_variance = property(lambda self: self._array("explained_variance"))
    threshold = property(lambda self: self._array("threshold"))
    top_norms = property(lambda self: self._array("top_norms"))
    top_index = property(lambda self: self._array("top_index"))
    norms = property(lambda self: self._array("norms"))
    head_vectors = property(lambda self: self._array("head_vectors"))

    @property
    def coefficients(self) -> np.ndarray:
        if "coefficients" not in self._cache:
            self._cache["coefficients"] = self.store.coefficients(self.n_neurons, len(self.heads))
        return self._cache["coefficients"]

    def significant(self) -> np.ndarray:
        """(n_images, N) bool: the image's centred effect norm reaches the neuron's threshold."""
        return np.asarray(self.norms) >= np.asarray(self.threshold)[None, :]

    def effects(self, images, neurons=None) -> np.ndarray:
        """(len(images), n, D) effects (in the stored scale) rebuilt from the coefficients."""
        images = np.asarray(images, dtype=np.int64)
        neurons = np.arange(self.n_neurons) if neurons is None else np.asarray(neurons, np.int64)
        coef = np.asarray(self.coefficients[images][:, neurons], dtype=np.float64)  # (B, n, K)
        u = np.asarray(self.head_vectors[:, neurons], dtype=np.float64)  # (K, n, D)
        return np.einsum("bnk,knd->bnd", coef, u).astype(np.float32)


def second_order_layers(run: Path | str) -> list[str]:
    d = Path(run) / "lens" / "second-order"
    return sorted(p.name for p in d.iterdir() if (p / "lens.json").exists()) if d.exists() else []


def open_second_order(run: Path | str, layer: str | None = None) -> SecondOrderResult:
    """The second-order effects of `layer` in RUN (the only one there when layer is None)."""
    layers = second_order_layers(run)
    if layer is None:
        if len(layers) != 1:
            raise UserError(f"{run} has second-order effects for {len(layers)} layers"
                            + (f" ({', '.join(layers)}): pass layer=" if layers else
                               ": compute them with `neuronatlas lens second-order`"))
        layer = layers[0]
    elif layer not in layers and layers:
        # accept a block index or a suffix like "resblocks.9.mlp.gelu"
        hits = [l for l in layers if l.endswith(str(layer)) or f".{layer}." in l]
        if len(hits) == 1:
            layer = hits[0]
        else:
            hint = near_matches(str(layer), layers)
            raise UserError(f"{run} has no second-order effects for {layer}; it has: "
                            f"{', '.join(hint or layers)}")
    return SecondOrderResult(run, layer)
