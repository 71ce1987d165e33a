"""The COCO instances source on a small COCO-format file written here: the paper's image filter,
polygon masks == the drawn shapes, masks mapped through the model's own resize + center crop (an
object the crop cuts away is dropped), one-line errors, and token ablation running over it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image, ImageDraw

from neuronatlas.data import open_probe
from neuronatlas.errors import UserError


def _rect(x, y, w, h):
    return [[x, y, x + w, y, x + w, y + h, x, y + h]]


def write_coco(root):
    """4 images (W=120, H=80): 1 passes (a single 40x30 dog = 1200 px^2 + a big cat), 2 has 4
    annotations, 3 has only a small object (500 px^2), 4 has two dogs of the right size (not single)
    plus a small bird (900 px^2) at the far left edge (cut away by a center crop)."""
    (root / "val").mkdir(parents=True)
    (root / "annotations").mkdir()
    specs = {1: [("dog", (40, 25, 40, 30)), ("cat", (0, 0, 120, 20))],
             2: [("dog", (10, 10, 40, 30)), ("cat", (60, 10, 20, 20)), ("cat", (60, 40, 20, 20)),
                 ("bird", (90, 50, 20, 20))],
             3: [("dog", (10, 10, 25, 20))],
             4: [("dog", (30, 5, 40, 30)), ("dog", (30, 45, 40, 30)), ("bird", (0, 20, 15, 60))]}
    cats = {"dog": 1, "cat": 2, "bird": 3}
    images, anns = [], []
    for i, objs in specs.items():
        im = Image.new("RGB", (120, 80), (200, 200, 200))
        d = ImageDraw.Draw(im)
        for name, (x, y, w, h) in objs:
            d.rectangle([x, y, x + w, y + h], fill=(40 * cats[name], 0, 0))
            anns.append(dict(id=len(anns) + 1, image_id=i, category_id=cats[name],
                             segmentation=_rect(x, y, w, h), area=float(w * h), iscrowd=0,
                             bbox=[x, y, w, h]))
        im.save(root / "val" / f"{i:012d}.jpg")
        images.append(dict(id=i, file_name=f"{i:012d}.jpg", width=120, height=80))
    path = root / "annotations" / "instances_val.json"
    path.write_text(json.dumps(dict(images=images, annotations=anns,
                                    categories=[dict(id=v, name=k) for k, v in cats.items()])))
    return path


def test_paper_filter_and_masks(tmp_path):
    path = write_coco(tmp_path)
    probe = open_probe(f"coco:{path}")  # images folder found from instances_val.json -> ../val
    assert [it.image_id for it in probe.items] == ["1"]
    objs = probe.objects(0)
    assert [(n, m.shape) for _, n, m in objs] == [("dog", (80, 120))]
    m = objs[0][2]
    want = np.zeros((80, 120), bool)
    want[25:55, 40:80] = True  # pixel centres inside the 40 x 30 box: its area, 1200 pixels
    assert np.array_equal(m, want)
    # the same mask as pycocotools' own COCO API reads from the file
    from pycocotools.coco import COCO

    api = COCO(str(path))
    (ann,) = [a for a in api.loadAnns(api.getAnnIds(imgIds=[1])) if a["category_id"] == 1]
    assert np.array_equal(m, api.annToMask(ann).astype(bool)) and m.sum() == ann["area"]
    every = open_probe(f"coco:{path},filter=none")
    assert len(every) == 4 and len(every.objects(0, study_only=False)) == 2
    assert probe.read_image(0).size == (120, 80)


def test_masks_follow_the_models_crop(tmp_path):
    from torchvision.transforms import v2 as T

    from neuronatlas.vlm.ablation_run import coco_items
    from tests.vlm.tiny import tiny_subject

    probe = open_probe(f"coco:{write_coco(tmp_path)},filter=none")
    s = tiny_subject()  # 30 px, grid 5
    s.view = T.Compose([T.Resize(30), T.CenterCrop(30)])  # llava-1.5's processor: shorter side, crop
    items = coco_items(s, probe, 3)  # image 4: the bird at x 0..15 of 120 lies outside the crop
    assert sorted(it.name for it in items) == ["dog", "dog"]
    # the dog of image 1 (x 40..80, y 25..55 of 120 x 80) -> resize to 45 x 30, crop x 7.5..37.5
    (dog,) = [it for it in coco_items(s, probe, 0) if it.name == "dog"]
    ys, xs = np.nonzero(dog.mask)
    assert abs(ys.min() - 25 * 30 / 80) <= 1.5 and abs(ys.max() - 55 * 30 / 80) <= 1.5
    assert abs(xs.min() - (40 * 30 / 80 - 7.5)) <= 1.5 and abs(xs.max() - (80 * 30 / 80 - 7.5)) <= 1.5


def test_errors_are_one_line(tmp_path):
    with pytest.raises(UserError, match="not found"):
        open_probe(f"coco:{tmp_path}/missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(UserError, match="not a COCO instances file"):
        open_probe(f"coco:{bad}")
    path = write_coco(tmp_path / "c")
    with pytest.raises(UserError, match="unknown coco option"):
        open_probe(f"coco:{path},imgs=x")
    with pytest.raises(UserError, match="images folder"):
        open_probe(f"coco:{path},images={tmp_path}/nope")


def test_ablation_runs_over_coco(tmp_path):
    import torch

    from neuronatlas.vlm.ablation_run import AblationConfig, run_ablation
    from neuronatlas.vlm.subject import load_subject

    torch.set_num_threads(1)
    path = write_coco(tmp_path)
    store = run_ablation(load_subject("zoo:world-llava"), f"coco:{path},filter=none", tmp_path / "run",
                         AblationConfig(settings=("polling", "vqa"), token_sets=("object",),
                                        buffers=(0,), ks=(), mean_images=4), show_progress=False)
    df = store.table("images")
    clean = df[df.token_set == "none"]
    assert set(clean.setting) == {"polling"}  # COCO objects have no VQA question
    assert set(clean.name) <= {"dog", "cat", "bird"} and len(clean) >= 5
    assert clean.prompt.str.startswith("is there a ").all()
