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
    np.testing.assert_array_equal(aligned_neurons(pcs, cls, 2), [[0, 2], [1, 3]])
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
