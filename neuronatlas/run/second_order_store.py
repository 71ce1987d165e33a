"""The second-order lens's part of a run directory: RUN/lens/second-order/LAYER/ (written by
neuronatlas.lens, documented in docs/run-format.md)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import UserError, near_matches
from .storage import (RowWriter, _atomic_write, disk_errors, refuse_other_identity, write_json,
                      write_table)


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
            refuse_other_identity(old, meta, f"{self.dir} already holds second-order effects",
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

    @property
    def coefficients_path(self) -> Path:
        """(n_images, N * K) float32 rows, row i = image i's (N, K) coefficients, row-major;
        assembled from the shards' rows (RUN/lens/second-order/LAYER/partials/SHARD/acts/)."""
        return self.dir / self.COEFFICIENTS

    def coefficients(self, n_neurons: int, n_heads: int) -> np.ndarray:
        arr = np.load(self.coefficients_path, mmap_mode="r")
        return arr.reshape(arr.shape[0], n_neurons, n_heads)

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
                            + (f" ({', '.join(layers)}): choose one with --layer N (Python: layer=N)" if layers else
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
