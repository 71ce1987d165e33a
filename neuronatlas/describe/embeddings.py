"""Image and text embeddings of a scorer over a run's probe set, cached in the run directory.

    RUN/cache/embeddings/images-KEY.npy   (n_images, d) float32; rows = the probe indices asked for
    RUN/cache/embeddings/texts-KEY.npy    (n_concepts, d) float32; rows = the concept set's texts

KEY hashes everything the numbers depend on: the scorer (its describe(), plus a fingerprint of its
weights), and the probe fingerprint and image indices, or the concept set's content hash. A changed
model, probe or concept list gets a new key, so a stale file is never read; a file of the wrong
shape is recomputed.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch

from .. import run as rundir
from ..backends.scorer import ImageTextScorer


def scorer_key(scorer: ImageTextScorer) -> dict:
    """The scorer's identity: describe() plus a weights fingerprint when describe() has none."""
    from ..backends.clip import module_fingerprint

    d = dict(scorer.describe())
    if "fingerprint" not in d:
        for owner in (scorer, getattr(scorer, "classifier", None)):
            model = getattr(owner, "model", None)
            if isinstance(model, torch.nn.Module):
                d["fingerprint"] = module_fingerprint(model)
                break
    return d


def _key(*parts) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.blake2b(blob, digest_size=16).hexdigest()


def _load(path: Path, rows: int) -> np.ndarray | None:
    if not path.exists():
        return None
    try:
        arr = np.load(path)
    except (OSError, ValueError):
        return None
    return arr if arr.ndim == 2 and arr.shape[0] == rows else None


def _save(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, arr.astype(np.float32))
    os.replace(tmp, path)


def cache_dir(run) -> Path:
    return rundir.cache_dir(run.path, "embeddings")


def image_embeddings(run, scorer: ImageTextScorer, probe, indices: np.ndarray, key: dict,
                     batch_size: int | None = None, progress=None) -> np.ndarray:
    """(len(indices), d) unit-length image embeddings of the probe images `indices`, streamed in
    batches (decoded, preprocessed and encoded a batch at a time)."""
    indices = np.asarray(indices, dtype=np.int64)
    digest = hashlib.blake2b(indices.tobytes(), digest_size=16).hexdigest()
    path = cache_dir(run) / f"images-{_key(key, probe.fingerprint(), digest)}.npy"
    cached = _load(path, len(indices))
    if cached is not None:
        return cached
    bs = batch_size or scorer.batch_size
    out = np.zeros((len(indices), scorer.dim), np.float32)
    with torch.no_grad():
        for s in range(0, len(indices), bs):
            chunk = indices[s:s + bs]
            pixels = torch.stack([scorer.preprocess(probe.read_image(int(i))) for i in chunk])
            out[s:s + len(chunk)] = scorer.encode_images(pixels.to(scorer.device)).float().cpu().numpy()
            if progress is not None:
                progress(len(chunk))
    _save(path, out)
    return out


def text_embeddings(run, scorer: ImageTextScorer, concepts, key: dict) -> np.ndarray:
    """(len(concepts), d) unit-length text embeddings of a ConceptSet, row j = concepts.texts[j]."""
    path = cache_dir(run) / f"texts-{_key(key, concepts.hash)}.npy"
    cached = _load(path, len(concepts))
    if cached is not None:
        return cached
    with torch.no_grad():
        out = scorer.encode_texts(list(concepts.texts)).float().cpu().numpy()
    _save(path, out)
    return out
