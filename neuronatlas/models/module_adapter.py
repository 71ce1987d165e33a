"""Your own model: `path/to/file.py:factory`.

The file is imported and `factory()` called; it returns an `nn.Module`, a `(module, Preprocess)` pair,
or a ready `Target`. A factory that takes `weights` / `random_weights` parameters receives them.
A bare module gets ImageNet 224 preprocessing (resize 256, crop 224, ImageNet mean/std), and the
Target says so in its family (recorded in the run) and `extras["preprocess_assumed"]`, since nothing
in a bare module tells us better.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import sys
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from ..errors import UserError
from .family import BuildOptions, ModelFamily, model_family
from .weights import RANDOM_FIX
from .target import Preprocess, Target

IMAGENET_224 = Preprocess(size=224, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), resize=256,
                          interpolation="bilinear")


@dataclass(frozen=True)
class FileSpec:
    path: str
    """The Python file, as typed (`~` allowed)."""
    factory: str
    """The function in it that returns the model."""


@model_family
class File(ModelFamily):
    name = "file"
    grammar = "path/to/file.py:factory"
    example = "models/mine.py:build"

    def claims(self, spec: str) -> str | None:
        path, sep, _ = spec.rpartition(":")
        return spec if sep and path.endswith(".py") else None

    def parse(self, rest: str) -> FileSpec:
        path, _, func = rest.rpartition(":")
        if not func.isidentifier():
            raise UserError(f"'{func}' in model spec {rest} is not a Python function name: use "
                            f"path/to/file.py:factory")
        return FileSpec(path, func)

    def build(self, spec: FileSpec, how: BuildOptions) -> Target:
        return build(how.spec, spec.path, spec.factory, how.weights, how.random_weights)


def build(spec: str, path_str: str, func: str, weights: str | None = None,
          random_weights: bool = False) -> Target:
    path = Path(path_str).expanduser()
    if not path.is_file():
        raise UserError(f"no file {path} for model spec {spec}: give path/to/file.py:factory with an "
                        f"existing Python file")
    module = _import(path)
    factory = getattr(module, func, None)
    if not callable(factory):
        names = [n for n, v in vars(module).items() if callable(v) and not n.startswith("_")
                 and getattr(v, "__module__", None) == module.__name__]
        raise UserError(f"{path} has no function '{func}' (model spec {spec}); functions defined there: "
                        f"{', '.join(names) or '(none)'}")
    params = inspect.signature(factory).parameters
    kwargs = {k: v for k, v in (("weights", weights), ("random_weights", random_weights)) if k in params}
    if weights is not None and "weights" not in params:
        raise UserError(f"{spec}: the factory takes no `weights` parameter, so --weights cannot be "
                        f"used; load the weights inside the factory, {RANDOM_FIX}")
    made = factory(**kwargs)
    return _to_target(made, spec, weights, random_weights, reinit="random_weights" not in params)


def _to_target(made, spec: str, weights: str | None, random_weights: bool, reinit: bool) -> Target:
    if isinstance(made, Target):
        made.spec = spec  # the spec is what rebuilds it later
        if random_weights and reinit:
            reset_parameters(made.model)
            made.weights = "random"
        return made
    assumed = False
    if isinstance(made, tuple) and len(made) == 2 and isinstance(made[1], Preprocess):
        model, preprocess = made
    elif isinstance(made, nn.Module):
        model, preprocess, assumed = made, IMAGENET_224, True
    else:
        raise UserError(f"the factory of {spec} returned {type(made).__name__}: return an nn.Module, a "
                        f"(module, Preprocess) pair, or a Target")
    if not isinstance(model, nn.Module):
        raise UserError(f"the factory of {spec} returned a {type(model).__name__}, not an nn.Module")
    if random_weights and reinit:
        reset_parameters(model)
    source = "random" if random_weights else (weights or "factory")
    extras = {"preprocess_assumed": "ImageNet 224 (resize 256, crop 224, ImageNet mean/std)"} \
        if assumed else {}
    family = "module (preprocessing assumed: ImageNet 224)" if assumed else "module"
    return Target(spec=spec, model=model.eval(), preprocess=preprocess, forward=model, tokens=None,
                  weights=source, family=family, extras=extras)


def reset_parameters(model: nn.Module) -> None:
    """Re-draw every layer's parameters with its own init (the factory does not do random weights)."""
    for m in model.modules():
        if hasattr(m, "reset_parameters") and callable(m.reset_parameters):
            m.reset_parameters()


def _import(path: Path):
    """Import a file by path, under a name unique to the path (two model files may share a name)."""
    path = path.resolve()
    name = f"neuronatlas_user_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look the module up here
    sys.path.insert(0, str(path.parent))  # so the file can import its neighbours
    try:
        spec.loader.exec_module(module)
    except Exception:
        del sys.modules[name]
        raise
    finally:
        sys.path.remove(str(path.parent))
    return module
