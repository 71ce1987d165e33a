"""The metric contract: what an evaluation metric is, and the registry that finds it by name.

A metric is one module (copy `neuronatlas/evaluate/agreement.py`, or the toy metric in
tests/evaluate/test_metric_contract.py):

    @dataclass(frozen=True)
    class ToyConfig(MetricConfig):
        top: int = opt(1, "Labels of each unit that count.")

    @metric("toy", ToyConfig, order=50)
    def score(run, labels, config: ToyConfig, shared: Shared) -> MetricResult:
        ...

- `config`: a frozen dataclass (neuronatlas.config.Config): one docstring per field, a JSON round
  trip, one-line UserErrors. `evaluate(run, **options)` gives every metric the options that are
  fields of its config (one name, one meaning: `scorer` is the same scorer for all metrics).
- `score(run, labels, config, shared)`: `labels` as from `run.labels()` (the methods asked for);
  `shared` loads scorers / text embedders once for all metrics and holds the ground truth table.
  Returns `MetricResult(table, summary)`: the per-unit table (stored as
  RUN/evaluation/NAME.parquet, or None) and summary rows (columns SUMMARY_COLUMNS).
- `applies(run, labels, config, shared) -> bool` (optional): whether it runs when no metric list
  is given (ground truth: when there is truth; agreement: with two methods or more).
- `order`: where its rows go in the summary (lower first).
It never writes: `evaluate()` does. Built-in metrics are the modules of this package that register
one; modules named in $NEURONATLAS_PLUGINS are imported too.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from dataclasses import dataclass
from typing import Callable

from ..config import Config
from ..errors import UserError, near_matches
from ..plugins import load_plugins

SUMMARY_COLUMNS = ["metric", "method", "other", "kind", "n_units", "value"]


@dataclass(frozen=True)
class MetricConfig(Config):
    """Base of every metric's config."""


@dataclass
class MetricResult:
    table: object  # pandas DataFrame or None: per (unit, method) rows
    summary: object  # pandas DataFrame with SUMMARY_COLUMNS


def summary_rows(metric_name: str, table, value: str, method: str = "method", other=None,
                 kind="all", n_units: str = "n_units"):
    """Summary rows from a per-method table: one row per row of `table`, value column `value`."""
    import pandas as pd

    return pd.DataFrame({"metric": metric_name, "method": table[method],
                         "other": table[other] if other else None,
                         "kind": table[kind] if kind in getattr(table, "columns", ()) else kind,
                         "n_units": table[n_units], "value": table[value]})


class Shared:
    """What several metrics use, built once per evaluate(): scorers and text embedders by spec (an
    instance passes through), the truth table (or None), the chat cache of the run."""

    def __init__(self, run, truth=None):
        self.run, self.truth = run, truth
        self._scorers: dict = {}
        self._embedders: dict = {}

    def scorer(self, spec):
        """An ImageTextScorer for `spec` (None: backends.DEFAULT_SCORER); one instance per spec."""
        from ..backends.scorer import DEFAULT_SCORER, load_scorer

        spec = DEFAULT_SCORER if spec is None else spec
        if not isinstance(spec, str):
            return spec
        if spec not in self._scorers:
            self._scorers[spec] = load_scorer(spec)
        return self._scorers[spec]

    def embedder(self, spec):
        """A text embedder for `spec` (None: none, cosines are NaN); one instance per spec."""
        if spec is None or not isinstance(spec, str):
            return spec
        if spec not in self._embedders:
            from ..backends.text import load_text_embedder

            self._embedders[spec] = load_text_embedder(spec)
        return self._embedders[spec]


@dataclass(frozen=True)
class Metric:
    name: str
    config: type
    score: Callable
    applies: Callable | None = None
    order: int = 100

    def runs_by_default(self, run, labels, config, shared) -> bool:
        return self.applies is None or bool(self.applies(run, labels, config, shared))


_REGISTRY: dict[str, Metric] = {}
_LOADED = False


def metric(name: str, config: type, *, applies: Callable | None = None, order: int = 100):
    """Register `score(run, labels, config, shared)` as metric `name`. A second metric of the same
    name is refused (re-running the same module replaces its own entry)."""
    if not (isinstance(config, type) and issubclass(config, MetricConfig)):
        raise TypeError(f"metric {name}: config must be a frozen dataclass subclassing MetricConfig")
    if not config.__dataclass_params__.frozen:
        raise TypeError(f"metric {name}: {config.__name__} must be @dataclass(frozen=True)")

    def register(fn: Callable) -> Callable:
        old = _REGISTRY.get(name)
        if old is not None and (old.score.__module__, old.score.__qualname__) != \
                (fn.__module__, fn.__qualname__):
            raise ValueError(f"a metric named '{name}' is already registered "
                             f"({old.score.__module__}.{old.score.__qualname__}): pick another name")
        config.owner = name
        _REGISTRY[name] = Metric(name, config, fn, applies, order)
        return fn

    return register


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


def _load() -> None:
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    # the package's modules, found on disk (importing the package itself from here would be a cycle)
    package = __name__.rpartition(".")[0]
    for info in pkgutil.iter_modules([os.path.dirname(__file__)]):
        if not info.name.startswith("_") and info.name != "base":
            importlib.import_module(f"{package}.{info.name}")
    load_plugins()


def metrics() -> dict[str, Metric]:
    """Every registered metric by name, in summary order."""
    _load()
    return dict(sorted(_REGISTRY.items(), key=lambda kv: (kv[1].order, kv[0])))


def get_metric(name: str) -> Metric:
    known = metrics()
    if name not in known:
        hint = near_matches(name, list(known))
        raise UserError(f"unknown metric '{name}'" + (f" (did you mean {', '.join(hint)}?)"
                                                       if hint else "")
                        + f"; known metrics: {', '.join(known)}")
    return known[name]
