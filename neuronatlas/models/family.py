"""The model-family contract: one module per family (`timm:`, `hf:`, `zoo:`, your own), each owning its
spec grammar and building the `Target`.

    @model_family
    class Timm(ModelFamily):
        name = "timm"
        grammar = "timm:NAME[.TAG]"
        example = "timm:vit_tiny_patch16_224"

        def parse(self, rest: str) -> TimmSpec: ...          # syntax only; UserError naming the fix
        def build(self, spec: TimmSpec, how: BuildOptions) -> Target: ...

`parse` checks the text after `NAME:` (no imports of the model library, no file or network access);
`build` does the rest (unknown architectures, missing weights: still one-line UserErrors). The
registry (`registry.py`) finds the family of a spec and calls these two. A name registered twice is
refused: two families cannot both own `timm:`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..errors import UserError
from .target import Target

FAMILIES: dict[str, "ModelFamily"] = {}  # every registered family by name (and alias)


@dataclass(frozen=True)
class BuildOptions:
    """How to build a parsed spec, shared by every family."""

    spec: str
    """The spec as the user typed it (stored in the run, so the run can rebuild its model)."""
    weights: str | None = None
    """A local checkpoint file or directory (already checked to exist), or None: the library's cache."""
    random_weights: bool = False
    """The real architecture with random weights (the caller seeds torch)."""
    device: str | None = None
    """Where the model will run: a hint (HF keeps half-precision checkpoints as they are on a GPU)."""


class ModelFamily:
    """Subclass, set the class attributes, implement `parse` and `build`, decorate with `@model_family`."""

    name: ClassVar[str] = ""
    """The prefix of its specs, lower case (`timm` in `timm:resnet50`)."""
    aliases: ClassVar[tuple[str, ...]] = ()
    """Other prefixes that mean the same family (`open-clip` for `open_clip`)."""
    grammar: ClassVar[str] = ""
    """Its specs' form as shown in errors and help, e.g. `open_clip:MODEL[/TAG]`."""
    example: ClassVar[str] = ""
    """One spec that works, for error messages."""

    def claims(self, spec: str) -> str | None:
        """The part of `spec` this family parses, or None when the spec is not of this family.
        Default: `NAME:REST` with NAME (case-insensitive, `-` = `_`) this family's name or an alias."""
        prefix, sep, rest = spec.partition(":")
        prefix = prefix.strip().lower().replace("-", "_")
        names = {self.name, *(a.replace("-", "_") for a in self.aliases)}
        return rest.strip() if sep and prefix in names else None

    def parse(self, rest: str):
        """`rest` (what `claims` returned) -> this family's frozen spec dataclass; UserError if bad."""
        raise NotImplementedError

    def build(self, spec, how: BuildOptions) -> Target:
        """The Target of a parsed spec (eval mode, on the CPU)."""
        raise NotImplementedError


PROMPT_MARK = "?prompt="


def split_prompt(rest: str, family: str) -> tuple[str, str | None]:
    """'world-llava?prompt=what colour is it?' -> ('world-llava', 'what colour is it?'). The grammar
    of a VLM prompt in the families that build VLMs (zoo, hf): everything after the first
    `?prompt=` is the prompt, as typed (quote it in the shell)."""
    head, mark, prompt = rest.partition(PROMPT_MARK)
    if not mark:
        return rest, None
    if not prompt.strip():
        raise UserError(f"empty prompt in '{family}:{rest}': write the text after ?prompt=, e.g. "
                        f"zoo:world-llava?prompt=what colour is the circle?")
    return head, prompt


def with_prompt(target: Target, prompt: str | None) -> Target:
    """The VLM `target` recorded with `prompt` (through its language model), or `target` itself when
    there is no prompt; a prompt for a model that takes images only is a UserError."""
    if prompt is None:
        return target
    if target.prompted is None:
        raise UserError(f"{target.spec} takes images only, so it has no use for ?prompt=: a prompt "
                        f"needs a VLM (zoo:world-llava, or an hf: LLaVA checkpoint with its tokenizer)")
    return target.prompted(prompt)


def model_family(cls: type[ModelFamily]) -> type[ModelFamily]:
    """Class decorator: register one instance of the family. A name or alias that another family
    already owns is refused (ValueError names both)."""
    family = cls()
    if not family.name or not family.grammar:
        raise ValueError(f"model family {cls.__qualname__} needs a name and a grammar")
    for key in (family.name, *family.aliases):
        key = key.lower().replace("-", "_")
        other = FAMILIES.get(key)
        # the same class again (its module re-imported) is no conflict
        if other is not None and _where(type(other)) != _where(cls):
            raise ValueError(f"model family '{key}' is registered twice: by {_where(type(other))} "
                             f"and {_where(cls)}; pick another name or unregister('{key}') first")
    for key in (family.name, *family.aliases):
        FAMILIES[key.lower().replace("-", "_")] = family
    return cls


def _where(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def unregister(name: str) -> None:
    """Remove a family and its aliases (tests; a plugin replacing a built-in must call this first)."""
    family = FAMILIES.get(name)
    for key in [k for k, v in FAMILIES.items() if v is family]:
        del FAMILIES[key]
