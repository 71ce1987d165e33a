"""A Broden-format folder (the NetDissect dataset) as a probe set with concept masks: `broden:PATH`.

Expected layout (as in Broden1_224 / Broden1_227 from the NetDissect release; only these files are
read):

    PATH/index.csv    header: image,split,ih,iw,sh,sw,color,object,part,material,scene,texture
                      one row per image; `image` is relative to PATH/images/. In the pixel-level
                      category columns (color, object, part, material: any column whose cells
                      name files) a cell holds ";"-separated segmentation PNGs; in the image-level
                      columns (scene, texture) a cell holds ";"-separated label numbers that cover
                      the whole image. Empty cells are fine.
    PATH/label.csv    header: number,name,category,frequency,coverage,syns; `category` like
                      "object(120);part(3)" (the first is used); label 0 is "-" (unlabelled).
    PATH/images/...   the images and the segmentation PNGs. A segmentation pixel's label number is
                      R + 256 * G (the Broden encoding); 0 = no label.

Images are listed in index.csv order (to use one split, point at a copy with a filtered index.csv);
an image's label is its split. Concept ids are "CATEGORY:NAME" (e.g. "object:dog"),
phrases the label name without Broden's "-c"/"-s"/"-m"/"-t" suffix. `masks(i, size)` gives every
concept present in image i as a (size, size) bool mask (nearest-neighbour resized), which is what
`describe(run, "netdissect")` uses.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import UserError
from .folder import read_file
from .probe import ImageItem, ProbeSet

NON_CATEGORY = {"image", "split", "ih", "iw", "sh", "sw"}
SUFFIX = re.compile(r"-[a-z]$")


class BrodenProbeSet(ProbeSet):
    kind = "broden"

    def __init__(self, root):
        root = Path(root).expanduser()
        index, labels = root / "index.csv", root / "label.csv"
        for f in (index, labels):
            if not f.is_file():
                raise UserError(f"{root} is not a Broden-format folder: {f.name} is missing "
                                f"(expected index.csv, label.csv and images/; see "
                                f"neuronatlas/data/broden.py)")
        self.root = root.resolve()
        self.spec = f"broden:{self.root}"
        with open(labels, newline="", encoding="utf-8") as fh:
            self._labels = {}  # number -> (concept id, phrase, category)
            for row in csv.DictReader(fh):
                number, name = int(row["number"]), row["name"].strip()
                if number == 0 or not name or name == "-":
                    continue
                category = (row.get("category") or "").split(";")[0].split("(")[0].strip() or "label"
                self._labels[number] = (f"{category}:{name}", SUFFIX.sub("", name), category)
        with open(index, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames or "image" not in reader.fieldnames:
                raise UserError(f"{index} has no 'image' column; its header must start with "
                                f"image,split,ih,iw,sh,sw,...")
            self.categories = [c for c in reader.fieldnames if c not in NON_CATEGORY]
            self.rows = list(reader)
        sizes = {int(r.get("sh") or 0) for r in self.rows} - {0}
        self.size = max(sizes) if sizes else 112  # mask resolution (netdissect's default)
        self.items = [ImageItem(r["image"], str(self.root / "images" / r["image"]),
                                r.get("split") or None) for r in self.rows]

    def read_bytes(self, index: int) -> bytes:
        return read_file(self.items[index].path)

    def mask_concepts(self) -> list[tuple[str, str, str]]:
        """Every concept of label.csv: (id, phrase, category), in label-number order."""
        return [self._labels[n] for n in sorted(self._labels)]

    def masks(self, index: int, size: int | None = None) -> dict[str, np.ndarray]:
        row = self.rows[index]
        size = size or self.size
        out: dict[str, np.ndarray] = {}

        def add(number: int, mask: np.ndarray) -> None:
            if number in self._labels and mask.any():
                cid = self._labels[number][0]
                out[cid] = out[cid] | mask if cid in out else mask

        for cat in self.categories:
            for cell in (row.get(cat) or "").split(";"):
                cell = cell.strip()
                if not cell:
                    continue
                if cell.lstrip("-").isdigit():  # image-level label (scene, texture)
                    add(int(cell), np.ones((size, size), bool))
                    continue
                with Image.open(self.root / "images" / cell) as im:
                    rgb = np.asarray(im.convert("RGB").resize((size, size), Image.NEAREST))
                seg = rgb[..., 0].astype(np.int64) + 256 * rgb[..., 1].astype(np.int64)
                for number in np.unique(seg):
                    if number:
                        add(int(number), seg == number)
        return out


def open_source(arg: str) -> BrodenProbeSet:
    if not arg:
        raise UserError("broden: needs a folder, e.g. broden:/data/broden1_224")
    return BrodenProbeSet(arg)
