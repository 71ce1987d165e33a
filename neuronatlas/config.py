"""Frozen option dataclasses shared by the extension points (labelers, metrics): one docstring per
field, a JSON round trip, and validation with one-line `UserError`s that name the field and the fix.

    @dataclass(frozen=True)
    class ToyConfig(Config):
        top: int = opt(5, "Labels kept per unit.")
        layers: tuple[str, ...] | None = opt(None, "Layers to label (default: all).")

    ToyConfig.from_options(top="3")      # -> ToyConfig(top=3): values are checked and converted
    ToyConfig.from_json(c.to_json()) == c

Field types understood: bool, int, float, str, Path, tuple[str, ...] (a comma-separated string is
split), dict (JSON), Literal[...] (the allowed values), unions with None, and Any (a spec string or
an object built from one, such as a scorer or a chat client: JSON keeps its spec or name, so only
string-valued configs round-trip exactly). The CLI builds its options from the same fields
(`neuronatlas/cli_options.py`): `flag` renames one (e.g. probe -> --data), `cli=False` keeps a field
out of the command line (objects that only Python can pass).
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from .errors import UserError, near_matches

__all__ = ["Config", "opt", "field_docs", "Literal", "Any"]


def opt(default=MISSING, doc: str = "", *, flag: str | None = None, cli: bool = True,
        factory=MISSING):
    """A config field with its docstring `doc` (the CLI's --help text). `flag`: the CLI option name
    when it is not --FIELD-NAME; `cli=False`: not on the command line."""
    if not doc:
        raise TypeError("every config field needs a docstring (opt(default, 'what it does'))")
    meta = {"doc": doc, "flag": flag, "cli": cli}
    if factory is not MISSING:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def field_docs(cls) -> dict[str, str]:
    """Field name -> docstring."""
    return {f.name: f.metadata.get("doc", "") for f in dataclasses.fields(cls)}


_HINTS: dict[type, dict] = {}


def hints(cls) -> dict[str, Any]:
    """The resolved type of every field (annotations are strings under `from __future__`)."""
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def type_members(tp) -> tuple:
    """The members of a union type (a plain type: itself)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return typing.get_args(tp)
    return (tp,)


def describe_type(tp) -> str:
    """How a value of type `tp` is written, for error messages and --help."""
    parts = []
    for m in type_members(tp):
        if m is type(None):
            continue
        origin = typing.get_origin(m)
        if m is bool:
            parts.append("true or false")
        elif m is int:
            parts.append("an integer")
        elif m is float:
            parts.append("a number")
        elif m is str or m is Path:
            parts.append("a string" if m is str else "a path")
        elif origin is Literal:
            parts.append("one of " + ", ".join(str(a) for a in typing.get_args(m)))
        elif origin is tuple:
            parts.append("a comma-separated list")
        elif m is dict or origin is dict:
            parts.append("a JSON object")
        elif m is Any:
            parts.append("a spec")
        else:
            parts.append(getattr(m, "__name__", str(m)))
    return " or ".join(parts) or "nothing"


class _Mismatch(Exception):
    pass


def _coerce_one(tp, value):
    """`value` as type `tp`, or _Mismatch. Strings convert (the CLI and JSON give strings)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if tp is type(None):
        if value is None:
            return None
        raise _Mismatch
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise _Mismatch
    if tp is int:
        if isinstance(value, bool):
            raise _Mismatch
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                raise _Mismatch from None
        raise _Mismatch
    if tp is float:
        if isinstance(value, bool):
            raise _Mismatch
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise _Mismatch from None
        raise _Mismatch
    if tp is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    if tp is Path:
        if isinstance(value, (str, Path)):
            return Path(value)
        raise _Mismatch
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise _Mismatch
    if origin is tuple:
        (item,) = typing.get_args(tp)[:1]
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        return tuple(_coerce(item, v) for v in value)
    if tp is dict or origin is dict:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise _Mismatch from None
        if isinstance(value, dict):
            return dict(value)
        raise _Mismatch
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise _Mismatch


def _coerce(tp, value):
    members = type_members(tp)
    if isinstance(value, str) and value.lower() == "none" and (type(None) in members or Any in members):
        return None  # the command line's way to say None
    # exact types first, so "3" stays a string for `str | int` and 3 stays an int
    for m in members:
        if typing.get_origin(m) is None and isinstance(m, type) and type(value) is m:
            return value
    for m in members:
        try:
            return _coerce_one(m, value)
        except _Mismatch:
            continue
    raise _Mismatch


def _jsonable(value):
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    for attr in ("spec", "name"):  # an object built from a spec: keep the spec
        v = getattr(value, attr, None)
        if isinstance(v, str):
            return v
    return type(value).__name__


@dataclass(frozen=True)
class Config:
    """Base of the frozen option classes. Subclasses: fields made with `opt`, and optionally
    `validate()` raising UserError for values that are the right type but wrong (e.g. top < 1).
    `owner` (set by the registry) names the labeler / metric in error messages."""

    owner: ClassVar[str] = ""

    def __post_init__(self):
        types_ = hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            try:
                object.__setattr__(self, f.name, _coerce(types_[f.name], value))
            except _Mismatch:
                raise UserError(f"{self._who()}: {f.name} must be {describe_type(types_[f.name])} "
                                f"(got {value!r}); {self._fix(f.name)}") from None
        self.validate()

    def validate(self) -> None:
        """Checks beyond the types; raise `self.error(field, problem)`."""

    # -- messages ---------------------------------------------------------------------------
    @classmethod
    def _who(cls) -> str:
        return cls.owner or cls.__name__

    @classmethod
    def flag(cls, name: str) -> str:
        f = {f.name: f for f in dataclasses.fields(cls)}[name]
        return f.metadata.get("flag") or "--" + name.replace("_", "-")

    @classmethod
    def _fix(cls, name: str) -> str:
        doc = field_docs(cls).get(name, "").rstrip(".")
        return f"{cls.flag(name)} ({name}= in Python): {doc}"

    def error(self, name: str, problem: str) -> UserError:
        """A one-line UserError about field `name`: '<owner>: <name> <problem>; <its docstring>'."""
        return UserError(f"{self._who()}: {name} {problem} (got {getattr(self, name)!r}); "
                         f"{self._fix(name)}")

    # -- construction and JSON --------------------------------------------------------------
    @classmethod
    def from_options(cls, **options):
        """A config from keyword options; a name that is no field is refused with the near ones."""
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in options if k not in names]
        if unknown:
            hint = near_matches(unknown[0], names)
            raise UserError(f"{cls._who()} does not take {', '.join(sorted(unknown))}"
                            + (f" (did you mean {', '.join(hint)}?)" if hint else "")
                            + f"; its options: {', '.join(names) or '(none)'}")
        return cls(**options)

    def to_json(self) -> dict:
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_json(cls, data: dict | str):
        if isinstance(data, str):
            data = json.loads(data)
        return cls.from_options(**data)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)
