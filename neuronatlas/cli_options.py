"""Command-line options generated from a config's fields (neuronatlas.config.Config): one option per
field, named --FIELD-NAME (or the field's `flag`), its --help text the field's docstring, its value
checked by the config itself. Used by `neuronatlas describe --method M` (M's labeler config).

An option left unset is not passed at all, so the config's default applies. Values land in
`ctx.meta[key]` (the options are not parameters of the command function).
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import MISSING

from .config import Literal, hints, type_members
from .errors import UserError


def _default(f):
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return None


def _show(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return ",".join(map(str, value)) or "none"
    if isinstance(value, dict):
        return json.dumps(value) if value else "none"
    return "none" if value is None else str(value)


def _store(key: str):
    def callback(ctx, param, value):
        if value is not None:
            ctx.meta.setdefault(key, {})[param.name] = getattr(value, "value", value)  # enums
        return value

    return callback


def switch_store(key: str, names):
    """Like _store, but the --NAME/--no-NAME switches land in ctx.meta[key + '_switches']."""
    plain, switch = _store(key), _store(key + "_switches")

    def callback(ctx, param, value):
        return (switch if param.name in names else plain)(ctx, param, value)

    return callback


def config_params(cls, key: str, skip=()) -> list:
    """typer options for every CLI field of config class `cls` (not those named in `skip`), built
    by typer itself from a generated signature, then pointed at `ctx.meta[key]`."""
    return union_params([cls], key, skip)


def union_params(classes, key: str, skip=(), switches: dict | None = None) -> list:
    """Options for the fields of several config classes, one per field name (the first class
    that has it gives its docstring); `switches` {name: help} adds --NAME/--no-NAME flags."""
    import inspect
    from enum import Enum
    from typing import Optional

    import typer

    params, seen = [], set(skip)
    for name, text in (switches or {}).items():
        flag = "--" + name.replace("_", "-")
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY,
                                        annotation=Optional[bool],
                                        default=typer.Option(None, f"{flag}/--no-{flag[2:]}",
                                                             help=text, show_default=False)))
        seen.add(name)
    for cls, f in [(c, f) for c in classes for f in dataclasses.fields(c)]:
        if not f.metadata.get("cli", True) or f.name in seen:
            continue
        seen.add(f.name)
        tp = hints(cls)[f.name]
        members = [m for m in type_members(tp) if m is not type(None)]
        flag = cls.flag(f.name)
        doc, default = f.metadata["doc"], _default(f)
        text = doc if "default" in doc or default in (None, {}, ()) else \
            f"{doc} (default: {_show(default)})"
        if members == [bool]:
            ann, decls = Optional[bool], [f"{flag}/--no-{flag[2:]}"]
        elif len(members) == 1 and typing.get_origin(members[0]) is Literal:
            choices = [str(a) for a in typing.get_args(members[0])]
            ann, decls = Optional[Enum(f"{f.name}_choices", {c: c for c in choices})], [flag]
        elif members in ([int], [float]):
            ann, decls = Optional[members[0]], [flag]
        else:  # strings, paths, lists (comma-separated), JSON objects, specs: the config converts
            ann, decls = Optional[str], [flag]
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, annotation=ann,
                                        default=typer.Option(None, *decls, help=text,
                                                             show_default=False)))

    def fields_only(**kwargs):
        pass

    fields_only.__signature__ = inspect.Signature(params)
    sub = typer.Typer(add_completion=False)
    sub.command()(fields_only)
    out = []
    for p in typer.main.get_command(sub).params:
        if p.name in ("help",) or not getattr(p, "opts", None):
            continue
        p.expose_value, p.generated = False, True
        p.callback = switch_store(key, set(switches or ()))
        out.append(p)
    return out


def option_names(params) -> set[str]:
    return {o for p in params for o in (*getattr(p, "opts", ()), *getattr(p, "secondary_opts", ()))
            if o.startswith("-")}


def given_options(args: list[str]) -> list[str]:
    """The --long option names in a raw argument list (up to a bare --)."""
    out = []
    for a in args:
        if a == "--":
            break
        if a.startswith("--"):
            out.append(a.split("=", 1)[0])
    return out


def value_of(args: list[str], flag: str, default: str) -> str:
    """The value given to `flag` in a raw argument list (--flag V or --flag=V), else default."""
    for i, a in enumerate(args):
        if a == "--":
            break
        if a == flag and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return default


def refuse_foreign(args: list[str], own: set[str], others: dict[str, set[str]], what: str,
                   where: str) -> None:
    """A one-line UserError for options that belong to other methods (`others`: name -> flags)
    rather than click's bare 'No such option'."""
    foreign = [a for a in given_options(args) if a not in own and any(a in o for o in others.values())]
    if not foreign:
        return
    owners = sorted({m for m, flags in others.items() if any(a in flags for a in foreign)})
    raise UserError(f"{', '.join(foreign)} only apply to {' or '.join('--method ' + m for m in owners)}"
                    f", not {what}; `{where} --help` lists the options {what} takes")
