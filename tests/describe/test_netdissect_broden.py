"""A Broden-format folder as a NetDissect probe set: a tiny one generated here, a model whose
channels are the image's R, G and B planes, and the labels NetDissect finds for them."""

import numpy as np
import pytest
from PIL import Image

import neuronatlas as na
from neuronatlas.describe import describe
from neuronatlas.errors import UserError

RGB_MODEL = '''
import torch
from torch import nn

from neuronatlas.models.target import Preprocess


class Planes(nn.Module):
    def __init__(self):
        super().__init__()
        self.planes = nn.Conv2d(3, 3, 1)  # the identity: channel c = colour plane c
        with torch.no_grad():
            self.planes.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
            self.planes.bias.zero_()

    def forward(self, x):
        return self.planes(x)


def build():
    return Planes().eval(), Preprocess(size=32, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
'''

LABELS = """number,name,category,frequency,coverage,syns
0,-,-,0,0,
1,red-c,color(20),20,0.1,
2,dog,object(20);part(1),20,0.1,
3,kitchen-s,scene(10),10,1.0,
4,grass,material(20),20,0.2,
"""


def seg_png(path, labels_HW):
    """Broden encoding: label number = R + 256 * G."""
    rgb = np.zeros(labels_HW.shape + (3,), np.uint8)
    rgb[..., 0], rgb[..., 1] = labels_HW % 256, labels_HW // 256
    Image.fromarray(rgb).save(path)


def make_broden(root, n=12, size=32, seed=0):
    """Each image: a red square (color mask 'red-c'), a blue square (object 'dog'), green ground
    (material 'grass'), each category in its own segmentation PNG at half the image size; even
    images are 'kitchen-s' scenes (an image-level label)."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "label.csv").write_text(LABELS)
    rows = ["image,split,ih,iw,sh,sw,color,object,part,material,scene,texture"]
    sh = size // 2
    for i in range(n):
        img = np.zeros((size, size, 3), np.uint8)
        color, obj, mat = (np.zeros((sh, sh), np.int64) for _ in range(3))
        img[size * 3 // 4:, :, 1] = 200
        mat[sh * 3 // 4:, :] = 4
        r0, c0 = rng.integers(0, size // 2, 2) // 2 * 2  # even: aligned with the half-size masks
        img[r0:r0 + 8, c0:c0 + 8, 0] = 255
        color[r0 // 2:r0 // 2 + 4, c0 // 2:c0 // 2 + 4] = 1
        r1, c1 = (size // 2 + 8 - r0) // 2 * 2, (size // 2 + 8 - c0) // 2 * 2
        img[r1:r1 + 8, c1:c1 + 8, 2] = 255
        obj[r1 // 2:r1 // 2 + 4, c1 // 2:c1 // 2 + 4] = 2
        name = f"ade/img{i:02d}.png"
        (root / "images" / "ade").mkdir(exist_ok=True)
        Image.fromarray(img).save(root / "images" / name)
        for cat, seg in (("color", color), ("object", obj), ("material", mat)):
            seg_png(root / "images" / f"ade/img{i:02d}_{cat}.png", seg)
        scene = "3" if i % 2 == 0 else ""
        rows.append(f"{name},train,{size},{size},{sh},{sh},ade/img{i:02d}_color.png,"
                    f"ade/img{i:02d}_object.png,,ade/img{i:02d}_material.png,{scene},")
    (root / "index.csv").write_text("\n".join(rows) + "\n")
    return root


def test_broden_probe_masks(tmp_path):
    probe = na.open_probe(f"broden:{make_broden(tmp_path / 'broden', n=4)}")
    assert len(probe) == 4 and probe.items[0].label == "train"
    assert [c[0] for c in probe.mask_concepts()] == ["color:red-c", "object:dog", "scene:kitchen-s",
                                                     "material:grass"]
    assert probe.mask_concepts()[0][1:] == ("red", "color")
    m = probe.masks(0, 32)
    assert set(m) == {"color:red-c", "object:dog", "material:grass", "scene:kitchen-s"}
    assert m["scene:kitchen-s"].all() and "scene:kitchen-s" not in probe.masks(1, 32)
    img = np.asarray(probe.read_image(0))
    np.testing.assert_array_equal(m["color:red-c"], img[..., 0] == 255)
    np.testing.assert_array_equal(m["object:dog"], img[..., 2] == 255)
    assert m["material:grass"].sum() == 8 * 32
    assert probe.masks(0, 16)["color:red-c"].sum() == 16  # default-size masks: 4 x 4


def test_netdissect_on_a_broden_folder(tmp_path):
    model = tmp_path / "planes.py"
    model.write_text(RGB_MODEL)
    root = make_broden(tmp_path / "broden")
    run = na.record(f"{model}:build", f"broden:{root}", tmp_path / "run", layers="planes",
                    num_workers=0)
    labels = describe(run, "netdissect", quantile=0.05)
    top = labels[labels["rank"] == 0].set_index("unit")
    assert top.loc["planes:0", ["label", "concept", "category"]].tolist() == \
        ["red", "color:red-c", "color"]
    assert top.loc["planes:2", "label"] == "dog"
    assert top.loc["planes:1", "label"] == "grass"
    assert top.loc["planes:0", "score"] > 0.5
    assert run.label_config("netdissect")["n_concepts"] == 4


def test_broden_folder_errors(tmp_path):
    (tmp_path / "b").mkdir()
    with pytest.raises(UserError, match="index.csv"):
        na.open_probe(f"broden:{tmp_path / 'b'}")
