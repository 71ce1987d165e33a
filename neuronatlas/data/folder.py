"""A folder of images, searched recursively: `folder:PATH` or a bare directory path.

Order is the sorted relative POSIX path, so it does not depend on the file system's listing order.
image_id = that relative path; label = the first sub-folder under the root (None at the root), which
matches the ImageNet / torchvision ImageFolder layout.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import UserError
from .probe import ImageItem, ProbeSet

IMAGE_EXTS = frozenset({"jpg", "jpeg", "png", "bmp", "gif", "webp", "tif", "tiff"})


def is_image_name(name: str) -> bool:
    return name.rpartition(".")[2].lower() in IMAGE_EXTS and "." in name


def read_file(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def list_images(root: Path) -> list[str]:
    """Relative POSIX paths of the image files under `root`, sorted; hidden files and dirs skipped."""
    found: list[str] = []
    seen_dirs: set[str] = set()  # real paths: a symlink loop must not recurse forever

    def on_error(err: OSError):
        raise UserError(f"cannot read folder {err.filename}: {err.strerror}; check that it exists "
                        f"and that you have permission to list it")

    for dirpath, dirnames, filenames in os.walk(root, onerror=on_error, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen_dirs:
            dirnames[:] = []
            continue
        seen_dirs.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))  # deterministic walk
        rel = Path(dirpath).relative_to(root).as_posix()
        for name in filenames:
            if not name.startswith(".") and is_image_name(name):
                found.append(name if rel == "." else f"{rel}/{name}")
    found.sort()
    return found


class FolderProbeSet(ProbeSet):
    kind = "folder"

    def __init__(self, root: str | os.PathLike):
        root = Path(root).expanduser()
        if not root.exists():
            raise UserError(f"probe folder {root} does not exist: check the path (relative paths are "
                            f"resolved against {Path.cwd()})")
        if not root.is_dir():
            raise UserError(f"{root} is not a folder: give a folder of images, a file list "
                            f"(.txt/.csv/.tsv) or tar shards (.tar)")
        if not os.access(root, os.R_OK | os.X_OK):
            raise UserError(f"cannot read folder {root}: permission denied; fix its permissions")
        self.root = root.resolve()
        self.spec = f"folder:{self.root}"
        self.items = []
        for rel in list_images(self.root):
            label = rel.split("/", 1)[0] if "/" in rel else None
            self.items.append(ImageItem(rel, str(self.root / rel), label))

    def read_bytes(self, index: int) -> bytes:
        return read_file(self.items[index].path)


def open_source(arg: str) -> FolderProbeSet:
    return FolderProbeSet(arg)
