"""Shared fixtures for the zoo tests: the real classifiers, MiniLM and bundled photos, loaded once."""

import numpy as np
import pytest
from PIL import Image

# bundled photo -> the caption a person would give it (all ship inside scikit-image's wheel).
PHOTOS = {
    "chelsea": "a cat", "coffee": "a cup of coffee", "astronaut": "an astronaut",
    "rocket": "a rocket", "horse": "a horse", "motorcycle": "a motorcycle", "clock": "a clock",
}


def skimage_photo(name: str) -> Image.Image:
    """Fallback when the `photos:` source is not importable: read scikit-image's data directly."""
    import skimage.data

    a = skimage.data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(skimage.data, name)()
    if a.dtype == bool:  # the horse silhouette: True = background
        a = a.astype(np.uint8) * 255
    if a.ndim == 2:
        a = np.stack([a] * 3, -1)
    return Image.fromarray(a[..., :3].astype(np.uint8))


@pytest.fixture(scope="session")
def photos() -> dict[str, Image.Image]:
    try:
        from neuronatlas.data.photos import PhotosProbeSet
    except ImportError:
        return {name: skimage_photo(name) for name in PHOTOS}
    source = PhotosProbeSet()
    index = {item.image_id.removeprefix("photos/"): i for i, item in enumerate(source.items)}
    return {name: source.read_image(index[name]) for name in PHOTOS}


@pytest.fixture(scope="session")
def effnet():
    from neuronatlas.models.zoo_classifiers import build_efficientnet_lite0

    return build_efficientnet_lite0()


@pytest.fixture(scope="session")
def mobilenet():
    from neuronatlas.models.zoo_classifiers import build_mobilenet_v2

    return build_mobilenet_v2()


@pytest.fixture(scope="session")
def minilm(tmp_path_factory):
    from neuronatlas.backends import load_text_embedder

    return load_text_embedder("zoo:minilm", cache_dir=tmp_path_factory.mktemp("text-cache"))


@pytest.fixture(scope="session")
def captions() -> dict[str, str]:
    return dict(PHOTOS)
