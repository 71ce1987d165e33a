"""Segmentation metrics (hand-computed), heatmap -> mask, neuron choice, and the .mat loader."""

import pickle

import numpy as np
import pytest

from neuronatlas.errors import UserError
from neuronatlas.lens.segmentation import (ImagenetSegmentation, SegmentationScores, aligned_neurons,
                                           average_precision, class_heatmap, heatmap_to_mask, image_ap,
                                           minmax, random_neurons, upsample,
                                           write_imagenet_segmentation)


def test_average_precision_hand_computed_and_sklearn():
    # positives at ranks 1 and 3: AP = (1/1 + 2/3) / 2
    assert average_precision([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1]) == pytest.approx(5 / 6)
    assert average_precision([0, 0], [0.3, 0.1]) == 0.0
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(0)
    for _ in range(5):
        y = rng.random(200) < 0.3
        s = np.round(rng.random(200), 1)  # many ties
        assert average_precision(y, s) == pytest.approx(average_precision_score(y, s), abs=1e-12)


def test_image_ap_hand_computed():
    score = np.array([[0.9, 0.6], [0.2, 0.1]])
    truth = np.array([[1, 0], [0, 0]], bool)
    # 8 channel-pixels, 4 positive; ranked: 0.9,0.9 (both +), 0.8 (+), 0.6 (-), 0.4 (+), ...
    assert image_ap(score, truth) == pytest.approx(0.5 * 1 + 0.25 * 1 + 0.25 * 0.8)


def test_scores_hand_computed():
    sc = SegmentationScores()
    sc.add(np.array([[1, 1], [0, 0]], bool), np.array([[1, 0], [0, 0]], bool))
    assert sc.pixel_accuracy == 0.75
    np.testing.assert_allclose(sc.iou, [2 / 3, 1 / 2])
    assert sc.miou == pytest.approx((2 / 3 + 1 / 2) / 2)
    # pooled over images, not averaged per image
    sc.add(np.ones((2, 2), bool), np.ones((2, 2), bool))
    assert sc.pixel_accuracy == 7 / 8
    np.testing.assert_allclose(sc.iou, [2 / 3, 5 / 6])
    with pytest.raises(UserError, match="differ in size"):
        sc.add(np.ones((2, 2), bool), np.ones((3, 2), bool))


def test_perfect_and_inverted_prediction():
    truth = np.zeros((8, 8), bool)
    truth[2:5, 3:7] = True
    good, bad = SegmentationScores(), SegmentationScores()
    good.add(truth, truth, truth.astype(float))
    bad.add(~truth, truth, (~truth).astype(float))
    assert good.summary()["pixel_accuracy"] == 1 and good.miou == 1 and good.map == 1
    assert bad.pixel_accuracy == 0 and bad.miou == 0 and bad.map < 0.6


def test_upsample_bilinear_half_pixel():
    up = upsample(np.array([[0.0, 1.0], [0.0, 1.0]]), (4, 4))
    np.testing.assert_allclose(up[0], [0, 0.25, 0.75, 1.0], atol=1e-6)
    np.testing.assert_allclose(up[:, 1], 0.25, atol=1e-6)


def test_heatmap_to_mask():
    score, mask = heatmap_to_mask(np.array([[5.0, 1.0], [1.0, 1.0]]), (2, 2))
    np.testing.assert_allclose(score, [[1, 0], [0, 0]])
    assert mask.tolist() == [[True, False], [False, False]]
    assert (minmax(np.full((3, 3), 2.0)) == 0).all()


def test_aligned_and_random_neurons():
    pcs = np.array([[1.0, 0], [0, 1.0], [-0.9, 0.1], [0.5, 0.5]])
    cls = np.array([[1.0, 0], [0, 1.0]])
    np.testing.assert_array_equal(aligned_neurons(pcs, cls, 2), [[0, 3], [1, 3]])  # pc . e
    np.testing.assert_array_equal(aligned_neurons(pcs, cls, 2, signed=False), [[0, 2], [1, 3]])
    r = random_neurons(100, 10, 3, seed=1)
    assert r.shape == (3, 10) and all(len(set(row)) == 10 for row in r)
    np.testing.assert_array_equal(r, random_neurons(100, 10, 3, seed=1))
    with pytest.raises(UserError, match="dimensions"):
        aligned_neurons(pcs, np.ones((1, 3)), 2)


def test_class_heatmap_sums_neurons_and_projects():
    e = np.zeros((2, 3, 2))
    e[0, 0] = [1, 0]
    e[1, 0] = [2, 5]
    e[1, 2] = [0, 1]
    np.testing.assert_allclose(class_heatmap(e, np.array([1.0, 0.0])), [3, 0, 0])
    np.testing.assert_allclose(class_heatmap(e, np.array([0.0, 1.0])), [5, 0, 1])


def test_imagenet_segmentation_mat_round_trip(tmp_path):
    import h5py

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (5, 7, 3), dtype=np.uint8),
              rng.integers(0, 256, (6, 4, 3), dtype=np.uint8)]
    masks = [rng.random((5, 7)) > 0.5, rng.random((6, 4)) > 0.5]
    path = tmp_path / "gtsegs_ijcv.mat"
    write_imagenet_segmentation(path, images, masks)
    with h5py.File(path, "r") as f:  # the MATLAB column-major layout, checked independently
        raw = np.asarray(f[f["/value/img"][0, 0]])
        assert raw.shape == (3, 7, 5) and raw[2, 6, 1] == images[0][1, 6, 2]
        cell = f[f["/value/gt"][1, 0]]
        assert cell.shape == (1, 1) and f[cell[0, 0]].shape == (4, 6)
    ds = ImagenetSegmentation(path)
    assert len(ds) == 2
    for i in range(2):
        np.testing.assert_array_equal(np.asarray(ds.image(i)), images[i])
        np.testing.assert_array_equal(ds.mask(i), masks[i])
    again = pickle.loads(pickle.dumps(ds))
    np.testing.assert_array_equal(again.mask(1), masks[1])
    with pytest.raises(UserError, match="out of range"):
        ds.image(2)


def test_imagenet_segmentation_bad_files(tmp_path):
    with pytest.raises(UserError, match="no ImageNet-segmentation file"):
        ImagenetSegmentation(tmp_path / "missing.mat")
    junk = tmp_path / "junk.mat"
    junk.write_bytes(b"MATLAB 5.0 MAT-file, not hdf5")
    with pytest.raises(UserError, match="not an ImageNet-segmentation"):
        ImagenetSegmentation(junk)


# -- end to end on world-clip ------------------------------------------------------------------------
from lens_apps_fixtures import WORLD, world_clip_lens_run  # noqa: E402,F401


def test_heat_sums_each_images_own_neurons(world_clip_lens_run):
    """The batched heatmap (one token_maps call per layer over the union of the images' neurons)
    equals, image by image, the sum of each selected neuron's own per-token map."""
    import torch

    from neuronatlas.data import open_probe
    from neuronatlas.describe.text_decomposition import model_of
    from neuronatlas.lens.effects import SecondOrderLens
    from neuronatlas.lens.segmentation import _heat
    from neuronatlas.lens.vit import ClipViT

    out, results = world_clip_lens_run
    target, scorer = model_of(results[0])
    vit = ClipViT.from_target(target)
    lenses = [SecondOrderLens(vit, r.block, scale=r.meta["key"]["scale"]) for r in results]
    probe = open_probe(WORLD)
    pixels = torch.stack([scorer.preprocess(probe.read_image(i)) for i in range(3)])
    direction = torch.nn.functional.normalize(torch.randn(3, scorer.dim), dim=-1)
    offsets = np.cumsum([0] + [r.n_neurons for r in results])
    sel = np.array([[0, 5, 600], [5, 511, 512], [1000, 3, 4]])  # global ids over both layers
    heat = _heat(lenses, [lz.trace(pixels) for lz in lenses], sel, offsets, direction)
    for b in range(3):
        want = 0
        for g in sel[b]:
            li = int(np.searchsorted(offsets, g, side="right") - 1)
            m = lenses[li].token_maps(pixels[b:b + 1], direction[b], neurons=[int(g - offsets[li])])
            want = want + m[0, 0].double().numpy()
        np.testing.assert_allclose(heat[b], want, rtol=1e-5, atol=1e-6)


def test_segment_world_reports_metrics_and_baselines(world_clip_lens_run):
    from neuronatlas.lens.segmentation import SegmentConfig, segment

    out, _ = world_clip_lens_run
    res = segment(out, "world:n=12,size=32,seed=9,objects=1", SegmentConfig(n_neurons=40),
                  progress=False)
    assert res["n_images"] == 12 and sum(res["predicted_counts"].values()) == 12
    for kind in ("aligned", "random"):
        m = res[kind]
        assert 0 <= m["pixel_accuracy"] <= 1 and 0 <= m["miou"] <= 1 and 0 <= m["map"] <= 1
    assert res["aligned"] != res["random"]
    bg = res["background"]  # all-background: IoU of the foreground is 0, accuracy = background share
    assert bg["iou_foreground"] == 0 and 0.5 < bg["pixel_accuracy"] < 1


def test_segment_reads_imagenet_segmentation_file(world_clip_lens_run, tmp_path):
    """The same pipeline on a gtsegs_ijcv.mat-layout file (world renders and masks written to it)."""
    from neuronatlas.data import open_probe
    from neuronatlas.lens.segmentation import SegmentConfig, segment

    out, _ = world_clip_lens_run
    spec = "world:n=6,size=48,seed=9,objects=1"
    probe = open_probe(spec)
    images = [np.asarray(probe.read_image(i)) for i in range(6)]
    masks = [~next(m for k, m in probe.masks(i).items() if k.startswith("background:"))
             for i in range(6)]
    path = tmp_path / "gtsegs_ijcv.mat"
    write_imagenet_segmentation(path, images, masks)
    cfg = SegmentConfig(n_neurons=40)
    from_mat = segment(out, f"imagenet-seg:{path}", cfg, progress=False)
    from_world = segment(out, spec, cfg, progress=False)
    assert from_mat["aligned"] == pytest.approx(from_world["aligned"])
    assert from_mat["random"] == pytest.approx(from_world["random"])
