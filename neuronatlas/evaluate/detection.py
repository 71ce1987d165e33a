"""Detection score: given only a unit's label, can a judge tell the images that activate the unit
from images that do not? (The "detection" scorer of automated-interpretability work: Bills et al.
2023, delphi; here for images.)

For each (unit, method) with a rank-0 label:
    positives  the unit's recorded top images, ranks [skip, skip + n_pos) (`skip` > 0 keeps out the
               exemplars a describer was shown, when the run recorded more than it saw)
    negatives  "random": n_neg images of the held-out split (`simulation.heldout_mask`, the same
               split as the simulation score) outside the unit's top list, drawn with a generator
               seeded by (seed, unit); or "bottom": the unit's n_neg lowest images
    judge      gives every image a score for the label:
               - an image-text scorer (CLIP, world-clip, ConSE): cosine(image, label);
               - a VLM (a chat client): prompts/detect.txt ("Is there a {label}? Answer yes or
                 no."); "yes" -> 1, "no" -> 0, a digit 1-5 (a rating prompt) -> that number, anything
                 else -> NaN (dropped)
    AUROC      P(score(positive) > score(negative)) + 0.5 P(equal): the Mann-Whitney statistic over
               all (positive, negative) pairs; 0.5 = chance, 1 = the label separates them perfectly.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import numpy as np

from ..config import Any, Literal, opt
from ..errors import UserError
from .base import MetricConfig, MetricResult, metric

COLUMNS = ["unit", "method", "label", "judge", "auroc", "n_pos", "n_neg", "negatives"]


def auroc(pos, neg) -> float:
    """Mann-Whitney AUROC of positive vs negative scores, ties counted half; NaN scores dropped;
    NaN when either side is empty."""
    pos = np.asarray(pos, np.float64)
    neg = np.asarray(neg, np.float64)
    pos, neg = pos[np.isfinite(pos)], neg[np.isfinite(neg)]
    if not len(pos) or not len(neg):
        return float("nan")
    # every pair, blockwise over positives (top lists are at most a few hundred images)
    wins = 0.0
    for a in range(0, len(pos), 1024):
        p = pos[a:a + 1024, None]
        wins += float((p > neg[None]).sum() + 0.5 * (p == neg[None]).sum())
    return wins / (len(pos) * len(neg))


def parse_judgement(text: str) -> float:
    t = str(text).strip().lower()
    m = re.match(r"[\W_]*(yes|no|[1-5])\b", t)
    if not m:
        return float("nan")
    word = m.group(1)
    return 1.0 if word == "yes" else 0.0 if word == "no" else float(word)


class ScorerJudge:
    """cosine(image, label) from an ImageTextScorer; image embeddings computed once per image."""

    def __init__(self, scorer):
        self.scorer, self.name = scorer, f"scorer:{scorer.name}"
        self._emb: dict[int, np.ndarray] = {}
        self._txt: dict[str, np.ndarray] = {}

    def prepare(self, probe, indices) -> None:
        import torch

        todo = sorted(set(int(i) for i in indices) - set(self._emb))
        if todo:
            with torch.no_grad():
                emb = self.scorer.encode_pil([probe.read_image(i) for i in todo]).float().numpy()
            self._emb.update(zip(todo, emb))

    def scores(self, probe, indices, label: str) -> np.ndarray:
        import torch

        self.prepare(probe, indices)
        label = str(label)
        if label not in self._txt:
            with torch.no_grad():
                self._txt[label] = self.scorer.encode_texts([label]).float().cpu().numpy()[0]
        return np.array([float(self._emb[int(i)] @ self._txt[label]) for i in indices])


class VLMJudge:
    """A chat client asked prompts/detect.txt about each image (answers cached by the client)."""

    def __init__(self, client, prompts=None, max_tokens: int = 8):
        from ..describe.prompts import load_prompts

        self.client, self.name = client, f"vlm:{client.name}"
        self.template = load_prompts(prompts)["detect"]
        self.max_tokens = max_tokens

    def scores(self, probe, indices, label: str) -> np.ndarray:
        from ..backends.chat import ChatRequest
        from ..describe.prompts import render

        prompt = render(self.template, label=label)
        reqs = [ChatRequest.user(prompt, [probe.read_image(int(i)).convert("RGB")],
                                 max_tokens=self.max_tokens) for i in indices]
        return np.array([parse_judgement(r.text) for r in self.client.chat_many(reqs)])


def load_judge(judge, prompts=None, cache=None, concurrency: int = 4):
    """A judge from a spec or instance: `vlm:SPEC` or a chat spec (openai:..., hf-vlm:...,
    zoo:world-llava) -> VLMJudge; `scorer:SPEC` or any image-text scorer spec -> ScorerJudge."""
    from ..backends.chat import ChatClient, is_chat_spec, load_chat_client
    from ..backends.scorer import ImageTextScorer, load_scorer

    if isinstance(judge, (ScorerJudge, VLMJudge)):
        return judge
    if isinstance(judge, ChatClient):
        return VLMJudge(judge, prompts)
    if isinstance(judge, ImageTextScorer):
        return ScorerJudge(judge)
    spec = str(judge)
    if spec.startswith("vlm:") or is_chat_spec(spec):
        spec = spec.removeprefix("vlm:")
        return VLMJudge(load_chat_client(spec, cache=cache, concurrency=concurrency), prompts)
    return ScorerJudge(load_scorer(spec.removeprefix("scorer:")))


def _seed(seed: int, unit: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{seed}/{unit}".encode(), digest_size=8).digest(), "big")


def detection_table(run, labels, judge, n_pos: int | None = None, n_neg: int | None = None,
                    negatives: str = "random", skip: int = 0, holdout: float = 0.5, seed: int = 0,
                    probe=None):
    """One row per (unit, method): unit, method, label, judge, auroc, n_pos, n_neg, negatives.
    `labels` as from `run.labels()` (rank 0 is used); `judge` from `load_judge`. n_pos: positives
    per unit (default: every recorded top image after `skip`); n_neg: negatives (default n_pos)."""
    import pandas as pd

    from ..recording.replay import probe_for_run
    from .labeler_agreement import top1
    from .simulation import heldout_mask

    if negatives not in ("random", "bottom"):
        raise UserError(f"detection negatives must be random or bottom (got {negatives})")
    first = top1(labels)
    probe = probe_for_run(run, probe)
    images = run.images
    ok = images[images["status"] == "ok"]
    pool = ok["index"].to_numpy(np.int64)[heldout_mask(ok["image_id"], holdout, seed)]
    sets = {}
    for unit in first["unit"].unique():
        top = run.topk(unit)["index"].to_numpy(np.int64)
        pos = top[skip:] if n_pos is None else top[skip:skip + n_pos]
        want = n_neg if n_neg is not None else len(pos)
        if negatives == "bottom":
            neg = run.bottomk(unit, want)["index"].to_numpy(np.int64)
        else:
            cand = np.setdiff1d(pool, top)
            rng = np.random.default_rng(_seed(seed, unit))
            neg = np.sort(rng.choice(cand, size=min(want, len(cand)), replace=False))
        sets[unit] = (pos, neg)
    if isinstance(judge, ScorerJudge):  # embed every image once, in one pass
        judge.prepare(probe, np.concatenate([np.concatenate(s) for s in sets.values()]))
    rows = []
    for r in first.itertuples():
        pos, neg = sets[r.unit]
        if not len(pos) or not len(neg):
            raise UserError(f"{r.unit} has {len(pos)} positive and {len(neg)} negative images for "
                            f"detection: record more images (or lower skip)")
        s = judge.scores(probe, np.concatenate([pos, neg]), str(r.label))
        rows.append({"unit": r.unit, "method": r.method, "label": r.label, "judge": judge.name,
                     "auroc": auroc(s[:len(pos)], s[len(pos):]), "n_pos": len(pos),
                     "n_neg": len(neg), "negatives": negatives})
    return pd.DataFrame(rows, columns=COLUMNS)


def summarize_detection(table):
    import pandas as pd

    if not len(table):
        return pd.DataFrame(columns=["method", "n_units", "auroc"])
    ok = table[np.isfinite(table["auroc"].astype(float))]
    g = ok.groupby("method", sort=True)["auroc"]
    return pd.DataFrame({"method": list(g.groups), "n_units": g.size().to_numpy(),
                         "auroc": g.mean().to_numpy()})


# -- the metric ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DetectionConfig(MetricConfig):
    judge: Any = opt(None, "Detection judge: a scorer spec or a VLM (openai:M@URL, "
                           "zoo:world-llava); default the simulation scorer.")
    scorer: Any = opt(None, "The simulation scorer (the judge when no judge is given).")
    detection_negatives: Literal["random", "bottom"] = opt(
        "random", "Negatives: random held-out images outside the unit's top list, or its bottom "
                  "images.")
    detection_n: int | None = opt(None, "Images per side (default: every recorded top image).")
    holdout: float = opt(0.5, "Fraction of images held out (the simulation score's split).")
    seed: int = opt(0, "Seed of the held-out split and the negatives.")
    probe: Any = opt(None, "Probe set, if it moved since recording.", flag="--data")

    def validate(self) -> None:
        if self.detection_n is not None and self.detection_n < 1:
            raise self.error("detection_n", "must be at least 1")


def _on_request(run, labels, config, shared) -> bool:
    """only when asked"""
    return False  # a judge's calls cost: only when asked (evaluate(detection=...), --detection)


@metric("detection", DetectionConfig, applies=_on_request, order=30)
def score(run, labels, config: DetectionConfig, shared) -> MetricResult:
    """AUROC of a judge telling each unit's top images from others, given only the label."""
    import pandas as pd

    from ..run import chat_cache_path

    c = config
    if c.judge is None:
        judge = load_judge(shared.scorer(c.scorer))
    else:
        judge = load_judge(c.judge, cache=chat_cache_path(run.path))
    det = detection_table(run, labels, judge, n_pos=c.detection_n, n_neg=c.detection_n,
                          negatives=c.detection_negatives, holdout=c.holdout, seed=c.seed,
                          probe=c.probe)
    s = summarize_detection(det)
    return MetricResult(det, pd.DataFrame({"metric": "detection_auroc", "method": s["method"],
                                           "other": None, "kind": "all",
                                           "n_units": s["n_units"], "value": s["auroc"]}))
