"""The photos: source: real photos bundled in scikit-image / scikit-learn, plus a user folder."""

import pickle

import pytest
from PIL import Image

from neuronatlas.data import open_probe
from neuronatlas.data.photos import BUNDLED, PhotosProbeSet, bundled_photos
from neuronatlas.errors import UserError

EXPECTED = {"astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "retina",
            "immunohistochemistry", "motorcycle", "camera", "coins", "moon", "horse", "text", "page",
            "clock", "cell", "colorwheel", "brick", "grass", "gravel", "china", "flower"}


def test_bundled_photos_are_listed_with_labels():
    p = open_probe("photos:")
    assert isinstance(p, PhotosProbeSet) and p.kind == "photos" and p.spec == "photos:"
    names = {it.image_id.removeprefix("photos/") for it in p.items}
    assert names == EXPECTED == {b.name for b in BUNDLED}  # skimage and sklearn are installed here
    labels = {it.image_id: it.label for it in p.items}
    assert labels["photos/chelsea"] == "a cat" and labels["photos/coffee"] == "a cup of coffee"
    assert all(label and label == label.strip() for label in labels.values())
    assert len(bundled_photos()) == len(p)


def test_bundled_photos_decode_to_rgb():
    p = open_probe("photos:")
    for i, it in enumerate(p.items):
        img = p.read_image(i)
        assert img.mode == "RGB" and min(img.size) >= 100, it.image_id
    horse = p.read_image(next(i for i, it in enumerate(p.items) if it.image_id == "photos/horse"))
    assert horse.getpixel((0, 0)) == (255, 255, 255)  # transparent background put on white


def test_read_bytes_is_the_file_and_deterministic():
    p = open_probe("photos:")
    with open(p.items[0].path, "rb") as f:
        assert p.read_bytes(0) == f.read()
    q = pickle.loads(pickle.dumps(p))
    assert q.read_bytes(1) == p.read_bytes(1) and q.fingerprint() == p.fingerprint()


def test_user_folder_is_added(tmp_path):
    (tmp_path / "dogs").mkdir()
    Image.new("RGB", (20, 20), (200, 0, 0)).save(tmp_path / "dogs" / "rex.png")
    Image.new("RGB", (20, 20), (0, 200, 0)).save(tmp_path / "red_fox.jpg")
    Image.new("RGBA", (20, 20), (0, 0, 0, 0)).save(tmp_path / "sunset.png")
    (tmp_path / "sunset.png").with_suffix(".txt").write_text("a sunset over the sea\nmore\n")
    p = open_probe(f"photos:{tmp_path}")
    assert p.spec == f"photos:{tmp_path.resolve()}"
    user = {it.image_id: it.label for it in p.items if it.image_id.startswith("photos/user/")}
    assert user == {"photos/user/dogs/rex.png": "dogs", "photos/user/red_fox.jpg": "red fox",
                    "photos/user/sunset.png": "a sunset over the sea"}
    i = [it.image_id for it in p.items].index("photos/user/sunset.png")
    assert p.read_image(i).getpixel((5, 5)) == (255, 255, 255)
    assert len(p) == len(EXPECTED) + 3


def test_missing_folder_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="not a folder"):
        open_probe(f"photos:{tmp_path / 'nope'}")
