"""Probe sets: where the images come from. `open_probe` turns what a user typed (or passed) into one.

    open_probe("path/to/folder")             # images under a folder, label = first sub-folder
    open_probe("list.txt")                   # file list (.txt / .csv / .tsv), optional labels
    open_probe("shards-{000..009}.tar")      # webdataset-style tar shards (also a glob)
    open_probe("hf:path/saved_dataset")      # Dataset.save_to_disk folder
    open_probe(datasets_dataset, image_column="img")
    open_probe("world:...")                  # any PREFIX:ARG listed in registry.SOURCES
    open_probe(["world:n=100", "photos:"])   # several sources as one (also "world:n=100 + photos:")
"""

from __future__ import annotations

import glob
import importlib
import os
import re

from ..errors import UserError, near_matches
from .loading import Batch, iter_batches
from .probe import ImageItem, ProbeSet
from .registry import SOURCES

__all__ = ["ProbeSet", "ImageItem", "open_probe", "iter_batches", "Batch"]

LIST_SUFFIXES = (".txt", ".csv", ".tsv")
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar.zst")
_PREFIX = re.compile(r"^([A-Za-z][\w.-]*):(.*)$", re.S)

EMPTY_HINTS = {
    "folder": "add image files (jpg, jpeg, png, bmp, gif, webp, tif, tiff) to it or its sub-folders "
              "(hidden files and folders are skipped)",
    "filelist": "add one image path per line (blank lines and # comments are ignored)",
    "tar": "the shards need image members named KEY.jpg, KEY.png... (webdataset layout)",
    "hf": "the dataset has no rows; check the split or filter that produced it",
    "coco": "no image passes the filter (paper: <= 3 annotations and a single instance of area "
            "1000-2000 px^2); add ,filter=none to keep every image with an object",
}


def open_probe(source, **options) -> ProbeSet:
    """A ProbeSet from a ProbeSet, a `datasets.Dataset`, a `PREFIX:ARG` spec or a path.

    `options` go to the source (e.g. image_column= / label_column= for datasets). Raises UserError
    for a path that does not exist or cannot be read, an unknown prefix, or a probe set without images.
    """
    probe = _open(source, options)
    if len(probe) == 0:
        hint = EMPTY_HINTS.get(probe.kind, "point it at a folder, file list, tar shards or dataset "
                                            "that contains images")
        raise UserError(f"probe set {probe.spec or source} has no images: {hint}")
    return probe


def _open(source, options: dict) -> ProbeSet:
    if isinstance(source, ProbeSet):
        return source
    # Several sources recorded as one: a list, or specs joined by " + " (as ConcatProbeSet writes)
    if isinstance(source, str) and " + " in source:
        source = [s.strip() for s in source.split(" + ")]
    if isinstance(source, (list, tuple)):
        from .concat import ConcatProbeSet

        parts = [open_probe(s, **options) for s in source]
        return parts[0] if len(parts) == 1 else ConcatProbeSet(parts)
    if isinstance(source, os.PathLike):
        return _open_path(os.fspath(source), options)
    if type(source).__module__.split(".")[0] == "datasets":
        return _open_dataset(source, options)
    if not isinstance(source, str):
        raise UserError(f"cannot use a {type(source).__name__} as a probe set: give a path, a "
                        f"PREFIX:ARG spec, a datasets.Dataset or a ProbeSet")
    m = _PREFIX.match(source)
    if m and m.group(1) in SOURCES:
        return _from_registry(m.group(1), m.group(2), options)
    if m and m.group(1) == "hf-object":
        raise UserError(f"{source} was an in-memory datasets.Dataset: pass that Dataset object "
                        f"again, or save it with save_to_disk and use hf:FOLDER")
    if m and len(m.group(1)) > 1 and not os.path.exists(source):
        hits = near_matches(m.group(1), list(SOURCES))
        hint = f" (did you mean {', '.join(h + ':' for h in hits)}?)" if hits else ""
        raise UserError(f"unknown probe source {m.group(1)!r}{hint}: use one of "
                        f"{', '.join(p + ':' for p in SOURCES)} or a path")
    return _open_path(source, options)


def _from_registry(prefix: str, arg: str, options: dict) -> ProbeSet:
    module, _, func = SOURCES[prefix].partition(":")
    try:
        opener = getattr(importlib.import_module(module), func)
    except ModuleNotFoundError as e:
        if (e.name or "").startswith("neuronatlas"):
            raise UserError(f"probe source {prefix}: is not available in this version of "
                            f"neuronatlas: use a folder, file list, tar shards or hf:") from None
        raise UserError(f"probe source {prefix}: needs the package {e.name!r}: "
                        f"pip install {e.name}") from None
    return opener(arg, **options) if options else opener(arg)


def _open_dataset(ds, options: dict) -> ProbeSet:
    import datasets

    if isinstance(ds, datasets.DatasetDict):
        raise UserError(f"got a DatasetDict with splits {list(ds)}: pass one split, e.g. "
                        f"ds[{next(iter(ds), 'train')!r}]")
    if not isinstance(ds, datasets.Dataset):
        raise UserError(f"a {type(ds).__name__} has no random access: load the dataset without "
                        f"streaming=True (or save_to_disk it) and pass the datasets.Dataset")
    from .hf import HFProbeSet

    return HFProbeSet(ds, **options)


def _open_path(path: str, options: dict) -> ProbeSet:
    expanded = os.path.expanduser(path)
    if not os.path.exists(expanded) and (glob.has_magic(expanded) or "{" in expanded):
        from .tar_shards import expand_braces

        if all(p.lower().endswith(TAR_SUFFIXES) for p in expand_braces(expanded)):
            return _from_registry("tar", path, options)
        raise UserError(f"the pattern {path!r} does not name .tar shards: patterns are only for tar "
                        f"shards; for image files give their folder or a file list")
    if not os.path.exists(expanded):
        raise UserError(f"probe path {path} does not exist: check the spelling (relative paths are "
                        f"resolved against {os.getcwd()})")
    if not os.access(expanded, os.R_OK):
        raise UserError(f"cannot read probe path {path}: permission denied; fix its permissions")
    if os.path.isdir(expanded):
        return _from_registry("folder", path, options)
    lower = expanded.lower()
    if lower.endswith(LIST_SUFFIXES):
        return _from_registry("filelist", path, options)
    if lower.endswith(TAR_SUFFIXES):
        return _from_registry("tar", path, options)
    raise UserError(f"do not know how to read {path} as a probe set: give a folder of images, a file "
                    f"list (.txt, .csv, .tsv), tar shards (.tar) or a PREFIX:ARG spec")
