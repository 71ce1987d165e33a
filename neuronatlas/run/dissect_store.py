"""NetDissect's counts in a run directory: RUN/dissect/KEY/ (written by describe/netdissect_passes.py,
documented in docs/run-format.md).

    RUN/dissect/KEY/key.json            what the counts depend on (model, probe fingerprint, quantile,
                                        bins, batch size, mask size, concepts)
    RUN/dissect/KEY/LAYER/pass1.npz     the layer's per-unit thresholds (pass 1 finished)
    RUN/dissect/KEY/LAYER/pass2.npz     the layer's (unit, concept pattern) active-pixel counts and
                                        the pattern table (pass 2 finished)
    RUN/dissect/KEY/checkpoint.npz      the pass in progress: accumulators + batches done

KEY is a hash of key.json, so counts of other settings sit side by side and are never mixed; a
finished layer is reused by every later netdissect or compositional run with the same key.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from .storage import _atomic_write, disk_errors, load_checkpoint, save_checkpoint, write_json


def _safe(layer: str) -> str:
    return layer.replace("/", "_")


class DissectStore:
    def __init__(self, run: Path | str, key: dict):
        self.key = key
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        self.dir = Path(run) / "dissect" / digest
        if not (self.dir / "key.json").exists():
            with disk_errors(self.dir):
                self.dir.mkdir(parents=True, exist_ok=True)
            write_json(self.dir / "key.json", key)

    def _path(self, layer: str, what: str) -> Path:
        return self.dir / _safe(layer) / f"{what}.npz"

    def has(self, layer: str, what: str) -> bool:
        return self._path(layer, what).exists()

    def load(self, layer: str, what: str) -> dict[str, np.ndarray]:
        with np.load(self._path(layer, what)) as z:
            return {k: z[k] for k in z.files}

    def save(self, layer: str, what: str, arrays: dict[str, np.ndarray]) -> None:
        path = self._path(layer, what)
        with disk_errors(path):
            path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(path, lambda f: np.savez(f, **arrays))

    def save_checkpoint(self, states: dict[str, dict], progress: dict) -> None:
        save_checkpoint(self.dir, states, progress)

    def load_checkpoint(self) -> tuple[dict[str, dict], dict] | None:
        return load_checkpoint(self.dir)

    def clear_checkpoint(self) -> None:
        (self.dir / "checkpoint.npz").unlink(missing_ok=True)


__all__ = ["DissectStore"]
