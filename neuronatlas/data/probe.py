"""The probe-set contract: an ordered, deterministic list of images, decoded lazily.

A ProbeSet lists its images once (ids, paths, labels) in a deterministic order; the position of an
image in that order is its `index`, which the recorder stores. Reading the raw bytes of image `index`
is `read_bytes(index)`; it must be picklable (worker processes call it). Each source (folder, file
list, tar shards, HF datasets, the procedural world...) is one subclass in its own module.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

from PIL import Image


class EmptyFileError(OSError):
    """An image file with 0 bytes."""


@dataclass(frozen=True)
class ImageItem:
    image_id: str  # stable, unique within the probe set (e.g. relative path, "shard/key", "world/42")
    path: str  # where a person finds it (file path, "tar::member", "hf:dataset[i]", "world:...")
    label: str | None = None  # class from a sub-folder, a .cls file, a dataset column...


class ProbeSet:
    """Base class. Subclasses set `spec` and `items` and implement `read_bytes` or `read_image`."""

    spec: str = ""  # what the user typed, e.g. "folder:/data/imagenet" (recorded in the run)
    kind: str = ""  # "folder", "filelist", "tar", "hf", "world", ...
    # True: read_bytes gives an encoded file (PNG, JPEG...) that `load` decodes and hashes.
    # False: images are made, not stored (the world): `load` renders them and hashes the pixels.
    encoded_bytes: bool = True
    items: list[ImageItem]

    def __len__(self) -> int:
        return len(self.items)

    def read_bytes(self, index: int) -> bytes:
        """Raw encoded bytes of image `index` (hashed for duplicate detection)."""
        raise NotImplementedError

    def read_image(self, index: int) -> Image.Image:
        """Decoded RGB image. Raises on a corrupt file (the loader counts it and moves on)."""
        with Image.open(io.BytesIO(self.read_bytes(index))) as im:
            im.load()
            return im.convert("RGB")

    def load(self, index: int) -> tuple[Image.Image, bytes]:
        """(decoded RGB image, the bytes that identify it for duplicate detection). Used by the loader."""
        raw = None
        if self.encoded_bytes:
            try:
                raw = self.read_bytes(index)
            except NotImplementedError:
                pass
        if raw is None:  # no encoded form: identify the image by its pixels
            image = self.read_image(index).convert("RGB")
            return image, f"{image.size}".encode() + image.tobytes()
        if not raw:
            raise EmptyFileError(index)
        with Image.open(io.BytesIO(raw)) as im:
            im.load()
            return im.convert("RGB"), raw

    def fingerprint(self) -> str:
        """Content key of the listing: same ids in the same order -> same fingerprint."""
        h = hashlib.sha256(self.kind.encode())
        for item in self.items:
            h.update(item.image_id.encode())
            h.update(b"\0")
        return h.hexdigest()[:16]
