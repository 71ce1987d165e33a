"""Read, decode and transform probe images in worker processes, in order, never stopping on a bad file.

`iter_batches` runs a torch DataLoader over the requested probe indices. An image that cannot be read
or decoded (missing, empty, truncated, not an image, too large) is reported in `Batch.failed` with a
one-line reason instead of raising, so one bad file in ten million does not end a run. Every
requested index comes out exactly once, in `indices` or in `failed`.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .probe import EmptyFileError, ProbeSet


@dataclass
class Batch:
    indices: np.ndarray  # int64 probe indices of the images that decoded, in request order
    pixels: torch.Tensor  # (n, 3, H, W) float: the transform of each decoded image
    digests: list[bytes]  # 16-byte blake2b of each image's raw bytes (exact-duplicate detection)
    failed: list[tuple[int, str]]  # (probe index, one-line reason) for unreadable images


class _TransformError(Exception):
    pass


def digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


def read_one(probe: ProbeSet, index: int) -> tuple[Image.Image, bytes]:
    """The decoded RGB image and the digest of its identifying bytes. Raises on anything unreadable."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PIL's corrupt-EXIF / palette notes would flood the terminal
        warnings.simplefilter("error", Image.DecompressionBombWarning)  # over MAX_IMAGE_PIXELS: fail
        image, key = probe.load(index)
        return image, digest(key)


def failure_reason(exc: BaseException, path: str) -> str:
    """One line a person can act on."""
    if isinstance(exc, FileNotFoundError):
        return f"file not found: {path}"
    if isinstance(exc, PermissionError):
        return f"permission denied: {path}"
    if isinstance(exc, IsADirectoryError):
        return f"is a folder, not an image: {path}"
    if isinstance(exc, EmptyFileError):
        return "empty file (0 bytes)"
    if isinstance(exc, UnidentifiedImageError):
        return "not an image, or a format PIL cannot read"
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return (f"image too large: over PIL.Image.MAX_IMAGE_PIXELS={Image.MAX_IMAGE_PIXELS} pixels "
                f"(raise that limit if you trust these files)")
    if isinstance(exc, MemoryError):
        return "out of memory while decoding"
    text = " ".join(str(exc).split())[:300]
    if isinstance(exc, _TransformError):
        return f"transform failed: {text}"
    if isinstance(exc, OSError) and "truncated" in text:
        return f"truncated image: {text}"
    return f"corrupt image ({type(exc).__name__}: {text})" if text else f"corrupt image ({type(exc).__name__})"


class _Reads(torch.utils.data.Dataset):
    """Position j -> (probe index, pixels or None, digest or reason)."""

    def __init__(self, probe: ProbeSet, transform: Callable, indices: np.ndarray):
        self.probe, self.transform, self.indices = probe, transform, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, j: int):
        index = int(self.indices[j])
        try:
            image, key = read_one(self.probe, index)
            try:
                pixels = self.transform(image)
            except Exception as e:
                raise _TransformError(str(e) or type(e).__name__) from e
            return index, pixels, key
        except Exception as e:  # noqa: BLE001: every failure becomes a reason, never a crash
            return index, None, failure_reason(e, self.probe.items[index].path)


def _collate(rows):
    """Runs in the worker: stack what decoded, list what did not. Plain tuple: cheap to send back."""
    ok = [r for r in rows if r[1] is not None]
    failed = [(r[0], r[2]) for r in rows if r[1] is None]
    pixels, error = None, None
    if ok:
        try:
            pixels = torch.stack([r[1] for r in ok])
        except (RuntimeError, TypeError) as e:  # sizes differ, or the transform gave no tensor
            error = " ".join(str(e).split())
    return [r[0] for r in ok], pixels, [r[2] for r in ok], failed, error


def _worker_init(_):
    torch.set_num_threads(1)  # several decoders per core would fight the main process for CPU
    warnings.filterwarnings("ignore")


def iter_batches(probe: ProbeSet, transform: Callable, indices: Sequence[int] | np.ndarray,
                 batch_size: int = 64, num_workers: int | None = None) -> Iterator[Batch]:
    """Batches of transformed images for `indices` (probe indices, in this order).

    num_workers: decoding processes (default min(4, CPUs)); 0 decodes in this process. The output
    does not depend on it. A batch whose images all failed is still yielded, with empty `pixels`.
    """
    from ..errors import UserError

    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    if len(indices) and (indices.min() < 0 or indices.max() >= len(probe)):
        raise IndexError(f"probe indices must be in [0, {len(probe)}), got {indices.min()}.."
                         f"{indices.max()}")
    if batch_size < 1:
        raise UserError(f"batch size must be at least 1, got {batch_size}")
    n_batches = -(-len(indices) // batch_size)
    if num_workers is None:
        num_workers = min(4, os.cpu_count() or 1)
    num_workers = max(0, min(num_workers, n_batches))  # no idle processes for a short list
    loader = torch.utils.data.DataLoader(
        _Reads(probe, transform, indices), batch_size=batch_size, shuffle=False,
        num_workers=num_workers, collate_fn=_collate, persistent_workers=False,
        worker_init_fn=_worker_init if num_workers else None)
    shape = None  # (3, H, W) of a decoded batch, to shape the empty ones
    for ok, pixels, digests, failed, error in loader:
        if error is not None:
            raise UserError(f"the transform gave images of different shapes ({error}): make it "
                            f"resize or crop to a fixed size")
        if pixels is None:
            shape = shape or _empty_shape(transform)
            pixels = torch.empty((0, *shape))
        else:
            shape = tuple(pixels.shape[1:])
        yield Batch(np.asarray(ok, dtype=np.int64), pixels, digests, failed)


def _empty_shape(transform: Callable) -> tuple[int, ...]:
    """The transform's output shape, found on a blank image (only needed before any image decoded)."""
    try:
        return tuple(transform(Image.new("RGB", (64, 64))).shape)
    except Exception:  # noqa: BLE001: an exotic transform; a shapeless empty batch is still fine
        return (3, 0, 0)
