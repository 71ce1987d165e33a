"""Describe units: labelers that give every unit ranked text labels, stored in the run directory.

    import neuronatlas as na
    from neuronatlas.describe import describe

    run = na.open_run("runs/resnet")
    df = describe(run, "clip-dissect", scorer="conse:mobilenet-v2", concepts="words20k")
    run.labels("clip-dissect")        # columns unit, method, rank, label, score (+ extras)

Each method is a labeler (`base.py`: a name, a frozen config, `label(run, config)`), one module of
this package. `describe` builds the method's config from the options (or takes `config=`), runs it,
adds the method column and writes the labels with their config: it is the only code that writes
labels. Rewriting a method replaces its labels.

clip-dissect with a similarity other than the default soft_wpmi is stored as method
`clip-dissect-SIMILARITY` (e.g. clip-dissect-wpmi), so several can sit side by side; vlm in grid
mode is stored as `vlm-grid`.
"""

from __future__ import annotations

from collections.abc import Mapping

from .base import Labeler, LabelerConfig, Labels, get_labeler, labeler, labelers


class _Methods(Mapping):
    """The registered method names (a read-only view; importing the labelers on first use)."""

    def __getitem__(self, name):
        return labelers()[name]

    def __iter__(self):
        return iter(labelers())

    def __len__(self):
        return len(labelers())


METHODS = _Methods()


def methods_for(run) -> list[str]:
    """The methods that can label `run` (a Run or its path): every method, except those that need
    something the run lacks (second-order: the lens's effects, `neuronatlas lens second-order`)."""
    return [name for name, lab in labelers().items() if lab.can_label(run)]


def make_config(method: str, **options) -> LabelerConfig:
    """Method `method`'s config from keyword options (unknown ones refused)."""
    return get_labeler(method).config.from_options(**options)


def describe(run, method: str = "clip-dissect", name: str | None = None, config=None,
             keep_other_units: bool = False, **options):
    """Run labeler `method` on `run` (a Run or its path) with `config` (its config object) or
    `options` (its config's fields), and store the labels under `name` (default: the config's
    stored name, see above). keep_other_units: keep the stored labels of units this call did not
    label (a method run layer by layer). Returns the labels table."""
    import pandas as pd

    from ..run import LABEL_COLUMNS, read_labels, write_labels

    lab = get_labeler(method)
    run = _open(run, lab.recorded)
    if config is None:
        config = lab.config.from_options(**options)
    elif options:
        config = config.replace(**options)
    if not isinstance(config, lab.config):
        raise TypeError(f"{method} takes a {lab.config.__name__}, not {type(config).__name__}")
    out = lab.label(run, config)
    df, info = (out.table, out.info) if isinstance(out, Labels) else (out, {})
    missing = [c for c in ("unit", "rank", "label", "score") if c not in df.columns]
    if missing:
        raise ValueError(f"labeler {method} returned a table without {', '.join(missing)}")
    name = name or config.stored_name(method)
    df = df.drop(columns="method", errors="ignore")
    df.insert(1, "method", name)
    df = df[list(LABEL_COLUMNS) + [c for c in df.columns if c not in LABEL_COLUMNS]]
    df = df.reset_index(drop=True)
    stored = df
    if keep_other_units:
        old = read_labels(run.path, name)
        if old is not None:
            old = old[~old["unit"].isin(set(df["unit"]))]
            stored = pd.concat([old, df], ignore_index=True) if len(old) else df
    write_labels(run.path, name, stored, {"method": method, **info, "config": config.to_json()})
    return df


def _open(run, recorded: bool):
    from pathlib import Path
    from types import SimpleNamespace

    from ..run import Run, open_run

    from ..errors import UserError

    if isinstance(run, Run) or (not recorded and hasattr(run, "path")):
        return run
    if recorded:
        return open_run(run)
    try:
        return open_run(run)
    except UserError:  # a directory the lens wrote into, without a recording
        return SimpleNamespace(path=Path(run))


def _field_names(cls) -> set[str]:
    import dataclasses

    return {f.name for f in dataclasses.fields(cls)}


def options_for(method: str, options: dict) -> dict:
    """The entries of `options` that are fields of `method`'s config."""
    fields = _field_names(get_labeler(method).config)
    return {k: v for k, v in options.items() if k in fields}


def describe_all(run, methods=None, skip=(), **options) -> dict:
    """Run every method that can label `run` (or `methods`), each with the options its config
    has: one set of options for all (e.g. scorer= and concepts= reach clip-dissect, vlm= reaches
    vlm). An option no registered method takes is refused. Returns {method: labels table}."""
    from ..errors import UserError

    names = [m for m in (methods or methods_for(run)) if m not in skip]
    chosen = {m: get_labeler(m) for m in names}
    taken = {f for lab in labelers().values() for f in _field_names(lab.config)}
    unknown = sorted(set(options) - taken)
    if unknown:  # a typo; an option of a method that does not run here is fine
        raise UserError(f"no describe method takes {', '.join(unknown)}")
    return {m: describe(run, m, **options_for(m, options)) for m in chosen}


__all__ = ["METHODS", "describe", "describe_all", "options_for", "methods_for", "make_config", "labeler",
           "labelers", "get_labeler", "Labeler", "LabelerConfig", "Labels"]
