"""Evaluate a run's labels: agreement with ground truth, simulation score, agreement between methods.

    summary = evaluate(run)                 # long table: metric, method, other, kind, n_units, value
    run.evaluation("ground_truth")          # per (unit, method) rows; also "simulation", "agreement"

Writes RUN/evaluation/{summary,ground_truth,simulation,agreement}.parquet (the parts that apply) and
prints nothing. Parts:

- ground truth (`ground_truth.py`), for units with a `truth` column in `run.units` (synthetic units)
  or a `truth=` table you pass (e.g. classifier units and their class names): exact, top5, partial,
  and text-embedding cosine between label and truth (MiniLM; also in a CLIP's text space with
  `clip_scorer=`, e.g. "zoo:world-clip": metric clip_cosine);
- simulation (`simulation.py`): Pearson correlation between the unit's recorded activations on
  held-out images and the image-text scorer's similarity of those images to the label; needs the
  run's pooled activations (--save-acts). simulation="auto" runs it when every labelled layer has them;
- agreement (`labeler_agreement.py`): for every pair of methods, same top-1 label and embedding cosine;
- detection (`detection.py`, when `detection=` is given): AUROC of a judge (an image-text scorer or
  a VLM) telling the unit's top images from random held-out (or bottom) images given only the label.
"""

from __future__ import annotations

from .labeler_agreement import agreement_table
from .detection import auroc, detection_table, load_judge, summarize_detection
from .ground_truth import ground_truth_table, summarize_ground_truth
from .simulation import heldout_mask, pearson, simulation_table, summarize_simulation

SUMMARY_COLUMNS = ["metric", "method", "other", "kind", "n_units", "value"]

__all__ = ["evaluate", "ground_truth_table", "summarize_ground_truth", "simulation_table",
           "summarize_simulation", "agreement_table", "heldout_mask", "pearson", "SUMMARY_COLUMNS",
           "auroc", "detection_table", "load_judge", "summarize_detection"]


def _embedder(embedder):
    if embedder is None or not isinstance(embedder, str):
        return embedder
    from ..backends.text import load_text_embedder

    return load_text_embedder(embedder)


def _scorer(scorer):
    if not isinstance(scorer, str):
        return scorer
    from ..backends.scorer import load_scorer

    return load_scorer(scorer)


def _has_acts(run, labels) -> bool:
    layers = {run.parse_unit(u)[0] for u in labels["unit"].unique()}
    return all(run.has_acts(layer) for layer in layers)


def evaluate(run, methods=None, truth=None, embedder="zoo:minilm", scorer=None,
             simulation="auto", holdout: float = 0.5, seed: int = 0, top: int = 5, probe=None,
             max_images: int | None = None, write: bool = True, clip_scorer=None,
             detection=None, detection_negatives: str = "random", detection_n: int | None = None):
    """Evaluate the labels of `methods` (default: every method with labels in the run).

    embedder: text-embedder spec or instance for cosines (None: no cosines). scorer: image-text
    scorer spec or instance for simulation (default `backends.DEFAULT_SCORER`). clip_scorer:
    image-text scorer spec or instance whose text encoder gives the clip_cosine ground-truth metric
    (None: not computed; "scorer": the simulation scorer). simulation: True,
    False or "auto". detection: None (skip), True (judge = the simulation scorer), or a judge spec
    / instance (`detection.load_judge`: a scorer spec, or a VLM such as openai:M@URL or
    zoo:world-llava); detection_negatives: random or bottom; detection_n: images per side.
    Returns the summary table (columns SUMMARY_COLUMNS)."""
    import pandas as pd

    from .. import run as rundir
    from ..errors import UserError

    run = rundir.open_run(run) if not isinstance(run, rundir.Run) else run
    labels = run.labels()
    if methods is not None:
        methods = [methods] if isinstance(methods, str) else list(methods)
        for m in methods:
            run.labels(m)  # unknown method -> UserError listing the known ones
        labels = labels[labels["method"].isin(methods)]
    if not len(labels):
        raise UserError(f"{run.path} has no labels to evaluate: run `neuronatlas describe "
                        f"{run.path} --method clip-dissect` (or netdissect) first")
    emb = _embedder(embedder)
    parts: list[pd.DataFrame] = []
    tables: dict[str, pd.DataFrame] = {}

    if truth is None and "truth" in run.units.columns:
        truth = run.units[[c for c in ("unit", "truth", "truth_kind", "truth_concepts")
                           if c in run.units.columns]]
    if truth is not None:
        if isinstance(clip_scorer, str) and clip_scorer in ("scorer", scorer):
            clip_scorer = scorer = _scorer(scorer)  # one instance for both uses
        elif clip_scorer is not None:
            clip_scorer = _scorer(clip_scorer)
        gt = ground_truth_table(labels, truth, emb, top, clip_scorer=clip_scorer)
        tables["ground_truth"] = gt
        s = summarize_ground_truth(gt)
        metrics = ("exact", "top5", "partial", "cosine") + (("clip_cosine",) if clip_scorer
                                                             is not None else ())
        for metric in metrics:
            parts.append(pd.DataFrame({"metric": metric, "method": s["method"], "other": None,
                                       "kind": s["kind"], "n_units": s["n_units"],
                                       "value": s[metric]}))

    run_sim = simulation is True or (simulation == "auto" and _has_acts(run, labels))
    if run_sim:
        if scorer is None:
            from ..backends.scorer import DEFAULT_SCORER

            scorer = DEFAULT_SCORER
        sim = simulation_table(run, _scorer(scorer), labels, holdout, seed, probe, max_images)
        tables["simulation"] = sim
        s = summarize_simulation(sim)
        parts.append(pd.DataFrame({"metric": "simulation_pearson", "method": s["method"],
                                   "other": None, "kind": "all", "n_units": s["n_units"],
                                   "value": s["pearson"]}))

    if detection is not None and detection is not False:
        if detection is True:
            from ..backends.scorer import DEFAULT_SCORER

            scorer = _scorer(scorer if scorer is not None else DEFAULT_SCORER)
            judge = load_judge(scorer)
        else:
            judge = load_judge(detection, cache=rundir.chat_cache_path(run.path))
        det = detection_table(run, labels, judge, n_pos=detection_n, n_neg=detection_n,
                              negatives=detection_negatives, holdout=holdout, seed=seed, probe=probe)
        tables["detection"] = det
        s = summarize_detection(det)
        parts.append(pd.DataFrame({"metric": "detection_auroc", "method": s["method"],
                                   "other": None, "kind": "all", "n_units": s["n_units"],
                                   "value": s["auroc"]}))

    if labels["method"].nunique() > 1:
        ag = agreement_table(labels, emb)
        tables["agreement"] = ag
        for metric, col in (("agreement_same_top1", "same_top1"), ("agreement_cosine", "cosine")):
            parts.append(pd.DataFrame({"metric": metric, "method": ag["method"], "other": ag["other"],
                                       "kind": "all", "n_units": ag["n_units"], "value": ag[col]}))

    parts = [p for p in parts if len(p)]
    summary = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=SUMMARY_COLUMNS)
    summary = summary[SUMMARY_COLUMNS].astype({"n_units": "int64", "value": "float64"})
    summary["other"] = summary["other"].astype(object)
    if write:
        for name, df in tables.items():
            rundir.write_evaluation(run.path, name, df)
        rundir.write_evaluation(run.path, "summary", summary)
    return summary
