"""iter_batches: every requested index exactly once, correct pixels, bad files reported not raised,
identical output with and without worker processes."""

import io
import shutil
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from neuronatlas.data import Batch, iter_batches, open_probe
from neuronatlas.data.loading import read_one
from neuronatlas.models.target import Preprocess

TRANSFORM = Preprocess(size=16, mean=(0.5,) * 3, std=(0.5,) * 3).transform()


def save(path, seed, fmt=None, size=(20, 14)):
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr).save(path, format=fmt)
    return path


@pytest.fixture
def messy(tmp_path):
    """A folder with good images of several formats and every kind of bad file."""
    root = tmp_path / "messy"
    for i in range(9):
        save(root / f"c{i % 2}" / f"good{i}.{['png', 'jpg', 'bmp'][i % 3]}", i)
    save(root / "c0" / "rgba.png", 20)
    Image.new("P", (9, 9)).save(root / "c0" / "palette.gif")
    Image.new("L", (7, 11), 128).save(root / "c1" / "gray.tif")
    shutil.copy(root / "c0" / "good0.png", root / "c1" / "same_as_good0.png")
    jpg = save(root / "c1" / "truncated.jpg", 99, size=(64, 64)).read_bytes()
    (root / "c1" / "truncated.jpg").write_bytes(jpg[: len(jpg) * 2 // 3])  # header intact, data cut
    (root / "c0" / "random.jpg").write_bytes(np.random.default_rng(0).bytes(500))
    (root / "c0" / "empty.png").write_bytes(b"")
    return root


def run(probe, indices, batch_size=4, num_workers=0):
    return list(iter_batches(probe, TRANSFORM, indices, batch_size, num_workers))


def flatten(batches):
    ok = np.concatenate([b.indices for b in batches])
    failed = dict(f for b in batches for f in b.failed)
    return ok, failed


def test_every_index_once_with_correct_pixels_and_reasons(messy, capfd):
    probe = open_probe(str(messy))
    ids = [it.image_id for it in probe.items]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the loader must not leak PIL warnings
        batches = run(probe, range(len(probe)))
    assert all(isinstance(b, Batch) for b in batches) and len(batches) == -(-len(probe) // 4)
    ok, failed = flatten(batches)
    assert sorted([*ok.tolist(), *failed]) == list(range(len(probe)))
    assert sorted(ids[i] for i in failed) == ["c0/empty.png", "c0/random.jpg", "c1/truncated.jpg"]
    reasons = {ids[i]: r for i, r in failed.items()}
    assert reasons["c0/empty.png"] == "empty file (0 bytes)"
    assert "not an image" in reasons["c0/random.jpg"]
    assert "truncated" in reasons["c1/truncated.jpg"]
    assert all("\n" not in r for r in reasons.values())
    # Pixels equal decoding in this process, row by row.
    for b in batches:
        assert b.pixels.dtype == torch.float32 and b.pixels.shape[1:] == (3, 16, 16)
        assert len(b.digests) == len(b.indices) and all(len(d) == 16 for d in b.digests)
        for row, i in zip(b.pixels, b.indices):
            assert torch.equal(row, TRANSFORM(probe.read_image(int(i))))
    digests = {ids[i]: d for b in batches for i, d in zip(b.indices, b.digests)}
    assert digests["c1/same_as_good0.png"] == digests["c0/good0.png"]
    assert len(set(digests.values())) == len(digests) - 1
    assert capfd.readouterr().err == ""  # no libjpeg / PIL chatter


def test_workers_give_identical_batches_in_order(messy):
    probe = open_probe(str(messy))
    order = [10, 3, 14, 0, 1, 13, 7, 2, 5]  # a shard's indices, resumed mid-way: any order
    a, b = run(probe, order, 2, 0), run(probe, order, 2, 2)
    assert len(a) == len(b) == 5
    for x, y in zip(a, b):
        assert np.array_equal(x.indices, y.indices) and torch.equal(x.pixels, y.pixels)
        assert x.digests == y.digests and x.failed == y.failed
    seen = [i for x in a for i in [*x.indices.tolist(), *(f[0] for f in x.failed)]]
    assert sorted(seen) == sorted(order)
    ok = np.concatenate([x.indices for x in a]).tolist()
    assert ok == [i for i in order if i in ok]  # decoded images come out in the requested order


def test_all_failed_batch_is_still_yielded(tmp_path):
    (tmp_path / "l.txt").write_text("gone1.png\ngone2.png\nok.png\n")
    save(tmp_path / "ok.png", 0)
    probe = open_probe(str(tmp_path / "l.txt"))
    batches = run(probe, [0, 1, 2], batch_size=2)
    assert batches[0].indices.tolist() == [] and batches[0].pixels.shape == (0, 3, 16, 16)
    assert batches[0].failed == [(0, f"file not found: {tmp_path / 'gone1.png'}"),
                                 (1, f"file not found: {tmp_path / 'gone2.png'}")]
    assert batches[1].indices.tolist() == [2] and batches[1].failed == []
    assert run(probe, []) == []


def test_huge_image_fails_with_a_reason(tmp_path, monkeypatch):
    save(tmp_path / "big.png", 0, size=(64, 64))
    save(tmp_path / "small.png", 1, size=(8, 8))
    probe = open_probe(str(tmp_path))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 64*64 > 1000 (warning zone), < 2x: error
    batches = run(probe, [0, 1])
    assert batches[0].indices.tolist() == [1]
    assert batches[0].failed[0][0] == 0 and "too large" in batches[0].failed[0][1]
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # far over: PIL's own error, same reason
    assert "too large" in run(probe, [0])[0].failed[0][1]


def test_tar_and_hf_sources_through_workers(tmp_path):
    import tarfile

    import datasets

    blobs = []
    for i in range(5):
        blobs.append(save(tmp_path / f"x{i}.png", i).read_bytes())
    with tarfile.open(tmp_path / "s.tar", "w") as tf:
        for i, data in enumerate(blobs + [b"garbage"]):
            info = tarfile.TarInfo(f"k{i}.png")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    ds = datasets.Dataset.from_dict({"image": [{"bytes": b, "path": None} for b in blobs]},
                                    features=datasets.Features({"image": datasets.Image()}))
    tar, hf = open_probe(str(tmp_path / "s.tar")), open_probe(ds)
    bt, bh = run(tar, range(6), 3, 2), run(hf, range(5), 3, 2)
    assert [i for b in bt for i, _ in b.failed] == [5]
    dt = [d for b in bt for d in b.digests]
    assert dt == [d for b in bh for d in b.digests]  # same bytes -> same digests, any source
    assert torch.equal(torch.cat([b.pixels for b in bt]), torch.cat([b.pixels for b in bh]))


def test_read_one_falls_back_to_read_image():
    from neuronatlas.data import ImageItem, ProbeSet

    class Rendered(ProbeSet):  # a source with no encoded form (like a procedural world)
        spec, kind = "r:x", "r"
        items = [ImageItem("0", "r:0")]

        def read_image(self, index):
            return Image.new("RGB", (5, 5), (index, 2, 3))

    image, key = read_one(Rendered(), 0)
    assert image.size == (5, 5) and len(key) == 16
    assert run(Rendered(), [0])[0].indices.tolist() == [0]
