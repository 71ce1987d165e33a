"""Resume after SIGKILL, and every bad-input error: one clear line, nothing already written lost."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import neuronatlas as na
from neuronatlas.errors import UserError
from tests.conftest import make_images

CLI = [sys.executable, "-m", "neuronatlas.cli"]


def cli(*args, **kw):
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, **kw)


SLOW_CNN = '''
import time
import torch
from torch import nn
from neuronatlas.models.target import Preprocess


class Slow(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        time.sleep(0.15)  # slow enough to be killed mid-run
        return self.fc(self.conv(x).mean((2, 3)))


def build():
    torch.manual_seed(0)
    return Slow().eval(), Preprocess(size=24, mean=(0.5,) * 3, std=(0.5,) * 3)
'''


def test_resume_after_sigkill_gives_the_uninterrupted_result(tmp_path):
    model = tmp_path / "slow.py"
    model.write_text(SLOW_CNN)
    spec = f"{model}:build"
    make_images(tmp_path / "imgs", 60, size=24)
    args = ["--layers", "conv,fc", "--data", tmp_path / "imgs", "--batch-size", "2",
            "--workers", "0", "--checkpoint-every", "3", "--save-acts", "-q"]
    out = tmp_path / "killed"
    proc = subprocess.Popen([*CLI, "record", spec, *map(str, args), "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ck = next(out.glob("partials/*"), None)
    deadline = time.time() + 60
    while time.time() < deadline:
        ck = next(out.glob("partials/*/checkpoint.npz"), None)
        if ck is not None:
            break
        time.sleep(0.05)
    assert ck is not None, proc.stderr.read() if proc.poll() is not None else "no checkpoint"
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "units.parquet").exists(), "the run finished before it was killed"
    resumed = cli("record", spec, *args, "--out", out)
    assert resumed.returncode == 0, resumed.stderr
    straight = cli("record", spec, *args, "--out", tmp_path / "straight")
    assert straight.returncode == 0, straight.stderr
    a, b = na.open_run(out), na.open_run(tmp_path / "straight")
    for layer in ("conv", "fc"):
        for name in ("top_values", "top_index", "bottom_values", "bottom_index", "hist"):
            np.testing.assert_array_equal(a.array(layer, name), b.array(layer, name))
        np.testing.assert_array_equal(a.acts(layer), b.acts(layer))
    np.testing.assert_allclose(a.units[["mean", "std"]], b.units[["mean", "std"]], rtol=1e-9)
    assert a.meta["summary"] == b.meta["summary"]


def one_line_error(result, *needles):
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def test_unknown_layer_suggests_near_names(tmp_path, image_folder, tiny_cnn_file):
    r = cli("record", tiny_cnn_file, "--layers", "conv3", "--data", image_folder, "--out",
            tmp_path / "r")
    one_line_error(r, "unknown layer 'conv3'", "conv1", "neuronatlas layers")


def test_empty_and_unreadable_probe_sets(tmp_path, tiny_cnn_file):
    (tmp_path / "empty").mkdir()
    r = cli("record", tiny_cnn_file, "--layers", "fc", "--data", tmp_path / "empty", "--out",
            tmp_path / "r")
    one_line_error(r, "no images")
    r = cli("record", tiny_cnn_file, "--layers", "fc", "--data", tmp_path / "missing", "--out",
            tmp_path / "r")
    one_line_error(r, "missing")


def test_unit_out_of_range_and_bad_unit(tmp_path, image_folder, tiny_cnn_file):
    run = na.record(tiny_cnn_file, str(image_folder), tmp_path / "run", layers="fc", num_workers=0)
    with pytest.raises(UserError, match=r"out of range for fc, which has 5 units"):
        run.topk("fc:5")
    with pytest.raises(UserError, match="LAYER:INDEX"):
        run.topk("fc")
    r = cli("exemplars", tmp_path / "run", "fc2:1", "--out", tmp_path / "g.png")
    one_line_error(r, "layer 'fc2' is not in this run", "fc")


NAN_MODEL = '''
import torch
from torch import nn
from neuronatlas.models.target import Preprocess


class Poison(nn.Module):
    def forward(self, y, x):
        bad = (x[:, 0, 0, 0] > 0.9).unsqueeze(1) & (torch.arange(4) == 2)  # poison unit 2
        return torch.where(bad, torch.full_like(y, float("nan")), y)


class Nan(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 4)
        self.head = Poison()

    def forward(self, x):
        return self.head(self.fc(x.mean((2, 3))), x)


def build():
    return Nan().eval(), Preprocess(size=8, mean=(0.5,) * 3, std=(0.5,) * 3)
'''


def test_nan_activations_name_the_units_and_keep_earlier_work(tmp_path):
    from PIL import Image

    model = tmp_path / "nan.py"
    model.write_text(NAN_MODEL)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(12):  # image 9 is white in its corner -> NaN
        arr = np.full((8, 8, 3), 255 if i == 9 else 10, np.uint8)
        arr[1:, 1:] = i * 5
        Image.fromarray(arr).save(folder / f"{i:02d}.png")
    r = cli("record", f"{model}:build", "--layers", "head", "--data", folder, "--out", tmp_path / "r",
            "--batch-size", "4", "--workers", "0", "-q")
    line = one_line_error(r, "non-finite", "head:2", "[9]")
    assert "kept" in line
    ck = na.run.load_checkpoint(next((tmp_path / "r" / "partials").iterdir()))
    assert ck is not None and ck[1]["position"] == 8  # the two good batches were kept


def test_out_of_disk_is_one_line_and_keeps_the_checkpoint(tmp_path, image_folder, tiny_cnn_file):
    out = tmp_path / "run"
    base = ["record", tiny_cnn_file, "--layers", "fc", "--data", image_folder, "--out", out,
            "--workers", "0", "--batch-size", "4", "-q"]
    # A first run writes run.json and the listing; then every checkpoint goes to /dev/full (ENOSPC).
    from neuronatlas import run as rundir

    pdir = rundir.partial_dir(out, 0, 1)
    pdir.mkdir(parents=True)
    (pdir / "checkpoint.npz.tmp").symlink_to("/dev/full")
    r = cli(*base)
    one_line_error(r, "out of disk space", "resumes")
    assert not (pdir / "checkpoint.npz").exists()
    assert (out / "run.json").exists()
    # Space is back: the same command finishes.
    if (pdir / "checkpoint.npz.tmp").is_symlink():
        (pdir / "checkpoint.npz.tmp").unlink()
    r = cli(*base)
    assert r.returncode == 0, r.stderr
    assert na.open_run(out).meta["summary"]["n_ok"] == 30


def test_bad_options_are_one_line_errors(tmp_path, image_folder, tiny_cnn_file):
    base = ["record", tiny_cnn_file, "--layers", "conv1", "--data", image_folder, "--out",
            tmp_path / "r"]
    one_line_error(cli(*base, "--pooling", "median"), "unknown pooling")
    one_line_error(cli(*base, "--pooling", "cls"), "no CLS token")
    one_line_error(cli(*base, "--shard", "3/2"), "out of range")
    one_line_error(cli(*base, "--k", "0"), "--k")
    one_line_error(cli("record", "nope:thing", "--layers", "x", "--data", image_folder, "--out",
                       tmp_path / "r"))
