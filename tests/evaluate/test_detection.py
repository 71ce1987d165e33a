"""Detection: AUROC of a judge telling a unit's top images from others, given only its label."""

import numpy as np
import pandas as pd
import pytest
import torch

import neuronatlas as na
from neuronatlas.backends.chat import RetryPolicy, load_chat_client
from neuronatlas.evaluate import auroc, detection_table, evaluate, load_judge
from neuronatlas.evaluate.detection import ScorerJudge, VLMJudge, parse_judgement
from neuronatlas.errors import UserError
from tests.backends.chat_server import ChatServer
from tests.evaluate.conftest import ColorScorer

COLOR_UNITS = {"units:9": "red", "units:12": "green", "units:14": "blue", "units:11": "yellow"}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    torch.set_num_threads(1)
    return na.record("zoo:synthetic-units", "world:n=80,size=64,seed=0",
                     tmp_path_factory.mktemp("det") / "run", layers="units", k=10, batch_size=40,
                     num_workers=0, save_acts=True)


def labels(mapping, method):
    return pd.DataFrame({"unit": list(mapping), "method": method, "rank": 0,
                         "label": list(mapping.values()), "score": 1.0})


def test_auroc_by_hand():
    # pairs (pos, neg): (3,2) 1, (3,1) 1, (2,2) .5, (2,1) 1, (2,2) .5, (2,1) 1 -> 5/6
    assert auroc([3, 2, 2], [2, 1]) == pytest.approx(5 / 6)
    assert auroc([1, 2], [3, 4]) == 0.0 and auroc([5], [5]) == 0.5
    assert auroc([3, np.nan], [1]) == 1.0 and np.isnan(auroc([], [1]))
    rng = np.random.default_rng(0)
    p, n = rng.integers(0, 5, 300), rng.integers(0, 5, 200)  # many ties
    brute = np.mean([(a > b) + 0.5 * (a == b) for a in p for b in n])
    assert auroc(p, n) == pytest.approx(brute)


def test_parse_judgement():
    assert [parse_judgement(t) for t in ("Yes.", "no", " **yes**", "4", "3/5")] == [1, 0, 1, 4, 3]
    assert np.isnan(parse_judgement("maybe"))


def test_detection_table_equals_a_brute_force_computation(run):
    """ColorScorer (image = mean RGB, label = an RGB direction): recompute the AUROC by hand."""
    from neuronatlas.recording.replay import probe_for_run
    from neuronatlas.evaluate.simulation import heldout_mask

    scorer = ColorScorer()
    table = detection_table(run, labels({"units:9": "red"}, "m"), ScorerJudge(scorer), n_pos=6)
    row = table.iloc[0]
    assert (row.n_pos, row.n_neg, row.negatives) == (6, 6, "random")
    probe = probe_for_run(run)
    top = run.topk("units:9")["index"].to_numpy()
    pos = top[:6]
    images = run.images
    held = images["index"].to_numpy()[heldout_mask(images["image_id"], 0.5, 0)]
    cand = np.setdiff1d(held, top)
    from neuronatlas.evaluate.detection import _seed

    neg = np.sort(np.random.default_rng(_seed(0, "units:9")).choice(cand, 6, replace=False))
    assert not set(neg) & set(top)

    def sim(i):
        px = scorer.preprocess(probe.read_image(int(i)))[None]
        return float(scorer.similarity(px, ["red"])[0, 0])

    sp, sn = [sim(i) for i in pos], [sim(i) for i in neg]
    want = np.mean([(a > b) + 0.5 * (a == b) for a in sp for b in sn])
    assert row.auroc == pytest.approx(want)
    bottom = detection_table(run, labels({"units:9": "red"}, "m"), ScorerJudge(scorer),
                             negatives="bottom", n_pos=4, n_neg=3).iloc[0]
    assert (bottom.n_pos, bottom.n_neg) == (4, 3)
    with pytest.raises(UserError, match="random or bottom"):
        detection_table(run, labels({"units:9": "red"}, "m"), ScorerJudge(scorer), negatives="x")


def test_true_labels_beat_wrong_labels_with_world_clip(run):
    judge = load_judge("zoo:world-clip")
    assert isinstance(judge, ScorerJudge)
    wrong = dict(zip(COLOR_UNITS, ["blue", "red", "yellow", "green"]))
    both = pd.concat([labels(COLOR_UNITS, "right"), labels(wrong, "wrong")])
    t = detection_table(run, both, judge).set_index(["method", "unit"])["auroc"]
    for unit in COLOR_UNITS:
        assert t["right", unit] > t["wrong", unit], unit
    assert t["right"].mean() > 0.9 and t["wrong"].mean() < t["right"].mean() - 0.2


def test_vlm_judge_over_http_and_evaluate_part(run):
    with ChatServer() as s:
        client = load_chat_client(f"openai:judge@{s.url}", cache=run.path / "cache" / "j.sqlite",
                                  retry=RetryPolicy(base_delay=0.001))
        judge = load_judge(client)
        assert isinstance(judge, VLMJudge)
        t = detection_table(run, labels({"units:9": "red"}, "right"), judge, n_pos=5)
        t2 = detection_table(run, labels({"units:9": "blue"}, "wrong"), judge, n_pos=5)
        asked = [b["messages"][0]["content"][1]["text"] for b in s.bodies]
        assert asked[0].endswith("Is there a red? Answer yes or no.") and s.requests == 20
        assert t.auroc.iloc[0] > t2.auroc.iloc[0]
        # through evaluate(): a `detection` part and a detection_auroc summary row
        from neuronatlas.run import write_labels

        write_labels(run.path, "right", labels(COLOR_UNITS, "right"), {"method": "hand"})
        summary = evaluate(run, methods=["right"], embedder=None, simulation=False,
                           detection=f"openai:judge@{s.url}", detection_n=5)
    row = summary[summary.metric == "detection_auroc"]
    assert list(row.method) == ["right"] and int(row.n_units.iloc[0]) == 4
    det = run.evaluation("detection")
    assert set(det.unit) == set(COLOR_UNITS) and set(det.judge) == {f"vlm:openai:judge@{s.url}"}
    assert row.value.iloc[0] == pytest.approx(det.auroc.mean())


def test_evaluate_detection_with_the_scorer(run):
    from neuronatlas.run import write_labels

    write_labels(run.path, "right", labels(COLOR_UNITS, "right"), {"method": "hand"})
    summary = evaluate(run, methods=["right"], embedder=None, simulation=False,
                       scorer="zoo:world-clip", detection=True)
    v = summary.set_index("metric").loc["detection_auroc", "value"]
    assert v > 0.8


def test_world_llava_judge_runs(run):
    judge = load_judge("zoo:world-llava", cache=None)
    t = detection_table(run, labels({"units:9": "red"}, "m"), judge, n_pos=3)
    assert 0 <= t.auroc.iloc[0] <= 1 and t.judge.iloc[0].startswith("vlm:zoo:world-llava")
