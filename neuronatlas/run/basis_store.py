"""A run's unit bases: RUN/basis/LAYER.npz, the encoder a layer was recorded in (its arrays plus its
JSON config under `__config__`). The same file format is what `record --basis LAYER=FILE` reads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import UserError
from .storage import _atomic_write, disk_errors

_CONFIG = "__config__"


def basis_path(run: Path | str, layer: str) -> Path:
    return Path(run) / "basis" / f"{layer}.npz"


def save_encoder_file(path: Path | str, config: dict, state: dict[str, np.ndarray]) -> None:
    """Write an encoder (config + arrays) to one .npz file, atomically."""
    if _CONFIG in state:
        raise ValueError(f"an encoder array may not be called {_CONFIG}")
    path = Path(path)
    with disk_errors(path.parent, resumable=False):
        path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {**state, _CONFIG: np.array(json.dumps(config, sort_keys=True))}
    _atomic_write(path, lambda f: np.savez(f, **arrays))


def load_encoder_file(path: Path | str) -> tuple[dict, dict[str, np.ndarray]]:
    path = Path(path)
    if not path.exists():
        raise UserError(f"no encoder file at {path}: save one with "
                        f"neuronatlas.run.save_encoder_file(path, encoder.to_json(), encoder.state())")
    try:
        with np.load(path, allow_pickle=False) as z:
            config = json.loads(str(z[_CONFIG]))
            state = {k: np.array(z[k]) for k in z.files if k != _CONFIG}
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(f"{path} is not an encoder file ({exc}); write it with "
                        f"neuronatlas.run.save_encoder_file") from None
    return config, state


def write_basis(run: Path | str, layer: str, config: dict, state: dict[str, np.ndarray]) -> None:
    save_encoder_file(basis_path(run, layer), config, state)


def read_basis(run: Path | str, layer: str) -> tuple[dict, dict[str, np.ndarray]]:
    path = basis_path(run, layer)
    if not path.exists():
        raise UserError(f"{path} is missing: {run} recorded {layer} in a unit basis whose encoder "
                        f"file is gone; the run is damaged, re-record it")
    return load_encoder_file(path)
