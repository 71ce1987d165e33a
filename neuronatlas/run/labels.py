"""Labels, resumable labelling progress, ground truth and evaluation tables of a run directory."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from .storage import disk_errors, read_parquet_file, write_json, write_table


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


# -- resumable labelling (describe methods that call models unit by unit, e.g. vlm) --------------
def chat_cache_path(run: Path) -> Path:
    """RUN/cache/chat.sqlite: the response cache of the chat/VLM clients used on this run."""
    return Path(run) / "cache" / "chat.sqlite"


class LabelProgress:
    """RUN/labels/.partial/NAME.jsonl: one JSON record per finished unit, appended (and fsynced) as
    each unit completes, so an interrupted labelling run keeps every finished unit. NAME carries a
    hash of the method's config: another config starts its own file. A torn last line (a crash
    mid-write) is ignored. `finish()` deletes the file once the labels table is written."""

    def __init__(self, run: Path, name: str):
        self.path = Path(run) / "labels" / ".partial" / f"{name}.jsonl"
        self._lock = threading.Lock()

    def read(self) -> dict[str, dict]:
        if not self.path.exists():
            return {}
        done: dict[str, dict] = {}
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a torn write: that unit is redone
                done[rec["unit"]] = rec
        return done

    def append(self, record: dict) -> None:
        line = json.dumps(record, sort_keys=True) + "\n"
        with self._lock, disk_errors(self.path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                if f.tell() and not self._ends_with_newline():
                    f.write("\n")  # after a torn line, start a fresh one
                f.write(line)
                f.flush()
                os.fsync(f.fileno())

    def _ends_with_newline(self) -> bool:
        with open(self.path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"

    def finish(self) -> None:
        if self.path.exists():
            self.path.unlink()

def labels_path(run: Path, method: str) -> Path:
    """RUN/labels/METHOD.parquet."""
    return Path(run) / "labels" / f"{method}.parquet"


def read_labels(run: Path, method: str):
    """One method's labels table from RUN/labels/METHOD.parquet (any run directory, recorded or
    lens-only), or None when that method has not labelled it."""
    path = labels_path(run, method)
    return read_parquet_file(path, f"rerun `neuronatlas describe` for {method}") \
        if path.exists() else None


def read_label_config(run: Path, method: str) -> dict | None:
    """The config stored with one method's labels (RUN/labels/METHOD.json), or None."""
    path = Path(run) / "labels" / f"{method}.json"
    return json.loads(path.read_text()) if path.exists() else None


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


def evaluation_path(run: Path, name: str) -> Path:
    """RUN/evaluation/NAME.parquet."""
    return Path(run) / "evaluation" / f"{name}.parquet"


def read_evaluation(run: Path, name: str):
    """RUN/evaluation/NAME.parquet as a DataFrame, or None when there is none (any run directory)."""
    path = evaluation_path(run, name)
    return read_parquet_file(path, f"rerun `neuronatlas evaluate {run}`") if path.exists() else None


def write_evaluation(run: Path, name: str, df) -> None:
    d = Path(run) / "evaluation"
    with disk_errors(d, resumable=False):
        d.mkdir(parents=True, exist_ok=True)
    write_table(d, name, df)
