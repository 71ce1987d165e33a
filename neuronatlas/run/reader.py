"""Read access to a finished recording: `Run` (`neuronatlas.open_run`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import UserError, near_matches
from .labels import LABEL_COLUMNS
from .storage import (RERECORD, acts_path, cache_dir, layer_dir, read_json_file, read_meta,
                      read_parquet_file)


# -- unit ids (the grammar; recording/basis.py explains bases) ----------------------------------
def unit_id(layer: str, index: int, basis: str | None = None) -> str:
    """`LAYER:INDEX` (identity) or `LAYER:INDEX@NAME` (a feature of basis NAME)."""
    return f"{layer}:{int(index)}" + (f"@{basis}" if basis else "")


def split_unit_id(unit: str) -> tuple[str, str, str | None]:
    """`LAYER:INDEX[@NAME]` -> (layer, index text, basis name or None); no validation of the parts."""
    text, at, basis = str(unit).rpartition("@")
    if not at or ":" in basis:  # an '@' inside the layer name, not a basis suffix
        text, basis = str(unit), None
    layer, _, idx = text.rpartition(":")
    return layer, idx, basis


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
        if self._units is None:
            units = read_parquet_file(self.path / "units.parquet", RERECORD)
            if (self.path / "truth.parquet").exists():  # units with known true labels
                truth = read_parquet_file(self.path / "truth.parquet", RERECORD)
                truth = truth.rename(columns={c: f"truth_{c}" for c in truth.columns
                                              if c not in ("unit", "truth")})
                units = units.merge(truth, on="unit", how="left")
            self._units = units
        return self._units

    @property
    def images(self):
        if self._images is None:
            self._images = read_parquet_file(self.path / "images.parquet", RERECORD)
        return self._images

    def parse_unit(self, unit: str) -> tuple[str, int]:
        """`layer:index` (or `layer:index@basis` for a layer recorded in a unit basis) -> (layer,
        index), with clear errors for unknown layers, a missing or wrong basis, out of range."""
        layer, idx, basis = split_unit_id(unit)
        if not layer or not idx.lstrip("-").isdigit():
            first = next(iter(self.layers))
            raise UserError(f"unit '{unit}' is not of the form LAYER:INDEX (e.g. "
                            f"{self.unit_id(first, 0)})")
        if layer not in self.layers:
            hint = near_matches(layer, list(self.layers))
            raise UserError(f"layer '{layer}' is not in this run; recorded layers: "
                            f"{', '.join(hint or list(self.layers)[:8])}")
        want = self.basis(layer)
        if basis != want:
            if want is None:
                raise UserError(f"{layer} was recorded in the neuron basis: its units are "
                                f"{layer}:INDEX, without '@{basis}'")
            raise UserError(f"{layer} was recorded in basis '{want}': its units are "
                            f"{unit_id(layer, idx, want)}")
        n = self.layers[layer]["n_units"]
        i = int(idx)
        if not 0 <= i < n:
            raise UserError(f"unit index {i} is out of range for {layer}, which has {n} units "
                            f"(0..{n - 1})")
        return layer, i

    def basis(self, layer: str) -> str | None:
        """The name of the unit basis `layer` was recorded in (None: its neurons)."""
        return (self.layers[layer].get("basis") or {}).get("name")

    def unit_id(self, layer: str, index: int) -> str:
        return unit_id(layer, index, self.basis(layer))

    def unit_ids(self, layer: str) -> list[str]:
        return [self.unit_id(layer, i) for i in range(self.layers[layer]["n_units"])]

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

    def has_acts(self, layer: str) -> bool:
        """Whether the run holds the pooled activation matrix of `layer` (recorded with --save-acts)."""
        return acts_path(self.path, layer).exists()

    def cache_dir(self, kind: str) -> Path:
        """RUN/cache/KIND/ (embeddings, ...): derived caches, safe to delete."""
        return cache_dir(self.path, kind)

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
        return pd.concat([read_parquet_file(f, _relabel(self.path, f.stem)) for f in files],
                         ignore_index=True)

    def evaluation(self, name: str = "summary"):
        """An evaluation table written by `neuronatlas.evaluate` (summary, ground_truth, ...)."""
        path = self.path / "evaluation" / f"{name}.parquet"
        if not path.exists():
            raise UserError(f"{self.path} has no evaluation table '{name}': run "
                            f"`neuronatlas evaluate {self.path}` first")
        return read_parquet_file(path, f"rerun `neuronatlas evaluate {self.path}`")

    def label_config(self, method: str) -> dict:
        return read_json_file(self.path / "labels" / f"{method}.json", _relabel(self.path, method))

    def histogram(self, unit: str) -> tuple[np.ndarray, np.ndarray]:
        """(bin edges, counts) of the unit's pooled activations."""
        layer, i = self.parse_unit(unit)
        return np.load(self.path / "hist_edges.npy"), np.asarray(self.array(layer, "hist")[i])


    # -- what the atlas reads (its caches are keyed by these) ------------------------------------
    def label_methods(self) -> list[str]:
        d = self.path / "labels"
        return sorted(f.stem for f in d.glob("*.parquet")) if d.exists() else []

    def evaluation_names(self) -> list[str]:
        d = self.path / "evaluation"
        return sorted(f.stem for f in d.glob("*.parquet")) if d.exists() else []

    def table_files(self) -> list[Path]:
        """The files units, truth, labels and evaluation are read from (to key derived caches by
        their content)."""
        files = [self.path / "run.json", self.path / "units.parquet", self.path / "truth.parquet"]
        for sub, pattern in (("labels", "*.parquet"), ("labels", "*.json"),
                             ("evaluation", "*.parquet")):
            d = self.path / sub
            files += sorted(d.glob(pattern)) if d.exists() else []
        return [f for f in files if f.exists()]

    def identity(self) -> str:
        """A short digest of the recording's identity key (model, probe, layers, k)."""
        import hashlib

        return hashlib.blake2b(json.dumps(self.meta["key"], sort_keys=True).encode(),
                               digest_size=8).hexdigest()


def _relabel(run: Path, method: str) -> str:
    return f"rerun `neuronatlas describe {run} --method ...` for {method} (or delete the file)"


def atlas_dir(run: Path | str) -> Path:
    """RUN/atlas: the atlas's derived caches (search index, rendered exemplar tiles)."""
    return Path(run) / "atlas"


def open_run(path: Path | str) -> Run:
    return Run(path)
