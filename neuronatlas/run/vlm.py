"""The vlm methods' part of a run directory (written by neuronatlas.vlm, see docs/run-format.md):

    RUN/vlm/logit-lens/lens.json            format, identity key (model, data, top_k, prompt,
                                            batch_size), geometry, status
    RUN/vlm/logit-lens/part-NNNNN.parquet   one part per batch of images, written atomically, so an
                                            interrupted run resumes at the first missing part
    RUN/vlm/logit-lens/images/INDEX.png     the image as the model saw it (for the viewer)
    RUN/vlm/mean-vector/MODEL-KEY.npz       the mean post-projector image token and its count
    RUN/vlm/ablation/NAME/                  ablation.json, images.parquet, curves.parquet, curves.png
    RUN/vlm/knockout/NAME/                  knockout.json, images.parquet, summary.parquet
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import UserError
from .storage import _atomic_write, disk_errors, refuse_other_identity, write_json

LENS_FORMAT = "neuronatlas-logit-lens"


def vlm_dir(run: Path | str) -> Path:
    return Path(run) / "vlm"


def logit_lens_dir(run: Path | str) -> Path:
    return vlm_dir(run) / "logit-lens"


def has_logit_lens(run: Path | str) -> bool:
    return (logit_lens_dir(run) / "lens.json").exists()


def write_parquet(path: Path, table) -> None:
    """A pyarrow table or DataFrame to `path`, atomically (the run's Parquet convention)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not isinstance(table, pa.Table):
        table = pa.Table.from_pandas(table, preserve_index=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, lambda f: pq.write_table(table, f))


class LensStore:
    """RUN/vlm/logit-lens/: identity, parts (one per batch), the images the model saw."""

    def __init__(self, run: Path | str):
        self.run = Path(run)
        self.dir = logit_lens_dir(run)

    @property
    def meta_path(self) -> Path:
        return self.dir / "lens.json"

    def create_or_verify(self, meta: dict) -> dict:
        meta = json.loads(json.dumps(meta))  # tuples compare as the lists they are stored as
        if self.meta_path.exists():
            old = json.loads(self.meta_path.read_text())
            refuse_other_identity(old, meta, f"{self.dir} already holds a logit lens",
                                  f"choose another --out directory or delete {self.dir}")
            return old
        with disk_errors(self.dir, resumable=False):
            (self.dir / "images").mkdir(parents=True, exist_ok=True)
        write_json(self.meta_path, meta)
        return meta

    def meta(self) -> dict:
        if not self.meta_path.exists():
            raise UserError(f"{self.run} has no logit lens: run `neuronatlas vlm logit-lens MODEL "
                            f"--data SOURCE --out {self.run}` first")
        return json.loads(self.meta_path.read_text())

    def update_meta(self, **fields) -> None:
        meta = self.meta()
        meta.update(fields)
        write_json(self.meta_path, meta)

    def part_path(self, index: int) -> Path:
        return self.dir / f"part-{index:05d}.parquet"

    def image_path(self, index: int) -> Path:
        return self.dir / "images" / f"{int(index)}.png"

    def write_part(self, index: int, table) -> None:
        write_parquet(self.part_path(index), table)

    def write_image(self, index: int, image) -> None:
        import io

        buf = io.BytesIO()
        image.save(buf, format="PNG")
        _atomic_write(self.image_path(index), lambda f: f.write(buf.getvalue()))

    def parts(self) -> list[Path]:
        return sorted(self.dir.glob("part-*.parquet"))

    def images(self):
        """One row per image: index, image_id, n_positions, caption-free summary for the index page."""
        import pyarrow.parquet as pq
        import pandas as pd

        frames = [pq.read_table(p, columns=["index", "image_id", "position", "layer", "rank", "token",
                                              "prob", "kind"]).to_pandas() for p in self.parts()]
        if not frames:
            return pd.DataFrame(columns=["index", "image_id", "n_positions", "top_text"])
        df = pd.concat(frames, ignore_index=True)
        last = df[(df.layer == df.layer.max()) & (df["rank"] == 0)]
        out = []
        for (i, image_id), g in last.groupby(["index", "image_id"], sort=True):
            words = g[g.kind == "text"].sort_values("position").token.tolist()
            out.append(dict(index=int(i), image_id=str(image_id), n_positions=int(len(g)),
                            top_text=" ".join(words)))
        return pd.DataFrame(out)

    def image_table(self, index: int):
        """The lens rows of one image (every layer, position, rank)."""
        import pyarrow.parquet as pq
        import pandas as pd

        frames = [pq.read_table(p, filters=[("index", "=", int(index))]).to_pandas()
                  for p in self.parts()]
        frames = [f for f in frames if len(f)]
        return pd.concat(frames, ignore_index=True) if frames else None


def read_logit_lens(run: Path | str):
    """All parts as one DataFrame (index, image_id, layer, position, input_id, input_token, kind,
    patch, rank, token_id, token, prob)."""
    import pandas as pd

    parts = LensStore(run).parts()
    return pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True) if parts else pd.DataFrame()


# -- the mean image token (ablation baseline) ------------------------------------------------------
def mean_vector_path(run: Path | str, key: str) -> Path:
    return vlm_dir(run) / "mean-vector" / f"{key}.npz"


def save_mean_vector(path: Path, mean: np.ndarray, count: int, meta: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, lambda f: np.savez(f, mean=mean.astype(np.float32), count=np.int64(count),
                                           meta=np.frombuffer(json.dumps(meta).encode(), np.uint8)))


def load_mean_vector(path: Path) -> tuple[np.ndarray, int, dict] | None:
    if not Path(path).exists():
        return None
    with np.load(path) as z:
        return z["mean"], int(z["count"]), json.loads(bytes(z["meta"]).decode())


# -- ablation and knockout results -----------------------------------------------------------------
def experiment_dir(run: Path | str, kind: str, name: str) -> Path:
    if kind not in ("ablation", "knockout"):
        raise ValueError(kind)
    return vlm_dir(run) / kind / name


class ExperimentStore:
    """RUN/vlm/{ablation,knockout}/NAME/: NAME.json (identity key + summary), per-image table
    written in parts while running (resumable), final tables and plots."""

    def __init__(self, run: Path | str, kind: str, name: str):
        self.run, self.kind, self.name = Path(run), kind, name
        self.dir = experiment_dir(run, kind, name)

    @property
    def meta_path(self) -> Path:
        return self.dir / f"{self.kind}.json"

    def create_or_verify(self, meta: dict) -> dict:
        meta = json.loads(json.dumps(meta))  # tuples compare as the lists they are stored as
        if self.meta_path.exists():
            old = json.loads(self.meta_path.read_text())
            refuse_other_identity(old, meta, f"{self.dir} already holds an earlier {self.kind} run",
                                  f"choose another --name or delete {self.dir}")
            return old
        with disk_errors(self.dir, resumable=False):
            (self.dir / "parts").mkdir(parents=True, exist_ok=True)
        write_json(self.meta_path, meta)
        return meta

    def update_meta(self, **fields) -> dict:
        meta = json.loads(self.meta_path.read_text())
        meta.update(fields)
        write_json(self.meta_path, meta)
        return meta

    def part_path(self, index: int) -> Path:
        return self.dir / "parts" / f"part-{index:05d}.parquet"

    def write_part(self, index: int, df) -> None:
        write_parquet(self.part_path(index), df)

    def read_parts(self):
        import pandas as pd

        parts = sorted((self.dir / "parts").glob("part-*.parquet"))
        return pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True) if parts else None

    def write_table(self, name: str, df) -> None:
        write_parquet(self.dir / f"{name}.parquet", df)

    def table(self, name: str):
        import pandas as pd

        return pd.read_parquet(self.dir / f"{name}.parquet")

    def plot_path(self, name: str) -> Path:
        return self.dir / f"{name}.png"


def finished_experiments(run: Path | str) -> list[ExperimentStore]:
    """The complete ablation and knockout experiments of a run, by kind then name."""
    out = []
    for kind in ("ablation", "knockout"):
        root = vlm_dir(run) / kind
        for d in sorted(root.iterdir()) if root.is_dir() else []:
            store = ExperimentStore(run, kind, d.name)
            if store.meta_path.exists() and json.loads(store.meta_path.read_text()).get(
                    "status") == "complete":
                out.append(store)
    return out


def has_vlm_results(run: Path | str) -> bool:
    return has_logit_lens(run) or bool(finished_experiments(run))
