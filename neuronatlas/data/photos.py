"""`photos:` probe source: the real photos that scikit-image and scikit-learn ship inside their wheels.

    photos:              the bundled photos (22 when both packages are installed; none downloads)
    photos:PATH/FOLDER   the bundled photos plus that folder's images

Bundled image_id = `photos/NAME` (the scikit-image loader's name, or china / flower from
`sklearn.datasets.load_sample_images`), label = a short description ("a cat", "a cup of coffee") for
zero-shot (ConSE) checks. Only files present in the installed packages are listed (scikit-image's
other datasets and lfw_subset are left out: they download, or are 25 px faces). A missing package
just drops its photos.

Folder images: image_id = `photos/user/RELPATH`, label = the first line of `STEM.txt` beside the
image if there is one, else the sub-folder name, else the file name with `_`/`-` as spaces.

read_bytes returns the file's bytes unchanged (deterministic); read_image decodes to RGB and puts
transparent pixels (the horse silhouette) on white.
"""

from __future__ import annotations

import importlib.util
import io
import os
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from ..errors import UserError
from .folder import list_images, read_file
from .probe import ImageItem, ProbeSet


@dataclass(frozen=True)
class BundledPhoto:
    name: str
    package: str  # the importable package holding the file
    relpath: str  # inside that package
    label: str


_SK = "skimage"
_SKL = "sklearn"
BUNDLED: tuple[BundledPhoto, ...] = tuple(BundledPhoto(*row) for row in (
    ("astronaut", _SK, "data/astronaut.png", "an astronaut"),
    ("chelsea", _SK, "data/chelsea.png", "a cat"),
    ("coffee", _SK, "data/coffee.png", "a cup of coffee"),
    ("rocket", _SK, "data/rocket.jpg", "a rocket on a launch pad"),
    ("hubble_deep_field", _SK, "data/hubble_deep_field.jpg", "galaxies in deep space"),
    ("retina", _SK, "data/retina.jpg", "the retina of an eye"),
    ("immunohistochemistry", _SK, "data/ihc.png", "stained tissue under a microscope"),
    ("motorcycle", _SK, "data/motorcycle_left.png", "a motorcycle"),
    ("camera", _SK, "data/camera.png", "a man with a camera"),
    ("coins", _SK, "data/coins.png", "coins"),
    ("moon", _SK, "data/moon.png", "the surface of the moon"),
    ("horse", _SK, "data/horse.png", "a horse"),
    ("text", _SK, "data/text.png", "printed text"),
    ("page", _SK, "data/page.png", "a page of a book"),
    ("clock", _SK, "data/clock_motion.png", "a clock"),
    ("cell", _SK, "data/cell.png", "a cell under a microscope"),
    ("colorwheel", _SK, "data/color.png", "a color wheel"),
    ("brick", _SK, "data/brick.png", "a brick wall"),
    ("grass", _SK, "data/grass.png", "grass"),
    ("gravel", _SK, "data/gravel.png", "gravel"),
    ("china", _SKL, "datasets/images/china.jpg", "a chinese temple"),
    ("flower", _SKL, "datasets/images/flower.jpg", "a flower"),
))


def _package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def bundled_photos() -> list[tuple[BundledPhoto, Path]]:
    """The bundled photos whose files exist in this installation, with their paths."""
    out, dirs = [], {}
    for photo in BUNDLED:
        if photo.package not in dirs:
            dirs[photo.package] = _package_dir(photo.package)
        root = dirs[photo.package]
        if root is not None and (root / photo.relpath).is_file():
            out.append((photo, root / photo.relpath))
    return out


def _folder_label(root: Path, rel: str) -> str:
    path = root / rel
    sidecar = path.with_suffix(".txt")
    if sidecar.is_file():
        first = sidecar.read_text(errors="replace").strip().splitlines()
        if first and first[0].strip():
            return first[0].strip()
    if "/" in rel:
        return rel.split("/", 1)[0]
    return path.stem.replace("_", " ").replace("-", " ")


class PhotosProbeSet(ProbeSet):
    kind = "photos"

    def __init__(self, folder: str | os.PathLike | None = None):
        found = bundled_photos()
        if not found:
            raise UserError("photos: needs the images that scikit-image and scikit-learn ship: "
                            "pip install scikit-image scikit-learn (or run scripts/setup.sh)")
        self.items = [ImageItem(f"photos/{p.name}", str(path), p.label) for p, path in found]
        self.spec = "photos:"
        if folder:
            root = Path(folder).expanduser()
            if not root.is_dir():
                raise UserError(f"photos:{folder}: {root} is not a folder; give a folder of images to "
                                f"add to the bundled photos, or write just photos:")
            root = root.resolve()
            self.spec = f"photos:{root}"
            for rel in list_images(root):
                self.items.append(ImageItem(f"photos/user/{rel}", str(root / rel), _folder_label(root, rel)))

    def read_bytes(self, index: int) -> bytes:
        return read_file(self.items[index].path)

    def read_image(self, index: int) -> Image.Image:
        return _decode(self.read_bytes(index))

    def load(self, index: int) -> tuple[Image.Image, bytes]:
        raw = self.read_bytes(index)
        return _decode(raw), raw


def _decode(raw: bytes) -> Image.Image:
    """RGB, with transparent pixels put on white (the horse silhouette)."""
    with Image.open(io.BytesIO(raw)) as im:
        im.load()
        if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
            im = im.convert("RGBA")
            white = Image.new("RGBA", im.size, (255, 255, 255, 255))
            return Image.alpha_composite(white, im).convert("RGB")
        return im.convert("RGB")


def open_source(arg: str = "") -> PhotosProbeSet:
    return PhotosProbeSet(arg.strip() or None)
