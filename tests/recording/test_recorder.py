"""The recorder end to end: pooled values equal brute force, exemplars equal sorting the matrix,
shards merge to the single pass, corrupt and duplicate images are handled."""

import shutil

import numpy as np
import pytest
import torch

import neuronatlas as na
from neuronatlas.errors import UserError
from neuronatlas.models.target import Preprocess, Target
from tests.conftest import make_images


def vit_target():
    import timm

    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8,
                              reg_tokens=2, num_classes=4, class_token=True).eval()
    from neuronatlas.models.layout import TokenInfo

    return Target(spec="test:vit-reg", model=model,
                  preprocess=Preprocess(size=32, mean=(0.5,) * 3, std=(0.5,) * 3),
                  forward=model, tokens=TokenInfo(n_prefix=3, cls_index=0, register_indices=(1, 2),
                                                  grid=(4, 4)))


def brute_pool(raw, mode):
    """Loop-by-loop pooling of a raw timm token output (B, T, D) with CLS at 0, registers 1-2."""
    raw = raw.numpy()
    b, t, d = raw.shape
    out = np.zeros((b, d), np.float32)
    for i in range(b):
        for u in range(d):
            col = raw[i, :, u]
            patches = col[3:]
            out[i, u] = {"mean": col.mean(), "max": col.max(), "cls": col[0],
                         "patch_mean": patches.mean(), "patch_max": patches.max()}[mode]
    return out


@pytest.mark.parametrize("mode", ["mean", "max", "cls", "patch_mean", "patch_max"])
def test_token_pooling_matches_brute_force(tmp_path, image_folder, mode):
    target = vit_target()
    run = na.record(target, str(image_folder), tmp_path / "run", layers="blocks.1.mlp.fc1",
                    pooling=mode, save_acts=True, batch_size=7, num_workers=0)
    acts = run.acts("blocks.1.mlp.fc1")
    probe = na.open_probe(str(image_folder))
    pixels = torch.stack([target.preprocess(probe.read_image(i)) for i in range(len(probe))])
    captured = {}
    h = target.model.blocks[1].mlp.fc1.register_forward_hook(lambda m, i, o: captured.update(o=o))
    with torch.no_grad():
        target.model(pixels)
    h.remove()
    np.testing.assert_allclose(acts, brute_pool(captured["o"], mode), rtol=1e-4, atol=1e-5)
    assert run.layers["blocks.1.mlp.fc1"]["pooling"] == mode


def test_conv_default_pooling_and_exemplars_equal_sorting(tmp_path, image_folder, tiny_cnn_file):
    run = na.record(tiny_cnn_file, str(image_folder), tmp_path / "run", layers="conv*,fc",
                    save_acts=True, k=5, batch_size=4, num_workers=0)
    assert run.layers["conv1"]["pooling"] == "mean" and run.layers["fc"]["pooling"] == "none"
    assert set(run.units.columns) >= {"unit", "layer", "index", "mean", "std", "min", "max",
                                      "frac_positive"}
    assert len(run.units) == 8 + 6 + 5
    for layer in ("conv1", "conv2", "fc"):
        acts = run.acts(layer)
        for u in range(acts.shape[1]):
            col = acts[:, u]
            top = run.topk(f"{layer}:{u}")
            order = sorted(range(len(col)), key=lambda i: (-col[i], i))[:5]
            assert top["index"].tolist() == order
            np.testing.assert_array_equal(top["value"].to_numpy(), col[order])
            bottom = run.bottomk(f"{layer}:{u}")
            assert bottom["index"].tolist() == sorted(range(len(col)), key=lambda i: (col[i], i))[:5]
            row = run.units.set_index("unit").loc[f"{layer}:{u}"]
            np.testing.assert_allclose(row["mean"], col.astype(np.float64).mean(), rtol=1e-6)
            np.testing.assert_allclose(row["std"], col.astype(np.float64).std(), rtol=1e-5, atol=1e-7)
            assert row["max"] == col.max() and row["min"] == col.min()
    assert run.images["image_id"].tolist() == sorted(run.images["image_id"])
    assert (run.images["label"] == [p.split("/")[0] for p in run.images["image_id"]]).all()


@pytest.mark.parametrize("mode", ["contiguous", "strided"])
def test_shards_merge_to_single_pass(tmp_path, image_folder, tiny_cnn_file, mode):
    # batch size 1 on both sides: conv kernels may round differently for other batch shapes, and
    # what is tested here is the merge, not the forward pass.
    single = na.record(tiny_cnn_file, str(image_folder), tmp_path / "single", layers="conv2,fc",
                       save_acts=True, k=4, batch_size=1, num_workers=0)
    out = tmp_path / "sharded"
    results = [na.record(tiny_cnn_file, str(image_folder), out, layers="conv2,fc", save_acts=True,
                         k=4, batch_size=1, num_workers=0, shard=s, n_shards=3, shard_mode=mode)
               for s in (2, 0, 1)]
    assert results[0] is None and results[1] is None
    merged = results[2]
    for layer in ("conv2", "fc"):
        for name in ("top_values", "top_index", "bottom_values", "bottom_index", "hist"):
            np.testing.assert_array_equal(merged.array(layer, name), single.array(layer, name))
        np.testing.assert_allclose(merged.acts(layer), single.acts(layer), rtol=1e-6)
    cols = ["mean", "std"]
    np.testing.assert_allclose(merged.units[cols].to_numpy(), single.units[cols].to_numpy(),
                               rtol=1e-6, atol=1e-9)
    assert merged.units[["min", "max", "count"]].equals(single.units[["min", "max", "count"]])


def test_corrupt_and_duplicate_images(tmp_path, tiny_cnn_file):
    folder = tmp_path / "imgs"
    paths = make_images(folder, 12)
    shutil.copy(paths[3], folder / "a" / "zz_copy_of_3.png")
    (folder / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (folder / "b" / "empty.jpg").write_bytes(b"")
    run = na.record(tiny_cnn_file, str(folder), tmp_path / "run", layers="fc", save_acts=True,
                    num_workers=0, batch_size=4)
    img = run.images.set_index("image_id")
    assert img.loc["b/broken.png", "status"] == "unreadable" and img.loc["b/broken.png", "reason"]
    assert img.loc["b/empty.jpg", "status"] == "unreadable"
    dup = img.loc["a/zz_copy_of_3.png"]
    assert dup["status"] == "duplicate"
    assert run.images.loc[dup["duplicate_of"], "path"].endswith(paths[3].name)
    assert run.meta["summary"] == {"n_images": 15, "n_ok": 12, "n_unreadable": 2, "n_duplicate": 1}
    acts = run.acts("fc")
    bad = run.images["status"] != "ok"
    assert np.isnan(acts[bad.to_numpy()]).all() and not np.isnan(acts[~bad.to_numpy()]).any()
    assert run.units["count"].eq(12).all()


def test_rerun_of_a_complete_run_is_a_no_op_and_mixing_is_refused(tmp_path, image_folder,
                                                                    tiny_cnn_file):
    out = tmp_path / "run"
    first = na.record(tiny_cnn_file, str(image_folder), out, layers="fc", num_workers=0)
    again = na.record(tiny_cnn_file, str(image_folder), out, layers="fc", num_workers=0)
    assert again.meta["finished"] == first.meta["finished"]
    with pytest.raises(UserError, match="different layers"):
        na.record(tiny_cnn_file, str(image_folder), out, layers="conv1", num_workers=0)
    with pytest.raises(UserError, match="different layers"):
        na.record(tiny_cnn_file, str(image_folder), out, layers="fc", pooling="max", num_workers=0)
    make_images(image_folder / "c", 1, seed=9)
    with pytest.raises(UserError, match="different probe"):
        na.record(tiny_cnn_file, str(image_folder), out, layers="fc", num_workers=0)


def test_in_place_operations_after_a_hook_do_not_change_recorded_values(tmp_path, image_folder):
    """torchvision ResNets apply relu(inplace=True) to bn1's output and `out += identity` to each
    block's bn2 output: the recorder must keep the values the hooked module produced."""
    import torchvision

    from neuronatlas.models.layout import Layout  # noqa: F401  (layouts come from discovery)

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=3).eval()
    target = Target(spec="test:resnet18", model=model,
                    preprocess=Preprocess(size=32, mean=(0.5,) * 3, std=(0.5,) * 3), forward=model)
    run = na.record(target, str(image_folder), tmp_path / "run", layers="bn1,layer1.0.bn2",
                    save_acts=True, num_workers=0, batch_size=8)
    probe = na.open_probe(str(image_folder))
    x = torch.stack([target.preprocess(probe.read_image(i)) for i in range(len(probe))])
    with torch.no_grad():
        bn1 = model.bn1(model.conv1(x))
        block = model.layer1[0]
        h = model.maxpool(torch.relu(bn1))
        bn2 = block.bn2(block.conv2(torch.relu(block.bn1(block.conv1(h)))))
    np.testing.assert_allclose(run.acts("bn1"), bn1.mean((2, 3)).numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(run.acts("layer1.0.bn2"), bn2.mean((2, 3)).numpy(), rtol=1e-4,
                               atol=1e-5)
    assert (run.acts("bn1") < 0).any()  # pre-ReLU values survived


def test_exemplar_tiles_carry_their_own_activation(tmp_path, image_folder):
    from neuronatlas.atlas.exemplars import draw_grid, exemplars

    target = vit_target()
    run = na.record(target, str(image_folder), tmp_path / "run", layers="blocks.1.mlp.fc1",
                    pooling="patch_max", k=6, num_workers=0)
    unit = "blocks.1.mlp.fc1:5"
    for which, table in (("top", run.topk(unit)), ("bottom", run.bottomk(unit))):
        tiles = exemplars(run, unit, which, target=target)
        assert [t.index for t in tiles] == table["index"].tolist()
        for t in tiles:  # each tile's number is its own image's activation, recomputed
            assert abs(t.recomputed - t.value) < 1e-4 * max(1, abs(t.value))
            assert t.image.size == (32, 32) and t.heatmap.shape == (32, 32)
            # patch_max pooling: the heatmap's maximum is the pooled value (bilinear keeps extremes
            # within the range of the 4x4 grid values)
            assert t.heatmap.max() <= t.value + 1e-4
        values = [t.value for t in tiles]
        assert values == sorted(values, reverse=(which == "top"))
    for suffix in (".png", ".svg"):
        path = draw_grid(tiles, unit, tmp_path / f"grid{suffix}")
        assert path.stat().st_size > 1000
    from PIL import Image

    im = Image.open(tmp_path / "grid.png")
    assert im.size[0] > 500 and len(np.unique(np.asarray(im.convert("L")))) > 50  # not blank


def test_exemplars_cli_writes_top_and_bottom_grids(tmp_path, image_folder, tiny_cnn_file):
    import subprocess
    import sys

    na.record(tiny_cnn_file, str(image_folder), tmp_path / "run", layers="conv2,fc", k=5,
              num_workers=0)
    r = subprocess.run([sys.executable, "-m", "neuronatlas.cli", "exemplars", str(tmp_path / "run"),
                        "conv2:3", "--out", str(tmp_path / "g.png")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    for name in ("g-top.png", "g-top.svg", "g-bottom.png", "g-bottom.svg"):
        assert (tmp_path / name).stat().st_size > 1000
    r = subprocess.run([sys.executable, "-m", "neuronatlas.cli", "exemplars", str(tmp_path / "run"),
                        "fc:1", "--which", "top", "--out", str(tmp_path / "fc.png"), "--no-svg"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr  # a vector layer: grid without heatmap
    assert (tmp_path / "fc.png").exists() and not (tmp_path / "fc.svg").exists()


def test_records_rendered_and_concatenated_sources(tmp_path, tiny_cnn_file):
    """The world renders images (no encoded bytes): every scene must be recorded, none 'unreadable'."""
    run = na.record(tiny_cnn_file, ["world:n=6,size=32,seed=0", "photos:"], tmp_path / "run",
                    layers="fc", num_workers=0)
    assert run.meta["summary"]["n_unreadable"] == 0
    assert run.meta["summary"]["n_ok"] == 6 + len(na.open_probe("photos:"))
    assert run.images["image_id"].iloc[0] == "world/0/0"
