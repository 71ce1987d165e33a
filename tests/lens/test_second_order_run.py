"""compute_second_order end to end on world-clip: stored statistics against brute force over the
stored effects, resume after an interruption, refusal to mix, unreadable images, the CLI."""

import numpy as np
import pytest
import torch
from PIL import Image

from neuronatlas.errors import UserError
from neuronatlas.lens import (SecondOrderConfig, SecondOrderLens, compute_second_order, load_lens,
                              open_second_order)
from neuronatlas.recording.top_rows import TopRows

DATA = "world:n=48,size=32,seed=5"
CFG = SecondOrderConfig(layer="1", top_k=8, batch_size=8, num_workers=0, checkpoint_every=1)


@pytest.fixture(scope="module")
def result(tmp_path_factory, world_clip_target):
    out = tmp_path_factory.mktemp("so")
    return compute_second_order(world_clip_target, DATA, out, CFG, show_progress=False)


def test_coefficients_are_the_lens_on_each_image(result, world_clip_target):
    from neuronatlas.data import open_probe

    _, lens = load_lens(world_clip_target, CFG)
    probe = open_probe(DATA)
    idx = [0, 17, 47]
    px = torch.stack([world_clip_target.preprocess(probe.read_image(i)) for i in idx])
    co = lens.coefficients(px)
    assert np.allclose(result.coefficients[idx], co.coef_BNK.numpy(), atol=1e-6)
    assert np.allclose(result.effects(idx, [3, 9]), lens.effects(co, [3, 9]).numpy(), atol=1e-6)
    assert result.layer == lens.unit_layer == "vision_model.encoder.layers.1.mlp.activation_fn"
    assert result.units[5] == f"{lens.unit_layer}:5" and result.block == 1


def test_statistics_equal_brute_force_over_all_effects(result):
    k = CFG.top_k
    eff = result.effects(np.arange(48)).astype(np.float64)  # (48, N, D)
    mean = eff.mean(0)
    assert np.allclose(result.mean_effect, mean, atol=1e-5)
    centred = eff - mean
    norms = np.linalg.norm(centred, axis=-1)  # (48, N)
    assert np.allclose(result.norms, norms, atol=1e-4)
    order = np.argsort(-norms, axis=0, kind="stable")[:k].T  # (N, k)
    assert (np.asarray(result.top_index) == order).mean() > 0.999  # float ties aside
    assert np.allclose(result.top_norms, np.take_along_axis(norms.T, order, 1), atol=1e-4)
    assert np.allclose(result.threshold, result.top_norms[:, -1])
    assert (result.significant().sum(0) == k).all()
    for n in (0, 11, 200):
        x = centred[result.top_index[n], n]  # (k, D)
        _, s, vh = np.linalg.svd(x, full_matrices=False)
        pc = vh[0] * (1 if (x @ vh[0] > 0).sum() >= (x @ vh[0] < 0).sum() else -1)
        assert np.allclose(result.pc[n], pc, atol=1e-4)
        assert np.isclose(result.explained_variance[n], s[0] ** 2 / (s ** 2).sum(), atol=1e-5)
        assert (x @ result.pc[n] > 0).sum() >= k / 2
    assert np.allclose(np.linalg.norm(result.pc, axis=1), 1, atol=1e-5)
    table = result.neurons
    assert list(table["unit"][:2]) == result.units[:2] and len(table) == result.n_neurons


def test_resume_after_interruption_gives_the_same_result(tmp_path, result, world_clip_target,
                                                         monkeypatch):
    real = SecondOrderLens.coefficients
    calls = {"n": 0}

    def flaky(self, x):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(self, x)

    monkeypatch.setattr(SecondOrderLens, "coefficients", flaky)
    with pytest.raises(KeyboardInterrupt):
        compute_second_order(world_clip_target, DATA, tmp_path, CFG, show_progress=False)
    with pytest.raises(UserError, match="not complete"):
        open_second_order(tmp_path)
    resumed = compute_second_order(world_clip_target, DATA, tmp_path, CFG, show_progress=False)
    assert calls["n"] == 4 + 3  # 6 batches: 3 checkpointed, the 4th interrupted and redone
    for name in ("coefficients", "norms", "top_index", "pc", "mean_effect"):
        assert np.array_equal(np.asarray(getattr(resumed, name)), np.asarray(getattr(result, name)))
    # finished: a rerun opens the result without computing
    again = compute_second_order(world_clip_target, DATA, tmp_path, CFG, show_progress=False)
    assert calls["n"] == 7 and again.meta["status"] == "complete"


def test_shards_merge_to_the_one_pass_result(tmp_path, result, world_clip_target):
    """Pass 1 in three shards (the shared shard loop, as `record --shard`): nothing is final until
    the last shard is done, then every stored array equals the one-process result bit for bit."""
    from dataclasses import replace

    for shard in (2, 0):
        cfg = replace(CFG, shard=shard, n_shards=3)
        assert compute_second_order(world_clip_target, DATA, tmp_path, cfg, show_progress=False) is None
    with pytest.raises(UserError, match="not complete"):
        open_second_order(tmp_path)
    merged = compute_second_order(world_clip_target, DATA, tmp_path, replace(CFG, shard=1, n_shards=3),
                                  show_progress=False)
    for name in ("coefficients", "mean_coefficient", "norms", "top_index", "top_norms", "pc",
                 "mean_effect", "threshold"):
        a, b = np.asarray(getattr(merged, name)), np.asarray(getattr(result, name))
        assert a.tobytes() == b.tobytes(), name
    assert merged.meta["summary"] == result.meta["summary"]
    with pytest.raises(UserError, match="shard 3/3 does not exist"):
        replace(CFG, shard=3, n_shards=3)


def test_refuses_to_mix_and_explains_missing_results(tmp_path, result, world_clip_target):
    run = result.store.run
    with pytest.raises(UserError, match="different top_k"):
        compute_second_order(world_clip_target, DATA, run,
                             SecondOrderConfig(layer="1", top_k=9, num_workers=0), show_progress=False)
    with pytest.raises(UserError, match="no second-order effects"):
        open_second_order(tmp_path, "vision_model.encoder.layers.0.mlp.activation_fn")
    assert open_second_order(run, "1").layer == result.layer
    with pytest.raises(UserError, match="fewer than --top-k"):
        compute_second_order(world_clip_target, "world:n=5,size=32", tmp_path, CFG, show_progress=False)
    with pytest.raises(UserError, match="--top-k must be at least 2"):
        SecondOrderConfig(top_k=1)


def test_unreadable_images_are_skipped_and_counted(tmp_path, world_clip_target):
    rng = np.random.default_rng(0)
    folder = tmp_path / "imgs" / "a"
    folder.mkdir(parents=True)
    for i in range(12):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i:02d}.png")
    (folder / "05.png").write_bytes(b"not a png")
    cfg = SecondOrderConfig(layer="2", top_k=4, batch_size=5, num_workers=0)
    res = compute_second_order(world_clip_target, tmp_path / "imgs", tmp_path / "run", cfg,
                               show_progress=False)
    assert res.meta["summary"] == {"n_images": 12, "n_ok": 11, "n_unreadable": 1}
    assert res.images["status"].tolist().count("unreadable") == 1
    assert np.isnan(res.coefficients[5]).all() and np.isnan(res.norms[5]).all()
    assert not np.isnan(res.mean_effect).any() and 5 not in np.asarray(res.top_index)
    assert np.allclose(res.mean_coefficient, np.nanmean(res.coefficients, 0), atol=1e-6)


def test_top_rows_is_exact_for_any_block_split():
    rng = np.random.default_rng(1)
    vals = rng.integers(0, 5, (30, 4)).astype(float)  # many ties
    vals[3, 1] = np.nan
    rows = rng.normal(size=(30, 4, 2))
    whole = TopRows(4, 6, 2)
    whole.update(vals, np.arange(30), rows)
    parts = TopRows(4, 6, 2)
    for s in (0, 7, 8, 20):
        e = {0: 7, 7: 8, 8: 20, 20: 30}[s]
        parts.update(vals[s:e], np.arange(s, e), rows[s:e])
    for a, b in zip(whole.result(), parts.result()):
        assert np.array_equal(a, b)
    v, i, r = whole.result()
    for n in range(4):
        col = np.where(np.isnan(vals[:, n]), -np.inf, vals[:, n])
        expect = sorted(range(30), key=lambda j: (-col[j], j))[:6]
        assert list(i[n]) == expect and np.array_equal(r[n], rows[expect, n])


def test_cli_second_order_and_ablate(tmp_path):
    from typer.testing import CliRunner

    from neuronatlas.cli import app

    runner = CliRunner()
    out = tmp_path / "run"
    r = runner.invoke(app, ["lens", "second-order", "zoo:world-clip", "--layer", "2", "--data",
                            "world:n=40,size=32,seed=1", "--out", str(out), "--top-k", "5",
                            "--workers", "0", "-q"])
    assert r.exit_code == 0, r.output
    assert "second-order effects of 512 neurons of vision_model.encoder.layers.2.mlp.activation_fn " \
           "over 40 images (4 later heads)" in r.output
    r = runner.invoke(app, ["lens", "ablate", str(out), "--data",
                            "world:n=40,size=32,seed=999,objects=1", "--task", "world-color",
                            "--workers", "0", "-q"])
    assert r.exit_code == 0, r.output
    assert "mean_all" in r.output and (out / "evaluation" / "second_order_ablations.parquet").exists()
    for _ in range(2):  # a second task adds its rows; rerunning a task replaces its own
        r = runner.invoke(app, ["lens", "ablate", str(out), "--data",
                                "world:n=40,size=32,seed=999,objects=1", "--task", "world-shape",
                                "--workers", "0", "-q"])
        assert r.exit_code == 0, r.output
    from neuronatlas.run import read_evaluation

    table = read_evaluation(out, "second_order_ablations")
    assert sorted(table["task"].value_counts().items()) == [("world-color", 6), ("world-shape", 6)]
    r = runner.invoke(app, ["lens", "second-order", "zoo:world-clip", "--layer", "9", "--data",
                            "world:n=40,size=32", "--out", str(out), "-q"])
    assert r.exit_code != 0 and "out of range" in str(r.exception)
    sharded = tmp_path / "sharded"  # --shard I/N: the same arrays as one process
    for shard, says in (("1/2", "shard 1/2 done"), ("0/2", "second-order effects of 512 neurons")):
        r = runner.invoke(app, ["lens", "second-order", "zoo:world-clip", "--layer", "2", "--data",
                                "world:n=40,size=32,seed=1", "--out", str(sharded), "--top-k", "5",
                                "--workers", "0", "-q", "--shard", shard])
        assert r.exit_code == 0 and says in r.output, r.output
    a, b = open_second_order(sharded), open_second_order(out)
    assert np.asarray(a.norms).tobytes() == np.asarray(b.norms).tobytes()
    assert np.asarray(a.pc).tobytes() == np.asarray(b.pc).tobytes()
