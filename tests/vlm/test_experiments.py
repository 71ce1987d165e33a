"""`vlm ablate` and `vlm knockout` on zoo:world-llava with the world's exact object masks:
ablating an object's tokens hurts answers about that object far more than ablating as many random
tokens (the paper's finding, measured here on ground truth); blocking the object -> last token edge
in every layer hurts more than blocking the same edge from non-object tokens where it matters; tables
follow the inclusion rule, resume, and refuse another config; the commands run."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from neuronatlas.errors import UserError
from neuronatlas.vlm.ablation import object_tokens
from neuronatlas.vlm.ablation_run import AblationConfig, curves, run_ablation, world_items
from neuronatlas.vlm.knockout_run import KnockoutConfig, run_knockout

DATA = "world:n=12,size=64,seed=100"


@pytest.fixture(scope="module")
def world():
    from neuronatlas.vlm.subject import load_subject

    torch.set_num_threads(1)
    return load_subject("zoo:world-llava")


@pytest.fixture(scope="module")
def ablation(world, tmp_path_factory):
    out = tmp_path_factory.mktemp("ablation")
    cfg = AblationConfig(settings=("polling", "vqa"), token_sets=("object", "random-matched"),
                         buffers=(0,), ks=(), mean_images=12, batch_size=6)
    return run_ablation(world, DATA, out, cfg, show_progress=False), out, cfg


def test_object_tokens_matter_more_than_random_tokens(ablation):
    store, _, _ = ablation
    cur = store.table("curves").set_index(["setting", "token_set"])
    for setting in ("polling", "vqa"):
        obj, rnd = cur.loc[(setting, "object")], cur.loc[(setting, "random-matched")]
        assert obj.n >= 15 and obj.n == rnd.n and abs(obj.k - rnd.k) < 1e-9  # same items, same k
        assert obj.accuracy < rnd.accuracy - 0.5, (setting, obj.accuracy, rnd.accuracy)
        assert obj.prob_drop > rnd.prob_drop + 0.4


def test_ablation_tables_follow_the_inclusion_rule(ablation, world):
    from neuronatlas.data import open_probe

    store, _, _ = ablation
    df = store.table("images")
    clean = df[df.token_set == "none"]
    assert clean.right.equals(clean.clean_right)
    ablated = df[df.token_set != "none"]
    assert ablated.clean_right.all()  # only objects right on the clean image are ablated
    n_right = clean.clean_right.sum()
    assert len(ablated) == 2 * n_right
    probe = open_probe(DATA)
    for r in ablated[ablated.token_set == "object"].head(6).itertuples():
        it = [i for i in world_items(probe, r.index, 64) if i.obj == r.object][0]
        assert r.k == len(object_tokens(world, it.mask, 0))
    assert curves(df).equals(store.table("curves"))
    meta = store.update_meta()
    assert meta["status"] == "complete" and meta["mean_vector_count"] == 12 * 65
    assert store.plot_path("curves").stat().st_size > 1000


def test_ablation_resumes_and_refuses_another_config(ablation, world):
    store, out, cfg = ablation
    before = store.table("images")
    store.part_path(1).unlink()
    run_ablation(world, DATA, out, cfg, show_progress=False)
    assert store.table("images").equals(before)
    with pytest.raises(UserError, match="different config"):
        run_ablation(world, DATA, out, AblationConfig(buffers=(1,)), show_progress=False)
    with pytest.raises(UserError, match="unknown token set"):
        AblationConfig(token_sets=("objects",))


def test_knockout_of_object_to_last_in_all_layers(world, tmp_path):
    cfg = KnockoutConfig(settings=("vqa",), sources=("object", "non-object"), destinations=("last",),
                         buffers=(1,), windows="all=0-2,first=0-0", batch_size=6)
    store = run_knockout(world, DATA, tmp_path, cfg, show_progress=False)
    s = store.table("summary").set_index(["source", "window"])
    assert set(s.index) == {("object-1", "all"), ("object-1", "first"), ("non-object", "all"),
                            ("non-object", "first")}
    assert s.loc[("object-1", "all")].n >= 10
    assert s.loc[("object-1", "all")].accuracy < s.loc[("non-object", "all")].accuracy - 0.5
    df = store.table("images")
    assert df[df.source != "none"].clean_right.all()
    assert (df[df.source != "none"].n_blocked > 0).all()


def test_commands_run(tmp_path):
    base = [sys.executable, "-m", "neuronatlas.cli", "vlm"]
    r = subprocess.run(base + ["ablate", "zoo:world-llava", "--data", DATA, "--out", str(tmp_path),
                               "--limit", "2", "--settings", "polling", "--token-sets", "object,random",
                               "--buffers", "0", "--ks", "5", "--mean-images", "2", "-q"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "polling" in r.stdout and (tmp_path / "vlm/ablation/default/curves.parquet").exists()
    r = subprocess.run(base + ["knockout", "zoo:world-llava", "--data", DATA, "--out", str(tmp_path),
                               "--limit", "2", "--sources", "object", "--destinations", "last",
                               "--buffers", "0", "--windows", "a=0-1", "-q"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "vlm/knockout/default/summary.parquet").exists()
    r = subprocess.run(base + ["knockout", "zoo:world-llava", "--data", DATA, "--out", str(tmp_path),
                               "--name", "bad", "--windows", "a=0-9", "-q"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode != 0 and "past the last decoder layer" in r.stderr
    assert "Traceback" not in r.stderr
