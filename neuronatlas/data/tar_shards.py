"""Uncompressed tar shards in the webdataset layout: `tar:ARG` or a bare `.tar` path / pattern.

ARG is one shard, a glob (`shards/*.tar`) or a brace pattern (`shards-{000..009}.tar`, `{a,b}.tar`).
Members `KEY.EXT` are grouped by KEY (the member name up to the first dot of its basename, folders
included). Each KEY with an image member is one image; its label comes from `KEY.cls`, else the
"label" field of `KEY.json`, else `KEY.txt`. Listing reads each shard's headers once and keeps the
offset and size of every image, so `read_bytes` is one positioned read: random access in any order,
from any worker process. That is also why compressed shards (.tar.gz) are refused: gzip can only be
read from the start.

image_id = `SHARDBASENAME/KEY`; path = `SHARDPATH::MEMBER`.
"""

from __future__ import annotations

import glob
import json
import os
import re
import tarfile

from ..errors import UserError
from .folder import IMAGE_EXTS
from .probe import ImageItem, ProbeSet

IMAGE_ORDER = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff")  # preference per KEY
COMPRESSED = (".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".tar.zst", ".gz")
_BRACE = re.compile(r"\{([^{}]*)\}")
_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)$")


def expand_braces(pattern: str) -> list[str]:
    """`a{0..2}b{x,y}` -> a0bx a0by a1bx ...; ranges keep zero padding (`{08..10}` -> 08 09 10)."""
    m = _BRACE.search(pattern)
    if m is None:
        return [pattern]
    body, head, tail = m.group(1), pattern[:m.start()], pattern[m.end():]
    r = _RANGE.match(body)
    if r:
        lo, hi = int(r.group(1)), int(r.group(2))
        padded = any(len(x.lstrip("-")) > 1 and x.lstrip("-").startswith("0") for x in r.groups())
        width = max(len(r.group(1)), len(r.group(2))) if padded else 0  # bash rule
        step = 1 if hi >= lo else -1
        choices = [str(i).zfill(width) for i in range(lo, hi + step, step)]
    elif "," in body:
        choices = body.split(",")
    else:  # `{x}` is not a pattern in bash either: keep it literally
        return [head + "{" + body + "}" + p for p in expand_braces(tail)]
    return [e for c in choices for e in expand_braces(head + c + tail)]


def is_compressed(path: str) -> bool:
    return path.lower().endswith(COMPRESSED)


def resolve_shards(arg: str) -> list[str]:
    """Absolute shard paths in pattern order (each glob sorted), without duplicates."""
    shards: list[str] = []
    for part in expand_braces(os.path.expanduser(arg)):
        if glob.has_magic(part):
            hits = sorted(glob.glob(part))
            if not hits:
                raise UserError(f"no tar shards match {part!r}: check the pattern and the folder")
        else:
            if not os.path.exists(part):
                raise UserError(f"tar shard {part} does not exist: check the path or the brace range "
                                f"in {arg!r}")
            hits = [part]
        for h in hits:
            h = os.path.abspath(h)
            if h not in shards:
                shards.append(h)
    for s in shards:
        if is_compressed(s):
            raise UserError(f"{s} is a compressed tar: recompress it as an uncompressed .tar "
                            f"(e.g. `gunzip -k`), because images are read by random access and a "
                            f"compressed stream can only be read from the start")
        if os.path.isdir(s):
            raise UserError(f"{s} is a folder, not a tar shard: use it as a folder source instead")
    return shards


def split_name(name: str) -> tuple[str, str]:
    """Webdataset split: key = path up to the first dot of the basename, ext = the rest."""
    folder, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), (ext if dot else "")


def label_from(ext: str, data: bytes) -> str | None:
    text = data.decode("utf-8", "replace").strip()
    if ext == "json":
        try:
            value = json.loads(text)
        except ValueError:
            return None
        value = value.get("label") if isinstance(value, dict) else None
        return None if value is None else str(value)
    return text or None


def scan_shard(path: str) -> list[tuple[str, str, int, int, str | None]]:
    """(key, member, data offset, size, label) per image, in tar order, reading headers once."""
    groups: dict[str, dict] = {}
    try:
        with open(path, "rb") as f, tarfile.open(fileobj=f, mode="r:") as tf:
            for m in tf:
                if not m.isfile() or m.issparse():
                    continue
                name = m.name[2:] if m.name.startswith("./") else m.name
                key, ext = split_name(name)
                if not ext or key.rpartition("/")[2].startswith("."):
                    continue  # hidden (e.g. macOS `._x`) or extension-less members
                ext = ext.lower()
                g = groups.setdefault(key, {})
                if ext in IMAGE_EXTS and ext not in g:
                    g[ext] = (m.name, m.offset_data, m.size)
                elif ext in ("cls", "json", "txt") and m.size < 1 << 16:
                    pos = f.tell()  # tarfile keeps its own position; restore it after the read
                    f.seek(m.offset_data)
                    g["_" + ext] = label_from(ext, f.read(m.size))
                    f.seek(pos)
    except tarfile.ReadError as e:
        raise UserError(f"{path} is not a readable uncompressed tar file ({e}): give .tar shards "
                        f"written by tar or webdataset") from None
    except OSError as e:
        raise UserError(f"cannot read tar shard {path}: {e.strerror or e}") from None
    out = []
    for key, g in groups.items():
        ext = next((e for e in IMAGE_ORDER if e in g), None)
        if ext is None:
            continue
        label = next((g["_" + e] for e in ("cls", "json", "txt") if g.get("_" + e)), None)
        out.append((key, *g[ext], label))
    return out


class TarShardProbeSet(ProbeSet):
    kind = "tar"

    def __init__(self, arg: str):
        self.shards = resolve_shards(arg)
        self.spec = f"tar:{os.path.abspath(os.path.expanduser(arg))}"  # reopens from any folder
        names = [os.path.basename(s) for s in self.shards]
        clash = {n for n in names if names.count(n) > 1}
        if clash:
            raise UserError(f"tar shards in different folders share the name {sorted(clash)[0]}, so "
                            f"image ids (SHARD/KEY) would clash: rename the shards")
        self.items, self.locs = [], []  # locs[i] = (shard number, offset, size)
        for si, (shard, base) in enumerate(zip(self.shards, names)):
            for key, member, offset, size, label in scan_shard(shard):
                self.items.append(ImageItem(f"{base}/{key}", f"{shard}::{member}", label))
                self.locs.append((si, offset, size))
        self._fds: dict[int, int] = {}
        self._pid = os.getpid()

    def read_bytes(self, index: int) -> bytes:
        si, offset, size = self.locs[index]
        if self._pid != os.getpid():  # forked worker: its own descriptors (pread keeps no offset)
            self._fds, self._pid = {}, os.getpid()
        fd = self._fds.get(si)
        if fd is None:
            fd = self._fds[si] = os.open(self.shards[si], os.O_RDONLY)
        data = os.pread(fd, size, offset)
        if len(data) != size:
            raise OSError(f"tar shard {self.shards[si]} is truncated: got {len(data)} of {size} bytes")
        return data

    def fingerprint(self) -> str:
        import hashlib

        h = hashlib.sha256(super().fingerprint().encode())
        h.update(repr([s for _, _, s in self.locs]).encode())  # sizes are free: catch rewritten shards
        return h.hexdigest()[:16]

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k not in ("_fds", "_pid")}

    def __setstate__(self, state):
        self.__dict__.update(state, _fds={}, _pid=os.getpid())

    def __del__(self):
        for fd in getattr(self, "_fds", {}).values():
            try:
                os.close(fd)
            except OSError:
                pass


def open_source(arg: str) -> TarShardProbeSet:
    return TarShardProbeSet(arg)
