"""COCO-format instance annotations: `coco:ANNOTATIONS.json[,images=DIR][,filter=paper|none]`.

The images are the JSON's `images` entries found in DIR (default: the folder named like the JSON's
`instances_NAME.json` next to its folder, e.g. coco/val2017 for coco/annotations/
instances_val2017.json, else the JSON's own folder), in id order; image_id = the COCO id.
`objects(index)` gives every non-crowd instance as (category name, boolean mask at the image's own
size), polygons rasterised by pycocotools (pixel centres inside the polygon).

`filter=paper` (the default) keeps the images of Neo et al. 2024 (llava-interp): at most 3
annotations, and some category with exactly one instance whose area is in (1000, 2000) px^2; the
objects asked about are then those single instances (`objects(index, study_only=True)`).
`filter=none` keeps every image that has a non-crowd instance.

Crop correction: a model resizes and crops images its own way (llava-1.5's processor resizes the
shorter side and center-crops; the original LLaVA padded). Masks are not corrected here but mapped
through the model's own view by the consumer (neuronatlas.vlm: `VlmSubject.seen` applied to the
mask), so objects cut away by a crop get an empty mask and are skipped.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..errors import UserError
from .folder import read_file
from .probe import ImageItem, ProbeSet

AREA = (1000.0, 2000.0)
MAX_ANNOTATIONS = 3


def polygon_mask(segmentation, height: int, width: int) -> np.ndarray:
    """Boolean [H, W] mask of a COCO polygon list ([[x0, y0, x1, y1, ...], ...]), rasterised by
    pycocotools, the format's own implementation (a pixel is in when its centre is: a w x h box
    covers exactly w x h pixels, the annotation's `area`; drawing the outline too would add a rim)."""
    try:
        from pycocotools import mask as coco_mask
    except ImportError:
        raise UserError("COCO masks need pycocotools: pip install 'neuronatlas[coco]'") from None
    polys = [list(map(float, p)) for p in segmentation if len(p) >= 6]
    if not polys:
        return np.zeros((height, width), bool)
    rle = coco_mask.merge(coco_mask.frPyObjects(polys, height, width))
    return coco_mask.decode(rle).astype(bool)


def paper_objects(anns: list[dict]) -> list[dict]:
    """The annotations the paper asks about: none if the image has more than 3 annotations; else the
    single instances (their category occurs once) with area in (1000, 2000)."""
    if len(anns) > MAX_ANNOTATIONS:
        return []
    counts: dict[int, int] = {}
    for a in anns:
        counts[a["category_id"]] = counts.get(a["category_id"], 0) + 1
    return [a for a in anns if counts[a["category_id"]] == 1 and AREA[0] < float(a["area"]) < AREA[1]
            and not a.get("iscrowd")]


class CocoProbeSet(ProbeSet):
    kind = "coco"

    def __init__(self, annotations: str | os.PathLike, images: str | os.PathLike | None = None,
                 filter: str = "paper"):
        path = Path(annotations).expanduser()
        if not path.is_file():
            raise UserError(f"COCO annotations {path} not found: give coco:PATH/instances_NAME.json")
        if filter not in ("paper", "none"):
            raise UserError(f"coco filter must be paper or none (got {filter!r})")
        try:
            data = json.loads(path.read_text())
            cats = {int(c["id"]): str(c["name"]) for c in data["categories"]}
            imgs = sorted(data["images"], key=lambda im: int(im["id"]))
            anns = data["annotations"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise UserError(f"{path} is not a COCO instances file ({type(e).__name__}: {e}); it needs "
                            "images, annotations and categories") from None
        self.root = Path(images).expanduser() if images else self._default_images(path)
        if not self.root.is_dir():
            raise UserError(f"COCO images folder {self.root} not found: pass coco:{path},images=DIR")
        by_image: dict[int, list[dict]] = {}
        for a in anns:
            by_image.setdefault(int(a["image_id"]), []).append(a)
        self.categories, self.filter = cats, filter
        self.spec = f"coco:{path.resolve()},images={self.root.resolve()},filter={filter}"
        self.items, self.meta, self._anns, self._study = [], [], [], []
        for im in imgs:
            a = by_image.get(int(im["id"]), [])
            study = paper_objects(a) if filter == "paper" else [x for x in a if not x.get("iscrowd")]
            if not study:
                continue
            self.items.append(ImageItem(str(im["id"]), str(self.root / im["file_name"]), None))
            self.meta.append(im)
            self._anns.append(a)
            self._study.append({id(x) for x in study})

    @staticmethod
    def _default_images(path: Path) -> Path:
        stem = path.stem
        if stem.startswith("instances_"):
            cand = path.parent.parent / stem[len("instances_"):]
            if cand.is_dir():
                return cand
        return path.parent

    def read_bytes(self, index: int) -> bytes:
        return read_file(self.items[index].path)

    def objects(self, index: int, study_only: bool = True) -> list[tuple[int, str, np.ndarray]]:
        """(annotation id, category name, mask [H, W] at the image's own size) per instance."""
        im = self.meta[index]
        h, w = int(im["height"]), int(im["width"])
        out = []
        for a in self._anns[index]:
            if a.get("iscrowd") or (study_only and id(a) not in self._study[index]):
                continue
            seg = a.get("segmentation")
            if not isinstance(seg, list):
                continue  # RLE (crowd) segmentations are not objects to ask about
            out.append((int(a["id"]), self.categories[int(a["category_id"])], polygon_mask(seg, h, w)))
        return out


def open_source(arg: str) -> CocoProbeSet:
    path, *opts = arg.split(",")
    kw = {}
    for o in opts:
        k, eq, v = o.partition("=")
        if not eq or k.strip() not in ("images", "filter"):
            raise UserError(f"unknown coco option {o!r}: write coco:ANNOTATIONS.json[,images=DIR]"
                            "[,filter=paper|none]")
        kw[k.strip()] = v.strip()
    return CocoProbeSet(path, **kw)
