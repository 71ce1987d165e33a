"""Simulation score (as in "Linear Explanations" / OpenAI's explain-simulate-score): predict a unit's
activations on held-out images from its label alone, and correlate with what the unit really did.

The prediction for image i and label t is the image-text scorer's cosine similarity sim(i, t) (CLIP,
ConSE...); the score is the Pearson correlation, over the held-out images, between sim(., label) and
the unit's recorded pooled activations (`run.acts`, so the run needs --save-acts).

Held-out images: image i is held out when blake2b("{seed}/{image_id}") / 2**64 < holdout. The split
depends only on the image's id, so it does not change with the probe's order or size.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from ..config import Any, opt
from ..errors import UserError
from .base import MetricConfig, MetricResult, metric


def heldout_mask(image_ids, holdout: float = 0.5, seed: int = 0) -> np.ndarray:
    if not 0 < holdout <= 1:
        raise UserError(f"holdout must be in (0, 1] (got {holdout})")
    draws = [int.from_bytes(hashlib.blake2b(f"{seed}/{i}".encode(), digest_size=8).digest(), "big")
             for i in image_ids]
    return np.array([d / 2.0 ** 64 < holdout for d in draws], dtype=bool)


def pearson(x, y) -> float:
    """Pearson correlation over the pairs where both are finite; NaN if either side is constant."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) < 2:
        return float("nan")
    x, y = x - x.mean(), y - y.mean()
    den = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / den) if den > 0 else float("nan")


def simulation_scores(acts_NU: np.ndarray, sims_NL: np.ndarray, label_of_unit) -> np.ndarray:
    """Pearson(acts[:, u], sims[:, label_of_unit[u]]) for every unit u."""
    return np.array([pearson(acts_NU[:, u], sims_NL[:, j]) for u, j in enumerate(label_of_unit)])


def simulation_table(run, scorer, labels, holdout: float = 0.5, seed: int = 0, probe=None,
                     max_images: int | None = None):
    """One row per (unit, method) whose layer has saved activations: unit, method, label, pearson,
    n_images. `labels` as from `run.labels()` (rank 0 is used)."""
    import pandas as pd
    import torch

    from ..recording.replay import probe_for_run
    from .labeler_agreement import top1

    first = top1(labels)
    first = first.assign(layer=[run.parse_unit(u)[0] for u in first.unit],
                         index=[run.parse_unit(u)[1] for u in first.unit])
    layers = sorted(first.layer.unique())
    for layer in layers:
        run.acts(layer)  # no pooled matrix -> UserError naming --save-acts
    images = run.images
    ok = images[images["status"] == "ok"]
    held = ok[heldout_mask(ok["image_id"], holdout, seed)]
    if max_images is not None:
        held = held.iloc[:max_images]
    if len(held) < 3:
        raise UserError(f"only {len(held)} held-out images in {run.path}: record more images or "
                        f"raise --holdout")
    probe = probe_for_run(run, probe)
    index = held["index"].to_numpy(np.int64)
    with torch.no_grad():
        img = scorer.encode_pil([probe.read_image(int(i)) for i in index]).float()
        texts = sorted(first.label.astype(str).unique())
        txt = scorer.encode_texts(texts).float().cpu()
    sims = (img @ txt.T).double().numpy()  # (held-out images, labels)
    pos = {t: j for j, t in enumerate(texts)}
    rows = []
    for layer in layers:
        part = first[first.layer == layer]
        acts = np.asarray(run.acts(layer)[index][:, part["index"].to_numpy()], np.float64)
        scores = simulation_scores(acts, sims, [pos[str(t)] for t in part.label])
        for r, s in zip(part.itertuples(), scores):
            rows.append({"unit": r.unit, "method": r.method, "label": r.label, "pearson": s,
                         "n_images": len(index)})
    return pd.DataFrame(rows, columns=["unit", "method", "label", "pearson", "n_images"])


def summarize_simulation(table):
    import pandas as pd

    if not len(table):
        return pd.DataFrame(columns=["method", "n_units", "pearson", "pearson_median"])
    g = table.groupby("method", sort=True)["pearson"]
    return pd.DataFrame({"method": list(g.groups), "n_units": g.size().to_numpy(),
                         "pearson": g.mean().to_numpy(), "pearson_median": g.median().to_numpy()})


# -- the metric ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SimulationConfig(MetricConfig):
    scorer: Any = opt(None, "Image-text scorer that predicts activations from a label (default "
                            "conse:mobilenet-v2; e.g. zoo:world-clip on world probe sets).")
    holdout: float = opt(0.5, "Fraction of images held out (chosen by a hash of the image id).")
    seed: int = opt(0, "Seed of the held-out split.")
    max_images: int | None = opt(None, "Use at most this many held-out images.")
    probe: Any = opt(None, "Probe set, if it moved since recording.", flag="--data")

    def validate(self) -> None:
        if not 0 < self.holdout <= 1:
            raise self.error("holdout", "must be in (0, 1]")


def has_acts(run, labels, config=None, shared=None) -> bool:
    """when the labelled layers have pooled activations (--save-acts)"""
    layers = {run.parse_unit(u)[0] for u in labels["unit"].unique()}
    return all(run.has_acts(layer) for layer in layers)


@metric("simulation", SimulationConfig, applies=has_acts, order=20)
def score(run, labels, config: SimulationConfig, shared) -> MetricResult:
    """Pearson correlation of each unit's held-out activations with its label's similarity."""
    import pandas as pd

    c = config
    sim = simulation_table(run, shared.scorer(c.scorer), labels, c.holdout, c.seed, c.probe,
                           c.max_images)
    s = summarize_simulation(sim)
    return MetricResult(sim, pd.DataFrame({"metric": "simulation_pearson", "method": s["method"],
                                           "other": None, "kind": "all",
                                           "n_units": s["n_units"], "value": s["pearson"]}))
