"""Ground truth: a classifier whose reasons are known (zoo:synthetic-units + a linear head we build).

Class 0 is a known weighted sum of three mono units that fire on image 0 (weights 3, 2, 1 on the
units in decreasing order of activation, so the contributions are in that order too); class 1 reads
another unit. The attribution's top units must be exactly those three, in that order, and the sentence
must name their true concepts (labels from NetDissect on the world masks).
"""

import numpy as np
import pytest
import torch
from torch import nn

from neuronatlas.data import open_probe
from neuronatlas.describe import describe
from neuronatlas.explain import explain
from neuronatlas.explain.attribution import attribute
from neuronatlas.models.synthetic_units import build_synthetic
from neuronatlas.models.target import Target
from neuronatlas.recording import RecordConfig, record

PROBE = "world:n=64,size=64,seed=3"


class WithHead(nn.Module):
    def __init__(self, base, head):
        super().__init__()
        self.units, self.head = base.model.units, head


def pooled_units(base, probe, i):
    batch = base.make_batch(base.preprocess(probe.read_image(i))[None], np.array([i]), probe)
    with torch.no_grad():
        return base.forward_batch(batch).mean(dim=(2, 3))[0].double().numpy()


def classifier_target(probe):
    base = build_synthetic(noise=0.0)
    m = pooled_units(base, probe, 0)
    mono = [u for u in np.argsort(-m[:39]) if m[u] > 0][:3]
    contrib = {int(u): w for u, w in zip(mono, (3.0, 2.0, 1.0))}
    other = next(u for u in range(39) if u not in contrib)
    head = nn.Linear(len(m), 2, bias=False)
    with torch.no_grad():
        head.weight.zero_()
        for u, w in contrib.items():
            head.weight[0, u] = w
        head.weight[1, other] = 0.5

    def logits(maps):
        return head(maps.mean(dim=(2, 3)))

    target = Target(spec="test:synthetic-classifier", model=WithHead(base, head).eval(),
                    preprocess=base.preprocess, forward=lambda px: logits(base.forward(px)),
                    forward_batch=lambda batch: logits(base.forward_batch(batch)),
                    family="synthetic", weights="test", class_names=["target", "other"],
                    truth=base.truth)
    return target, contrib, base


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    probe = open_probe(PROBE)
    target, contrib, base = classifier_target(probe)
    out = tmp_path_factory.mktemp("explain") / "run"
    record(target, probe, out, RecordConfig(layers=["units"], k=8, save_acts=True),
           show_progress=False)
    describe(out, method="netdissect", target=target)
    return target, probe, out, contrib, base


@pytest.mark.parametrize("method", ["grad_x_act", "integrated_gradients"])
def test_attribution_is_activation_times_weight_on_a_linear_head(recorded, method):
    target, probe, _, contrib, base = recorded
    points = target.select(["units"])
    for i in range(5):
        batch = target.make_batch(target.preprocess(probe.read_image(i))[None], np.array([i]), probe)
        attr = attribute(target, batch, points, lambda out: out[:, 0], method, steps=8)["units"]
        m = pooled_units(base, probe, i)
        want = np.zeros_like(m)
        for u, w in contrib.items():
            want[u] = m[u] * w
        np.testing.assert_allclose(attr, want, rtol=1e-5, atol=1e-7)


def test_the_explanation_names_the_contributing_units_in_weight_order(recorded, tmp_path):
    target, probe, run, contrib, _ = recorded
    result = explain(run, 0, target=target, probe=probe, top=5, chain_k=3, random_draws=3,
                     out=tmp_path / "ex")
    assert result["output"]["name"] == "target"  # the predicted class by default
    named = [t["unit"] for t in result["top_units"] if t["weight"] > 1e-9]
    assert named == [f"units:{u}" for u in contrib]  # contrib is in decreasing contribution
    truth = dict(zip(target.truth["unit"], target.truth["truth"]))
    for unit in named:
        assert f"'{truth[unit]}' ({unit}," in result["sentence"], result["sentence"]
    curve = next(c for c in result["deletion"] if c["layer"] == "units")
    k1 = curve["k"].index(1)
    assert curve["attribution"][k1] < curve["random_mean"][k1]
    assert curve["attribution"][curve["k"].index(4)] == pytest.approx(0.0, abs=1e-6) or \
        curve["attribution"][curve["k"].index(4)] < curve["attribution"][k1]
    assert [n["unit"] for n in result["chain"]["nodes"]] == named[:3]
    assert np.asarray(result["chain"]["nodes"][0]["map"]).shape == (8, 8)  # its heat map
    assert (tmp_path / "ex" / "explanation.json").exists()
    assert (tmp_path / "ex" / "attributions.parquet").exists()
