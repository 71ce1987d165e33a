"""The labeler contract: what a describe method is, and the registry that finds it by name.

A labeler is one module (copy `neuronatlas/describe/netdissect.py`'s last section, or the toy
labeler in tests/describe/test_labeler_contract.py):

    @dataclass(frozen=True)
    class ToyConfig(LabelerConfig):
        top: int = opt(3, "Labels kept per unit.")

    @labeler("toy", ToyConfig)
    def label(run, config: ToyConfig) -> pd.DataFrame:   # or Labels(table, info)
        ...  # columns unit, rank, label, score (+ any extras)

- `config`: a frozen dataclass (neuronatlas.config.Config): one docstring per field, a JSON round
  trip, one-line UserErrors. `neuronatlas describe --method toy` gets one option per field.
- `label(run, config)` returns the labels table (columns unit, rank, label, score and any extras),
  or `Labels(table, info)` when it resolved things worth storing with the labels (the scorer's
  weights hash, token usage...). It never writes labels: `describe()` does (neuronatlas.describe).
- `available(run) -> bool` (optional): whether the method can label this run at all (second-order
  needs the lens's effects); `methods_for(run)` lists the methods that can.
- `report(run, name) -> str | None` (optional): a line the CLI prints after labelling.
- `recorded=False` (optional): the labeler needs only the directory (see `labeler`).
- `config.stored_name(method)`: the name the labels are stored under (clip-dissect-wpmi...).

The built-in labelers are the modules of this package that register one (found by importing
them); modules named in $NEURONATLAS_PLUGINS (comma-separated, neuronatlas/plugins.py) are
imported too, so a labeler in your own file works from the command line.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from dataclasses import dataclass, field
from typing import Callable

from ..config import Config
from ..errors import UserError, near_matches
from ..plugins import load_plugins


@dataclass(frozen=True)
class LabelerConfig(Config):
    """Base of every labeler's config."""

    def stored_name(self, method: str) -> str:
        """The labels' name in the run (default: the method)."""
        return method


@dataclass
class Labels:
    """What a labeler returns when it has more to say than the table: `info` is stored in the
    labels' JSON next to the config (keys must not be 'method' or 'config')."""

    table: object  # pandas DataFrame: unit, rank, label, score (+ extras)
    info: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Labeler:
    name: str
    config: type
    label: Callable
    available: Callable | None = None
    report: Callable | None = None
    recorded: bool = True

    def can_label(self, run) -> bool:
        return self.available is None or bool(self.available(run))


_REGISTRY: dict[str, Labeler] = {}
_LOADED = False


def labeler(name: str, config: type, *, available: Callable | None = None,
            report: Callable | None = None, recorded: bool = True):
    """Register `label(run, config)` as describe method `name`. A second labeler of the same name
    is refused (re-running the same module, e.g. a reload, replaces its own entry).
    recorded=False: the labeler reads only files of its own in the directory (second-order: the
    lens's effects), so `run` may be a directory that holds no recording (then it has `.path` only)."""
    if not (isinstance(config, type) and issubclass(config, LabelerConfig)):
        raise TypeError(f"labeler {name}: config must be a frozen dataclass subclassing "
                        f"LabelerConfig")
    if not config.__dataclass_params__.frozen:
        raise TypeError(f"labeler {name}: {config.__name__} must be @dataclass(frozen=True)")

    def register(fn: Callable) -> Callable:
        old = _REGISTRY.get(name)
        if old is not None and (old.label.__module__, old.label.__qualname__) != \
                (fn.__module__, fn.__qualname__):
            raise ValueError(f"a labeler named '{name}' is already registered "
                             f"({old.label.__module__}.{old.label.__qualname__}): pick another name")
        config.owner = name
        _REGISTRY[name] = Labeler(name, config, fn, available, report, recorded)
        return fn

    return register


def unregister(name: str) -> None:
    """Remove a labeler (tests that register toy ones clean up with this)."""
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


def labelers() -> dict[str, Labeler]:
    """Every registered labeler by name (the built-in ones first)."""
    _load()
    return dict(_REGISTRY)


def get_labeler(name: str) -> Labeler:
    known = labelers()
    if name not in known:
        hint = near_matches(name, list(known))
        raise UserError(f"unknown describe method '{name}'"
                        + (f" (did you mean {', '.join(hint)}?)" if hint else "")
                        + f"; known methods: {', '.join(known)}")
    return known[name]
