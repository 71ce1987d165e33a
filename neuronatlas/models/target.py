"""A Target: a vision model, its preprocessing, and its named hook points.

Adapters (one module per model family) build a Target; everything downstream (recorder, exemplars,
describers) only talks to this class. Hook points are the model's named submodules whose output is a
tensor; their layouts are found by one dry forward pass on a dummy batch.
"""

from __future__ import annotations

import fnmatch
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch
from torch import nn

from ..errors import UserError, near_matches
from .inputs import ImageBatch, ImageTextBatch, kind_of
from .layout import Layout, TokenInfo, infer_layout

DEFAULT_POOLING = {"conv": "mean", "tokens": "patch_mean", "vector": "none"}


@dataclass(frozen=True)
class Preprocess:
    """Image preprocessing read from the model library's own config."""

    size: int  # square input side in pixels
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize: int | None = None  # shorter side before center crop; None = resize to `size` directly
    interpolation: str = "bicubic"  # "bilinear" | "bicubic" | "nearest"

    def to_json(self) -> dict:
        return asdict(self)

    def geometry(self):
        """The resize + crop, without normalisation: gives the exact pixels the model sees."""
        from torchvision.transforms import v2 as T

        interp = {"bilinear": T.InterpolationMode.BILINEAR, "bicubic": T.InterpolationMode.BICUBIC,
                  "nearest": T.InterpolationMode.NEAREST}[self.interpolation]
        if self.resize is None:
            return T.Compose([T.Resize((self.size, self.size), interpolation=interp, antialias=True)])
        return T.Compose([T.Resize(self.resize, interpolation=interp, antialias=True),
                          T.CenterCrop(self.size)])

    def transform(self):
        """PIL image -> normalised float tensor (3, size, size)."""
        from torchvision.transforms import v2 as T

        return T.Compose([
            T.ToImage(), self.geometry(), T.ToDtype(torch.float32, scale=True),
            T.Normalize(list(self.mean), list(self.std)),
        ])

    def __call__(self, image) -> torch.Tensor:
        return self.transform()(image.convert("RGB"))


@dataclass(frozen=True)
class HookPoint:
    name: str
    shape: tuple[int, ...]  # output shape without the batch axis
    layout: Layout
    calls: int = 1  # times the module runs per forward; recording keeps the first call

    @property
    def n_units(self) -> int:
        return self.layout.n_units


@dataclass
class Target:
    """A model ready to record. Built by `neuronatlas.models.load_target(spec)`."""

    spec: str
    model: nn.Module
    preprocess: Preprocess
    forward: Callable[[torch.Tensor], object]  # pixels (B,3,H,W) on device -> anything
    tokens: TokenInfo | None = None  # for ViTs: CLS / registers / patch grid
    weights: str = "random"  # where the weights came from ("random", a path, or a package name)
    family: str = "module"  # adapter name
    class_names: list[str] | None = None  # for classifiers with a known label set
    extras: dict = field(default_factory=dict)  # adapter-specific handles (e.g. a CLIP text encoder)
    # What `run` takes: ImageBatch (pixels, probe indices), or ImageTextBatch (+ a prompt) for a VLM
    # recorded past its vision tower. `forward_batch(batch)`, when set, replaces `forward(pixels)`
    # in `run` (a prompt to tokenize, or the probe's annotations to read, as synthetic units do).
    inputs: type[ImageBatch] = ImageBatch
    forward_batch: Callable[[ImageBatch], object] | None = None
    prompt: str | None = None  # ImageTextBatch targets: the prompt every image is recorded with
    # VLMs: prompted(prompt) is the same model taking ImageTextBatch with that prompt (`?prompt=`)
    prompted: Callable[[str], "Target"] | None = None
    truth: object | None = None  # a DataFrame of its units' true labels, for targets that know them
    _hook_points: dict[str, HookPoint] | None = field(default=None, repr=False)

    def __post_init__(self):
        # an in-place activation overwrites the output of the layer before it, so a hook on that
        # layer would see post-activation values: make them out-of-place (same results)
        for m in self.model.modules():
            if getattr(m, "inplace", None) is True:
                m.inplace = False

    @property
    def device(self) -> torch.device:
        try:
            return next(self.model.parameters()).device
        except StopIteration:
            return torch.device("cpu")

    def to(self, device) -> "Target":
        self.model.to(device)
        return self

    def make_batch(self, pixels: torch.Tensor, indices=None, probe=None) -> ImageBatch:
        """The typed batch this target takes, for preprocessed `pixels` (probe rows `indices`)."""
        if self.inputs is ImageTextBatch:
            return ImageTextBatch(pixels, indices, probe, prompt=self.prompt or "")
        return self.inputs(pixels, indices, probe)

    def run(self, batch: ImageBatch):
        """One forward pass over a batch of the type `self.inputs` (see `make_batch`)."""
        if not isinstance(batch, self.inputs):
            raise UserError(f"{self.spec} takes {kind_of(self.inputs)} ({self.inputs.__name__}), "
                            f"not {type(batch).__name__}: build the batch with target.make_batch")
        if self.forward_batch is None:
            return self.forward(batch.pixels)
        return self.forward_batch(batch)

    # -- hook points ------------------------------------------------------------------------------
    @property
    def hook_points(self) -> dict[str, HookPoint]:
        if self._hook_points is None:
            self._hook_points = self._discover()
        return self._hook_points

    def _discover(self) -> dict[str, HookPoint]:
        batch = 2
        shapes: dict[str, tuple[int, ...]] = {}
        calls: dict[str, int] = {}
        handles = []
        for name, module in self.model.named_modules():
            if not name:
                continue

            def hook(_m, inp, out, name=name):
                out = out[0] if isinstance(out, (tuple, list)) and out else out
                if not isinstance(out, torch.Tensor):
                    return
                # an output that *is* the input (Identity, eval-mode Dropout / DropPath) only aliases
                # the previous hook point: listing it would double every layer
                if any(out is x for x in inp):
                    return
                calls[name] = calls.get(name, 0) + 1
                if name not in shapes:  # a module called twice (shared ReLU): keep its first call
                    shapes[name] = tuple(out.shape)

            handles.append(module.register_forward_hook(hook))
        try:
            x = torch.zeros(batch, 3, self.preprocess.size, self.preprocess.size, device=self.device)
            with torch.no_grad():
                # an image target is discovered from pixels alone (synthetic units would ask for
                # annotations a dummy batch has not got); a VLM's prompt reaches its language model
                if self.inputs is ImageBatch or self.forward_batch is None:
                    self.forward(x)
                else:
                    self.forward_batch(self.make_batch(x))
        finally:
            for h in handles:
                h.remove()
        points = {}
        for name, shape in shapes.items():
            layout = infer_layout(shape, batch, self.tokens)
            if layout is not None:
                points[name] = HookPoint(name, shape[1:], layout, calls[name])
        return points

    def select(self, patterns: list[str] | str) -> list[HookPoint]:
        """Hook points whose names match any glob pattern, in model order. Unknown -> UserError."""
        if isinstance(patterns, str):
            patterns = [p for p in patterns.split(",") if p.strip()]
        names = list(self.hook_points)
        chosen: list[str] = []
        for pat in patterns:
            pat = pat.strip()
            hits = [n for n in names if fnmatch.fnmatchcase(n, pat)]
            if not hits:
                hint = near_matches(pat, names)
                raise UserError(
                    f"unknown layer '{pat}' in {self.spec}; "
                    + (f"did you mean: {', '.join(hint)}? " if hint else "")
                    + f"run `neuronatlas layers {self.spec}` to list all {len(names)} hook points")
            chosen += [h for h in hits if h not in chosen]
        order = {n: i for i, n in enumerate(names)}
        return [self.hook_points[n] for n in sorted(chosen, key=order.__getitem__)]

    def default_pooling(self, point: HookPoint) -> str:
        return DEFAULT_POOLING[point.layout.kind]

    def describe(self) -> dict:
        """What a run records about its model."""
        out = {"spec": self.spec, "family": self.family, "weights": self.weights,
               "preprocess": self.preprocess.to_json(),
               "tokens": asdict(self.tokens) if self.tokens else None}
        if self.inputs is not ImageBatch:  # image-only runs keep the run.json they always had
            out["inputs"] = kind_of(self.inputs)
            out["prompt"] = self.prompt
        return out
