"""Synthetic units -> NetDissect -> evaluate: the truth column flows from the Target into the run and
into the ground-truth metrics."""

import torch

import neuronatlas as na
from neuronatlas.describe.netdissect import netdissect
from neuronatlas.evaluate import evaluate
from tests.evaluate.conftest import FakeEmbedder


def test_synthetic_units_netdissect_evaluate(tmp_path):
    torch.set_num_threads(1)
    run = na.record("zoo:synthetic-units", "world:n=120,size=32,seed=1", tmp_path / "run",
                    layers="units", batch_size=60, num_workers=0)
    netdissect(run, top=5)

    class Hash(FakeEmbedder):  # every text its own direction; equal texts -> cosine 1
        def _embed_batch(self, texts):
            return torch.stack([torch.randn(8, generator=torch.Generator().manual_seed(
                sum(map(ord, t)) * 7919 + len(t))) for t in texts])

    summary = evaluate(run, embedder=Hash({}), simulation=False)
    s = summary[summary.method == "netdissect"].set_index(["metric", "kind"])["value"]
    assert s[("exact", "mono")] >= 0.6, s[("exact", "mono")]
    assert s[("exact", "and")] == 0 and s[("exact", "or")] == 0  # one concept can't be a pair
    assert s[("partial", "and")] >= 0.8
    gt = run.evaluation("ground_truth")
    assert len(gt) == len(run.units) and set(gt["kind"]) == {"mono", "or", "and"}
    same = gt[gt.label == gt.truth]
    assert len(same) and (same["cosine"] > 0.999).all()
    assert "agreement" not in {p.stem for p in (run.path / "evaluation").glob("*.parquet")}
