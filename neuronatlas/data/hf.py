"""Hugging Face `datasets`: a `datasets.Dataset` object, or `hf:PATH` for one saved with `save_to_disk`.

The image column is the first `Image` feature, else a column named image/img; the label column is
the first `ClassLabel` (its names become labels), else a column named label; both can be set by
keyword. image_id comes from an `id`/`image_id` column, else the row number. path = `hf:NAME[i]`
where NAME is the saved folder, the dataset name or its fingerprint. `read_bytes` returns the
original encoded bytes (the Image feature read with decode=False), so digests see the real file.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

from ..errors import UserError
from .probe import ImageItem, ProbeSet

ID_COLUMNS = ("image_id", "id")


def _find_image_column(ds, wanted: str | None) -> str:
    import datasets

    cols = list(ds.column_names)
    if wanted is not None:
        if wanted not in cols:
            raise UserError(f"dataset has no column {wanted!r}: choose image_column from {cols}")
        return wanted
    for name, feature in ds.features.items():
        if isinstance(feature, datasets.Image):
            return name
    for name in cols:
        if name.lower() in ("image", "img"):
            return name
    raise UserError(f"cannot find the image column of the dataset (columns: {cols}): pass "
                    f"image_column=NAME to open_probe")


def _find_label_column(ds, wanted: str | None, image_col: str) -> str | None:
    import datasets

    if wanted is not None:
        if wanted not in ds.column_names:
            raise UserError(f"dataset has no column {wanted!r}: choose label_column from "
                            f"{list(ds.column_names)}")
        return wanted
    for name, feature in ds.features.items():
        if isinstance(feature, datasets.ClassLabel) and name != image_col:
            return name
    return "label" if "label" in ds.column_names else None


def _saved_folder(ds) -> str | None:
    """The save_to_disk folder this exact dataset was loaded from, if any (so its spec reopens it)."""
    files = {os.path.dirname(f["filename"]) for f in ds.cache_files}
    if len(files) != 1 or getattr(ds, "_indices", None) is not None:
        return None
    folder = files.pop()
    if not Path(folder, "state.json").is_file():
        return None
    import datasets

    try:  # same fingerprint as a fresh load <=> not renamed, mapped or filtered since loading
        fresh = datasets.load_from_disk(folder)
    except (OSError, ValueError):
        return None
    return folder if getattr(fresh, "_fingerprint", None) == ds._fingerprint else None


class HFProbeSet(ProbeSet):
    kind = "hf"

    def __init__(self, dataset, image_column: str | None = None, label_column: str | None = None,
                 id_column: str | None = "auto", name: str | None = None):
        import datasets

        ds = dataset.with_format(None)  # plain python rows whatever format the user had set
        self.image_column = _find_image_column(ds, image_column)
        self.label_column = _find_label_column(ds, label_column, self.image_column)
        self.hf_fingerprint = dataset._fingerprint  # the user's object: with_format changes it
        folder = _saved_folder(dataset)
        self.name = name or folder or ds.info.dataset_name or self.hf_fingerprint
        self.spec = f"hf:{folder}" if folder else f"hf-object:{self.hf_fingerprint}"

        n = len(ds)
        labels: list = [None] * n
        if self.label_column is not None:
            raw = list(ds[self.label_column])
            feature = ds.features[self.label_column]
            if isinstance(feature, datasets.ClassLabel):
                names = feature.names
                labels = [None if v is None or v < 0 else names[v] for v in raw]  # -1: no label
            else:
                labels = [None if v is None else str(v) for v in raw]
        if id_column == "auto":
            id_column = next((c for c in ID_COLUMNS if c in ds.column_names), None)
        ids = [str(v) for v in ds[id_column]] if id_column else [str(i) for i in range(n)]
        if len(set(ids)) != n:
            raise UserError(f"column {id_column!r} of dataset {self.name} has repeated values, so it "
                            f"cannot be the image id: pass id_column=None to use row numbers")
        self.items = [ImageItem(ids[i], f"hf:{self.name}[{i}]", labels[i]) for i in range(n)]

        raw = ds.select_columns([self.image_column])
        if isinstance(raw.features[self.image_column], datasets.Image):
            raw = raw.cast_column(self.image_column, datasets.Image(decode=False))  # keep the bytes
        self._raw = raw

    def read_bytes(self, index: int) -> bytes:
        value = self._raw[int(index)][self.image_column]
        if isinstance(value, dict):  # Image(decode=False): {"bytes", "path"}
            if value.get("bytes") is not None:
                return bytes(value["bytes"])
            value = value.get("path")
        if value is None:
            raise ValueError("no image in this row")
        if isinstance(value, (bytes, bytearray, memoryview)):
            return bytes(value)
        if isinstance(value, str):
            with open(value, "rb") as f:
                return f.read()
        return _encode_png(value)

    def fingerprint(self) -> str:
        import hashlib

        # Row-number ids alone would match any dataset of the same length: mix in the content key.
        key = f"{super().fingerprint()}:{self.hf_fingerprint}:{self.image_column}"
        return hashlib.sha256(key.encode()).hexdigest()[:16]


def _encode_png(value) -> bytes:
    """A decoded image (PIL or array) as PNG bytes, for columns that do not keep the original file."""
    import numpy as np
    from PIL import Image

    image = value if isinstance(value, Image.Image) else Image.fromarray(np.asarray(value))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def open_source(arg: str, **options) -> HFProbeSet:
    """`hf:PATH`: a dataset (or a one-split DatasetDict) saved with `save_to_disk`."""
    import datasets

    path = Path(arg).expanduser()
    if not path.exists():
        raise UserError(f"saved dataset {path} does not exist: give a folder written by "
                        f"Dataset.save_to_disk, or pass the datasets.Dataset object to open_probe")
    try:
        ds = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError, OSError) as e:
        raise UserError(f"cannot load dataset from {path} ({str(e).splitlines()[0]}): give a folder "
                        f"written by Dataset.save_to_disk") from None
    if isinstance(ds, datasets.DatasetDict):
        if len(ds) != 1:
            raise UserError(f"{path} holds the splits {list(ds)}: pick one, e.g. "
                            f"hf:{path / next(iter(ds))}")
        ds = next(iter(ds.values()))
    probe = HFProbeSet(ds, name=str(path.resolve()), **options)
    probe.spec = f"hf:{path.resolve()}"
    return probe
