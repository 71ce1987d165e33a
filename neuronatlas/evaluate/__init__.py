"""Evaluate a run's labels: agreement with ground truth, simulation score, agreement between methods.

    summary = evaluate(run)                 # long table: metric, method, other, kind, n_units, value
    run.evaluation("ground_truth")          # per (unit, method) rows; also "simulation", "agreement"

Writes RUN/evaluation/{summary,ground_truth,simulation,agreement}.parquet (the parts that apply) and
prints nothing. Each part is a metric (`base.py`: a name, a frozen config, `score(run, labels,
config, shared)`), one module of this package; evaluate() is the only code that writes evaluations.
Parts:

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
from .base import (SUMMARY_COLUMNS, Metric, MetricConfig, MetricResult, Shared, get_metric,
                   metric, metrics)
from .detection import auroc, detection_table, load_judge, summarize_detection
from .ground_truth import ground_truth_table, summarize_ground_truth
from .simulation import heldout_mask, pearson, simulation_table, summarize_simulation

__all__ = ["evaluate", "ground_truth_table", "summarize_ground_truth", "simulation_table",
           "summarize_simulation", "agreement_table", "heldout_mask", "pearson", "SUMMARY_COLUMNS",
           "auroc", "detection_table", "load_judge", "summarize_detection", "metric", "metrics",
           "get_metric", "Metric", "MetricConfig", "MetricResult", "Shared", "metric_options"]


def _field_names(cls) -> set[str]:
    import dataclasses

    return {f.name for f in dataclasses.fields(cls)}


def metric_options(name: str, options: dict) -> dict:
    """The entries of `options` that are fields of metric `name`'s config."""
    fields = _field_names(get_metric(name).config)
    return {k: v for k, v in options.items() if k in fields}


def evaluate(run, methods=None, truth=None, metrics=None, write: bool = True, simulation="auto",
             detection=None, switches: dict | None = None, **options):
    """Evaluate the labels of `methods` (default: every method with labels in the run).

    metrics: names of the metrics to run (default: every metric that applies: ground_truth with a
    truth, simulation when the labelled layers have pooled activations, agreement with two methods
    or more; detection only when asked). simulation / detection / switches={NAME: True | False |
    "auto"}: force a metric on or off ("auto": when it applies); detection may also be a judge spec
    or instance (= detection on with judge=...). options: fields of the metrics' configs, one name
    one meaning (embedder, scorer, clip_scorer, top, holdout, seed, probe, max_images, judge,
    detection_negatives, detection_n, ...); an option no metric takes is refused.
    truth: a table (unit, truth [, kind, concepts]) for units without a `truth` column in the run.
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
    known = _registry()
    switches = dict(switches or {})
    switches.setdefault("simulation", simulation)
    if detection is not None and detection is not False and detection is not True \
            and detection != "auto":
        options.setdefault("judge", detection)  # a judge spec or instance
        detection = True
    switches.setdefault("detection", False if detection is None else detection)
    if options.get("clip_scorer") == "scorer":  # the simulation scorer, one instance for both
        options["clip_scorer"] = options.get("scorer")
    taken = set().union(*(_field_names(m.config) for m in known.values()))
    unknown = sorted(set(options) - taken)
    if unknown:
        raise UserError(f"no metric takes {', '.join(unknown)}; the metrics' options: "
                        f"{', '.join(sorted(taken))}")
    for name in switches:
        if name not in known:
            get_metric(name)  # raises with the near matches

    if truth is None and "truth" in run.units.columns:
        truth = run.units[[c for c in ("unit", "truth", "truth_kind", "truth_concepts")
                           if c in run.units.columns]]
    shared = Shared(run, truth)
    chosen = []
    for name in (metrics if metrics is not None else known):
        m = get_metric(name)
        config = m.config.from_options(**metric_options(name, options))
        wanted = switches.get(name, "auto") if metrics is None else True
        if wanted is True or (wanted == "auto" and m.runs_by_default(run, labels, config, shared)):
            chosen.append((m, config))

    parts, tables = [], {}
    for m, config in chosen:
        result = m.score(run, labels, config, shared)
        if result.table is not None:
            tables[m.name] = result.table
        parts.append(result.summary)
    parts = [p for p in parts if len(p)]
    summary = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=SUMMARY_COLUMNS)
    summary = summary[SUMMARY_COLUMNS].astype({"n_units": "int64", "value": "float64"})
    summary["other"] = summary["other"].astype(object)
    if write:
        for name, df in tables.items():
            rundir.write_evaluation(run.path, name, df)
        rundir.write_evaluation(run.path, "summary", summary)
    return summary


def _registry() -> dict:
    from .base import metrics as registered

    return registered()
