"""`neuronatlas vlm logit-lens`: the Parquet parts hold exactly the streamed lens of each image
(same top-k as a direct computation), geometry columns come from the config, an interrupted run
resumes without recomputing finished parts, another config in the same directory is refused, and
the command line writes the run."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from neuronatlas.errors import UserError
from neuronatlas.run.vlm import LensStore, read_logit_lens
from neuronatlas.vlm.lens_run import run_logit_lens
from neuronatlas.vlm.logit_lens import LensConfig, lens_topk, residuals

from tests.vlm.tiny import tiny_subject

DATA = "world:n=5,size=40,seed=3"


def test_parts_hold_the_lens_of_each_image(tmp_path):
    from neuronatlas.data import open_probe

    torch.set_num_threads(1)
    s = tiny_subject("llava-1.5")
    cfg = LensConfig(top_k=3, batch_size=2, prompt="is there")
    store = run_logit_lens(s, DATA, tmp_path / "run", cfg, show_progress=False)
    df = read_logit_lens(tmp_path / "run")
    meta = store.meta()
    assert meta["status"] == "complete" and meta["n_layers"] == 4 and meta["grid"] == 5
    assert len(store.parts()) == 3  # 5 images in batches of 2
    probe = open_probe(DATA)
    assert sorted(df["index"].unique()) == list(range(5))
    # image 3, computed alone, matches its rows (batching with padding changes nothing)
    pixels = s.transform(probe.read_image(3))[None]
    inputs = s.inputs(pixels, ["is there"])
    hs, _ = residuals(s, inputs)
    probs, ids = lens_topk(s, hs, 3)
    rows = df[df["index"] == 3].sort_values(["layer", "position", "rank"])
    t = inputs["input_ids"].shape[1]
    assert len(rows) == 4 * t * 3
    np.testing.assert_array_equal(rows.token_id.to_numpy().reshape(4, t, 3), ids[:, 0].numpy())
    np.testing.assert_allclose(rows.prob.to_numpy().reshape(4, t, 3), probs[:, 0].numpy(), rtol=1e-4,
                               atol=1e-6)
    first = rows[(rows.layer == 0) & (rows["rank"] == 0)]
    img = first[first.kind == "image"]
    assert len(img) == s.n_image_tokens == 25 and img.patch.tolist() == list(range(25))
    assert (first[first.kind == "text"].patch == -1).all()
    assert (first.token == "t" + first.token_id.astype(str)).all()
    assert store.image_path(3).exists()


def test_resume_recomputes_only_missing_parts_and_refuses_other_config(tmp_path):
    torch.set_num_threads(1)
    s = tiny_subject("llava-1.5")
    cfg = LensConfig(top_k=2, batch_size=2)
    store = run_logit_lens(s, DATA, tmp_path, cfg, show_progress=False)
    before = read_logit_lens(tmp_path)
    kept = store.part_path(0).stat().st_mtime_ns
    store.part_path(1).unlink()  # as if interrupted after part 0 and 2
    store.update_meta(status="computing")
    run_logit_lens(s, DATA, tmp_path, cfg, show_progress=False)
    assert store.part_path(0).stat().st_mtime_ns == kept
    after = read_logit_lens(tmp_path)
    cols = ["index", "layer", "position", "rank"]
    assert before.sort_values(cols).reset_index(drop=True).equals(
        after.sort_values(cols).reset_index(drop=True))
    with pytest.raises(UserError, match="top_k"):
        run_logit_lens(s, DATA, tmp_path, LensConfig(top_k=4, batch_size=2), show_progress=False)


def test_cli_on_world_llava(tmp_path):
    r = subprocess.run([sys.executable, "-m", "neuronatlas.cli", "vlm", "logit-lens", "zoo:world-llava",
                        "--data", "world:n=2,size=64,seed=0", "--out", str(tmp_path), "-q"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    df = read_logit_lens(tmp_path)
    meta = LensStore(tmp_path).meta()
    assert meta["n_image_tokens"] == 65 and meta["has_cls"] and meta["grid"] == 8
    # world-llava's caption prompt: <bos>, 65 image tokens, <caption>
    last = df[(df.layer == meta["n_layers"] - 1) & (df["rank"] == 0) & (df["index"] == 0)]
    assert len(last) == 67 and (last.kind == "image").sum() == 65
    assert (last[last.kind == "image"].patch.to_numpy() == np.arange(-1, 64)).all()  # CLS first
