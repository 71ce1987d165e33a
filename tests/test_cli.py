"""The command line as a user meets it: help texts, layer listing, the demo on a reduced size."""

import subprocess
import sys

import pytest

import neuronatlas as na

CLI = [sys.executable, "-m", "neuronatlas.cli"]


def run(*args):
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True)


@pytest.mark.parametrize("command", ["record", "layers", "exemplars", "merge", "info", "demo",
                                     "study"])
def test_every_command_explains_its_options(command):
    r = run(command, "--help")
    assert r.returncode == 0, r.stderr
    assert "Usage" in r.stdout
    if command == "record":
        for option in ("--layers", "--data", "--out", "--pooling", "--shard", "--save-acts",
                       "--random-weights", "--k"):
            assert option in r.stdout


def test_layers_lists_one_hook_point_per_line_name_first_then_shape():
    r = run("layers", "timm:vit_tiny_patch16_224", "--random-weights", "--match", "blocks.*.mlp.fc1")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 12
    assert lines[9].split()[0] == "blocks.9.mlp.fc1"
    assert "(197, 768)" in lines[9]


def test_record_then_info_from_the_command_line(tmp_path, image_folder, tiny_cnn_file):
    r = run("record", tiny_cnn_file, "--layers", "conv*", "--data", image_folder, "--out",
            tmp_path / "run", "--workers", "0", "-q")
    assert r.returncode == 0, r.stderr
    assert "recorded 30 images x 14 units" in r.stdout
    r = run("info", tmp_path / "run")
    assert r.returncode == 0 and "pooling=mean" in r.stdout


def test_record_a_hugging_face_dataset_object(tmp_path):
    datasets = pytest.importorskip("datasets")
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)) for _ in range(9)]
    features = datasets.Features({"image": datasets.Image(),
                                  "label": datasets.ClassLabel(names=["cat", "dog"])})
    ds = datasets.Dataset.from_dict({"image": images, "label": [i % 2 for i in range(9)]},
                                    features=features)
    import timm
    import torch

    from neuronatlas.models.timm_adapter import target_from_timm_model

    torch.manual_seed(0)
    target = target_from_timm_model(timm.create_model("resnet18", pretrained=False, num_classes=2))
    result = na.record(target, ds, tmp_path / "run", layers="layer4", num_workers=0)
    assert result.meta["summary"]["n_ok"] == 9
    assert result.images["label"].tolist()[:2] == ["cat", "dog"]


def test_demo_runs_end_to_end_on_a_reduced_size(tmp_path):
    import os

    # the demo's tables in an 80-column terminal
    r = subprocess.run([*CLI, "demo", "--small", "--out", str(tmp_path / "demo")],
                       capture_output=True, text=True, env={**os.environ, "COLUMNS": "80"})
    assert r.returncode == 0, r.stderr[-2000:]
    _assert_tables_fit(r.stderr, 80)
    _assert_atlas_per_run(tmp_path / "demo")
    run_dir = tmp_path / "demo" / "efficientnet-lite0"
    result = na.open_run(run_dir)
    assert result.meta["summary"]["n_unreadable"] == 0
    assert len(list((tmp_path / "demo" / "grids").rglob("*.png"))) >= 4
    assert "Where to look" in r.stderr
    assert "exact" in r.stderr and "netdissect" in r.stderr  # the evaluation table
    syn = na.open_run(tmp_path / "demo" / "synthetic")
    assert set(syn.labels()["method"]) >= {"clip-dissect", "netdissect"}
    assert len(syn.evaluation("summary"))
    assert (tmp_path / "demo" / "study" / "mapping.json").exists()  # the blind study stage
    assert (tmp_path / "demo" / "study" / "grids" / "form.html").exists()
    assert "Open the atlas" in r.stderr and "--serve" in r.stderr  # the demo ends with the atlas
    assert (tmp_path / "demo" / "atlas" / "index.html").exists()


def _assert_tables_fit(text: str, width: int) -> None:
    """Every line within `width`; no table cell wrapped onto a second line (a wrapped row shows up
    as a body line whose first cell is blank); unit ids short."""
    lines = text.splitlines()
    tables = [l for l in lines if any(c in l for c in "│┃━─┏┗┡└┌")]
    assert max(len(l) for l in tables) <= width, max(tables, key=len)
    body = [l for l in lines if l.startswith("│")]
    assert len(body) >= 10  # the evaluation table and the unit tables were printed
    for line in body:
        first = line.split("│")[1]
        assert first.strip(), f"wrapped cell: {line!r}"
    assert not any("vision_model.encoder" in l for l in body)  # shortened, with a legend
    assert any(l.strip().startswith("L0 = vision_model.encoder.layers.1") for l in lines)


def _assert_atlas_per_run(demo) -> None:
    """An atlas per run (synthetic, efficientnet-lite0, world-clip with its second-order labels),
    one index page linking them."""
    import json

    index = (demo / "atlas" / "index.html").read_text()
    names = ["synthetic", "efficientnet-lite0"]
    if (demo / "world-clip").exists():
        names.append("world-clip")
        assert "second-order" in na.open_run(demo / "world-clip").labels()["method"].unique()
        overview = (demo / "atlas" / "world-clip" / "data" / "overview.js").read_text()
        assert '"second-order"' in overview
    for name in names:
        assert (demo / "atlas" / name / "index.html").exists(), name
        assert f'href="{name}/index.html"' in index
        marker = json.loads((demo / "atlas" / name / ".neuronatlas-export").read_text())
        assert marker["image_units"] >= min(marker["units"], 50)  # the unit list's first page


def test_describe_and_evaluate_from_the_command_line(tmp_path):
    out = tmp_path / "syn"
    r = run("record", "zoo:synthetic-units", "--layers", "units", "--data",
            "world:n=120,size=64,seed=0", "--out", out, "--workers", "0", "-q")
    assert r.returncode == 0, r.stderr
    r = run("describe", out, "--method", "netdissect")
    assert r.returncode == 0, r.stderr
    assert "labelled 111 units with netdissect" in r.stdout
    labels = na.open_run(out).labels("netdissect")
    assert {"unit", "method", "rank", "label", "score"} <= set(labels.columns)
    r = run("evaluate", out, "--no-simulation")
    assert r.returncode == 0, r.stderr
    assert "netdissect" in r.stdout
    r = run("describe", out, "--method", "clipdissect")
    assert r.returncode == 2 and "did you mean" in r.stderr
