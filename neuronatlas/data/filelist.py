"""A list of image paths in a text file: `filelist:PATH` or a bare `.txt` / `.csv` / `.tsv` path.

One image per line, an optional label after a tab (`.txt`, `.tsv`) or in a second column (`.csv`,
which may start with a `path,label` header). Blank lines and `#` comments are ignored. Relative
paths are resolved against the list's folder, so a list travels with its images. image_id = the
path as written. A listed file that is missing is not an error here: the loader reports it as
unreadable, like a corrupt file, so one stale line does not block a whole run.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from ..errors import UserError
from .folder import read_file
from .probe import ImageItem, ProbeSet


def parse_lines(text: str, is_csv: bool) -> list[tuple[int, str, str | None]]:
    """(line number, path, label) for each entry."""
    out = []
    if is_csv:
        rows = csv.reader(io.StringIO(text))
        for row in rows:
            line = rows.line_num
            if not row or not row[0].strip() or row[0].lstrip().startswith("#"):
                continue
            if not out and [c.strip().lower() for c in row[:2]] in (["path"], ["path", "label"]):
                continue  # header
            label = row[1].strip() if len(row) > 1 and row[1].strip() else None
            out.append((line, row[0].strip(), label))
        return out
    for line, raw in enumerate(text.splitlines(), 1):
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        path, _, label = raw.partition("\t")
        out.append((line, path.strip(), label.strip() or None))
    return out


class FileListProbeSet(ProbeSet):
    kind = "filelist"

    def __init__(self, list_path: str | os.PathLike):
        list_path = Path(list_path).expanduser()
        if not list_path.is_file():
            what = "is not a file" if list_path.exists() else "does not exist"
            raise UserError(f"file list {list_path} {what}: give a text file with one image path "
                            f"per line")
        try:
            text = list_path.read_text(encoding="utf-8-sig")  # -sig: tolerate a BOM from Excel
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"cannot read file list {list_path}: {e}; it must be a readable UTF-8 "
                            f"text file") from None
        self.list_path = list_path.resolve()
        self.spec = f"filelist:{self.list_path}"
        base = self.list_path.parent
        first_line: dict[str, int] = {}
        self.items = []
        for line, path, label in parse_lines(text, list_path.suffix.lower() == ".csv"):
            if path in first_line:
                raise UserError(f"file list {list_path} lists {path!r} twice (lines "
                                f"{first_line[path]} and {line}): remove the duplicate line")
            first_line[path] = line
            full = os.path.normpath(base / Path(path).expanduser())
            self.items.append(ImageItem(path, full, label))

    def read_bytes(self, index: int) -> bytes:
        return read_file(self.items[index].path)


def open_source(arg: str) -> FileListProbeSet:
    return FileListProbeSet(arg)
