"""Model specs: find the family that owns the string a user typed, let it parse and build the Target.

The families are modules that register themselves with `@model_family` (family.py): the built-in
ones below, imported on first use, and any installed package's modules listed under the entry-point
group `neuronatlas.model_families` (a plugin adds `nnsight:` or `mylab:` without touching this file).
"""

from __future__ import annotations

import importlib
from pathlib import Path

from ..errors import UserError, near_matches
from .family import FAMILIES, BuildOptions, ModelFamily
from .target import Target

# the file family first: `dir/timm:x.py:build` is a path, whatever its first colon says
BUILTIN = ("module_adapter", "torchvision_adapter", "timm_adapter", "open_clip_adapter", "hf_adapter",
           "zoo")
ENTRY_POINT_GROUP = "neuronatlas.model_families"
_loaded = False


def load_families() -> dict[str, ModelFamily]:
    """Every registered family, by name and alias (imports the built-in and plugin modules once)."""
    global _loaded
    if not _loaded:
        for name in BUILTIN:
            importlib.import_module(f".{name}", __package__)
        for ep in _entry_points():
            try:
                importlib.import_module(ep.value.partition(":")[0])
            except ImportError as e:  # a broken plugin must not take the built-in families down
                raise UserError(f"the model-family plugin '{ep.name}' ({ep.value}) does not import "
                                f"({e}): reinstall it or uninstall the package that declares it") from e
        _loaded = True
    return FAMILIES


def _entry_points():
    from importlib.metadata import entry_points

    return list(entry_points(group=ENTRY_POINT_GROUP))


def families() -> list[ModelFamily]:
    """Each family once: the built-in ones in BUILTIN order (the file family, which claims specs by
    their shape rather than a prefix, first), then plugins in registration order."""
    out: list[ModelFamily] = []
    for f in load_families().values():
        if f not in out:
            out.append(f)
    order = {f"{__package__}.{m}": i for i, m in enumerate(BUILTIN)}
    return sorted(out, key=lambda f: order.get(type(f).__module__, len(BUILTIN)))


def forms() -> str:
    """The grammar of every family, for errors and help texts (prefix families first)."""
    fams = families()
    grammars = [f.grammar for f in fams[1:]] + [fams[0].grammar]
    return ", ".join(grammars[:-1]) + (", or " if len(grammars) > 1 else "") + grammars[-1]


def parse_spec(spec: str) -> tuple[ModelFamily, object]:
    """'timm:resnet50' -> (the timm family, TimmSpec('resnet50')). UserError for an unknown family
    (with the known ones) or a malformed spec (with the family's grammar)."""
    spec = spec.strip()
    for family in families():
        rest = family.claims(spec)
        if rest is not None:
            return family, family.parse(rest)
    prefix, sep, _ = spec.partition(":")
    known = sorted({f.name for f in families()})
    hint = near_matches(prefix.lower().replace("-", "_"), known) if sep else []
    what = f"unknown model family '{prefix}'" if sep else f"unknown model spec '{spec}'"
    raise UserError(f"{what}" + (f" (did you mean {', '.join(hint)}?)" if hint else "")
                    + f": use one of {forms()}")


def build(spec: str, weights: str | None = None, random_weights: bool = False,
          device: str | None = None) -> Target:
    """Build the Target of `spec` on the CPU, in eval mode. `device` is a hint (HF loads half
    precision checkpoints as they are when bound for a GPU)."""
    family, parsed = parse_spec(spec)
    if weights is not None and not Path(weights).expanduser().exists():
        raise UserError(f"weights '{weights}' for {spec} do not exist: pass --weights with an existing "
                        f"file or directory, or leave it out to use the library's cache")
    weights = str(Path(weights).expanduser()) if weights else None
    target = family.build(parsed, BuildOptions(spec.strip(), weights, random_weights, device))
    target.model.eval()
    return target
