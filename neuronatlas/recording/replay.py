"""Replay a recorded run: rebuild its model and reopen its probe set exactly as they were recorded
(exemplar tiles, describers and evaluations re-run the model on a run's images through here)."""

from __future__ import annotations

from pathlib import Path

import torch

from ..data import open_probe
from ..data.probe import ProbeSet
from ..errors import UserError
from ..models.family import with_prompt
from ..models.target import Target


def target_for_run(run, target: Target | None = None) -> Target:
    """The run's model, rebuilt from run.json (random weights with the recorded seed); `target`
    (an in-memory model from Python) is used as it is."""
    if target is not None:
        return target
    from ..models import load_target

    key = run.meta["key"]["model"]
    if key["spec"].startswith("hf:<"):
        raise UserError(f"{run.path} was recorded from an in-memory model: pass target= from Python")
    if key["weights"] == "random":
        torch.manual_seed(key["seed"] or 0)
        target = load_target(key["spec"], random_weights=True)
    else:
        weights = key["weights"] if Path(str(key["weights"])).exists() else None
        target = load_target(key["spec"], weights=weights)
    # a VLM recorded with a prompt its spec does not carry (a Target built in Python): apply it
    prompt = key.get("prompt")
    if prompt is not None and target.prompt != prompt:
        target = with_prompt(target, prompt)
    return target


def probe_for_run(run, probe=None) -> ProbeSet:
    """The run's probe set (or `probe`, e.g. moved data), checked against the recorded fingerprint."""
    probe = open_probe(probe if probe is not None else run.meta["probe"]["spec"])
    want = run.meta["key"]["probe"]["fingerprint"]
    if probe.fingerprint() != want:
        raise UserError(f"the probe set {probe.spec} has changed since {run.path} was recorded "
                        f"(fingerprint {probe.fingerprint()} vs {want}); re-record the run or pass "
                        f"the original data")
    return probe


def views_for_run(run, target: Target, layers: list[str]):
    """The run's `layers` of `target` in the unit basis they were recorded in (recording/basis.py):
    re-running them gives the recorded units (features for a basis layer, neurons otherwise)."""
    from .. import run as rundir
    from .basis import UnitView, encoder_from_state

    points = target.select(list(layers))
    views = []
    for p in points:
        basis = (run.layers.get(p.name) or {}).get("basis")
        encoder = encoder_from_state(*rundir.read_basis(run.path, p.name)) if basis else None
        views.append(UnitView(p, encoder))
    return views
