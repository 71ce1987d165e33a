"""`neuronatlas explain` through the real CLI on a recorded run of a small conv net (2 layers)."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from neuronatlas.explain.attribution import attribute
from neuronatlas.models import load_target
from neuronatlas.recording.replay import probe_for_run


def _cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "neuronatlas.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


def test_explain_cli_writes_the_explanation_and_refuses_bad_input(tmp_path, tiny_cnn_file):
    run = tmp_path / "run"
    r = _cli("record", tiny_cnn_file, "--data", "world:n=12,size=32", "--out", run,
             "--layers", "conv1,conv2", "-q")
    assert r.returncode == 0, r.stderr
    out = tmp_path / "ex"
    r = _cli("explain", run, "3", "--out", out, "--chain-k", "3", "--random-draws", "2")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("predicted '")
    result = json.loads((out / "explanation.json").read_text())
    assert result["image"] == "3" and result["output"]["kind"] == "class"
    # the chain goes through both layers, edges from conv1 units into conv2 nodes
    layers = {n["layer"] for n in result["chain"]["nodes"]}
    assert layers == {"conv1", "conv2"}
    assert all(e["source"].startswith("conv1:") and e["target"].startswith("conv2:")
               for e in result["chain"]["edges"])
    table = pd.read_parquet(out / "attributions.parquet")
    assert len(table) == 8 + 6
    # the stored numbers are the attribution computed directly
    from neuronatlas.run import open_run

    target = load_target(tiny_cnn_file)
    probe = probe_for_run(open_run(run))
    batch = target.make_batch(target.preprocess(probe.read_image(3))[None], np.array([3]), probe)
    c = result["output"]["class"]
    direct = attribute(target, batch, target.select(["conv1", "conv2"]), lambda o: o[:, c])
    np.testing.assert_allclose(table[table.layer == "conv2"]["attribution"], direct["conv2"],
                               rtol=1e-5, atol=1e-7)
    # integrated gradients sum to the logit's change from the zeroed layer (completeness)
    ig = attribute(target, batch, target.select(["conv2"]), lambda o: o[:, c],
                   "integrated_gradients", steps=64)["conv2"]
    modules = dict(target.model.named_modules())
    h = modules["conv2"].register_forward_hook(lambda m, i, o: torch.zeros_like(o))
    with torch.no_grad():
        zeroed = float(target.run(batch)[0, c])
    h.remove()
    assert abs(ig.sum() - (result["output"]["logit"] - zeroed)) < 2e-2 * max(1, abs(ig.sum()))

    r = _cli("explain", run, "999", "--out", out)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "neither an image file" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    from neuronatlas.errors import UserError
    from neuronatlas.explain import explain

    for kwargs, words in [({"target_class": 7}, "outside"), ({"baseline": "median"}, "mean or zero"),
                          ({"target_class": "zebra"}, "unknown class")]:
        with pytest.raises(UserError, match=words):
            explain(run, 0, **kwargs)
