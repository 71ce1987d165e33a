"""Describe units: labelers that give every unit ranked text labels, stored in the run directory.

    import neuronatlas as na
    from neuronatlas.describe import describe

    run = na.open_run("runs/resnet")
    df = describe(run, "clip-dissect", scorer="conse:mobilenet-v2", concepts="words20k")
    run.labels("clip-dissect")        # columns unit, method, rank, label, score (+ extras)

`METHODS` maps a method name to "module:function"; the function takes (run, **options) and returns
(labels table with columns unit, rank, label, score, config dict). `describe` adds the method column
and writes both with `run.write_labels` (rewriting a method replaces its labels).

clip-dissect with a similarity other than the default soft_wpmi is stored as method
`clip-dissect-SIMILARITY` (e.g. clip-dissect-wpmi), so several can sit side by side; vlm in grid
mode is stored as `vlm-grid`.
"""

from __future__ import annotations

import importlib

from ..errors import UserError, near_matches

METHODS: dict[str, str] = {
    "clip-dissect": "neuronatlas.describe.clip_dissect:describe_clip_dissect",
    "netdissect": "neuronatlas.describe.netdissect:describe_netdissect",
    "vlm": "neuronatlas.describe.vlm:describe_vlm",
    "second-order": "neuronatlas.describe.second_order:describe_second_order",
}


def methods_for(run) -> list[str]:
    """The methods that can label `run` (a Run or its path): every method, except second-order
    unless the run holds second-order effects (`neuronatlas lens second-order ... --out RUN`)."""
    from ..run import second_order_layers

    path = getattr(run, "path", run)
    return [m for m in METHODS if m != "second-order" or second_order_layers(path)]


def describe(run, method: str = "clip-dissect", name: str | None = None, **options):
    """Run labeler `method` on `run` (a Run or its path) and store its labels under `name`
    (default: the method, see above). Returns the labels table."""
    from ..run import LABEL_COLUMNS, Run, open_run, write_labels

    run = run if isinstance(run, Run) else open_run(run)
    if method not in METHODS:
        hint = near_matches(method, list(METHODS))
        raise UserError(f"unknown describe method '{method}'"
                        + (f" (did you mean {', '.join(hint)}?)" if hint else "")
                        + f"; known methods: {', '.join(METHODS)}")
    module, func = METHODS[method].split(":")
    df, config = getattr(importlib.import_module(module), func)(run, **options)
    if name is None:
        name = method
        sim = config.get("similarity")
        if method == "clip-dissect" and sim and sim != "soft_wpmi":
            name = f"{method}-{sim}"
        if method == "vlm" and config.get("mode") == "grid":
            name = "vlm-grid"
    df.insert(1, "method", name)
    df = df[list(LABEL_COLUMNS) + [c for c in df.columns if c not in LABEL_COLUMNS]]
    write_labels(run.path, name, df, {"method": method, **config})
    return df


__all__ = ["METHODS", "describe", "methods_for"]
