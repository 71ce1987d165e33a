"""Unit bases: what a "unit" of a recorded layer is.

By default a unit is a neuron / channel of the hook output (the identity basis). A layer can instead
be recorded in the basis of an encoder applied at the hook output, position by position (every token
or every pixel of the map) BEFORE pooling: the encoder's features become the layer's units, with ids
`LAYER:INDEX@NAME`. Everything downstream (top/bottom-k, statistics, labels, evaluation, the atlas's
tiles and heatmaps) then works on features exactly as on neurons.

The encoder contract (an SAE only has to supply this):

    name: str                      a short name, part of every unit id (letters, digits, - _ .)
    n_features: int                F, the number of units it makes
    d_in: int                      D, the width it reads (the layer's units)
    encode(acts_NSD) -> acts_NSF   features of every position: (..., D) -> (..., F), float32
    to_json() -> dict              kind + everything that is not an array (stored in run.json)
    state() -> {name: ndarray}     its arrays (stored in RUN/basis/NAME.npz, digest in the run key)
    Cls.from_state(config, state)  the same encoder back (registered by kind: @encoder_kind)

`LinearEncoder` (features = act(W x + b), act none or relu) is the one built in; an SAE family
registers its own kind with @encoder_kind.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, replace
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from ..errors import UserError
from ..models.layout import Layout
from ..models.target import HookPoint
from ..run import split_unit_id, unit_id  # noqa: F401  (the unit id grammar lives in run/)
from .pooling import pool, pool_output

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
ENCODER_KINDS: dict[str, type] = {}


@runtime_checkable
class Encoder(Protocol):
    name: str
    n_features: int
    d_in: int

    def encode(self, acts: torch.Tensor) -> torch.Tensor: ...

    def to_json(self) -> dict: ...

    def state(self) -> dict[str, np.ndarray]: ...


def encoder_kind(kind: str):
    """Class decorator: register an encoder class under `kind` (its to_json()["kind"])."""
    def register(cls):
        if kind in ENCODER_KINDS and ENCODER_KINDS[kind] is not cls:
            raise ValueError(f"encoder kind {kind!r} is already registered by {ENCODER_KINDS[kind]}")
        ENCODER_KINDS[kind] = cls
        return cls
    return register


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise UserError(f"basis name {name!r} is not usable in unit ids: use letters, digits, '-', "
                        f"'_' or '.' (e.g. sae)")
    return name


@encoder_kind("linear")
class LinearEncoder:
    """features = act(x @ weight.T + bias); weight (F, D), bias (F,), act "none" or "relu"."""

    def __init__(self, weight, bias=None, name: str = "linear", activation: str = "none"):
        self.weight = torch.as_tensor(np.asarray(weight, dtype=np.float32))
        if self.weight.ndim != 2:
            raise UserError(f"a linear encoder's weight must be (features, width), got shape "
                            f"{tuple(self.weight.shape)}")
        f = self.weight.shape[0]
        self.bias = torch.zeros(f) if bias is None else torch.as_tensor(np.asarray(bias, np.float32))
        if self.bias.shape != (f,):
            raise UserError(f"a linear encoder's bias must have {f} entries, got {tuple(self.bias.shape)}")
        if activation not in ("none", "relu"):
            raise UserError(f"unknown activation {activation!r}: use none or relu")
        self.name, self.activation = check_name(name), activation
        self.n_features, self.d_in = f, self.weight.shape[1]

    def encode(self, acts: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(acts.device)
        out = acts.float() @ w.T + self.bias.to(acts.device)
        return out.clamp_min(0) if self.activation == "relu" else out

    def to_json(self) -> dict:
        return {"kind": "linear", "name": self.name, "n_features": self.n_features,
                "d_in": self.d_in, "activation": self.activation}

    def state(self) -> dict[str, np.ndarray]:
        return {"weight": self.weight.numpy(), "bias": self.bias.numpy()}

    @classmethod
    def from_state(cls, config: dict, state: dict[str, np.ndarray]) -> "LinearEncoder":
        return cls(state["weight"], state["bias"], config["name"], config.get("activation", "none"))


def encoder_from_state(config: dict, state: dict[str, np.ndarray]) -> Encoder:
    kind = config.get("kind")
    if kind not in ENCODER_KINDS:
        raise UserError(f"this run's basis uses an encoder of kind {kind!r}, which is not "
                        f"registered here (known: {', '.join(sorted(ENCODER_KINDS))}); import the "
                        f"package that provides it")
    return ENCODER_KINDS[kind].from_state(config, state)


def state_digest(state: dict[str, np.ndarray]) -> str:
    """Content digest of an encoder's arrays (in the run key: another encoder is another run)."""
    h = hashlib.blake2b(digest_size=16)
    for name in sorted(state):
        a = np.ascontiguousarray(state[name])
        h.update(name.encode() + str(a.dtype).encode() + str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


# -- a recorded layer seen in its basis ----------------------------------------------------------------
@dataclass(frozen=True)
class UnitView:
    """A hook point seen in a unit basis: what `record` and the replays (tiles, heatmaps, dissection)
    compute per position. `canonical(raw)` is (B, units, positions) in the basis."""

    point: HookPoint
    encoder: Encoder | None = None

    @property
    def name(self) -> str:
        return self.point.name

    @property
    def basis(self) -> str | None:
        return None if self.encoder is None else self.encoder.name

    @property
    def n_units(self) -> int:
        return self.point.n_units if self.encoder is None else self.encoder.n_features

    @property
    def layout(self) -> Layout:
        """The positions of the point's layout with the basis's unit count (for pool / spatial_map
        on `canonical` outputs)."""
        if self.encoder is None:
            return self.point.layout
        return replace(self.point.layout, n_units=self.encoder.n_features, seq_first=False,
                       channels_last=False)

    def canonical(self, raw: torch.Tensor) -> torch.Tensor:
        acts = self.point.layout.canonical(raw)  # (B, D, S)
        if self.encoder is None:
            return acts
        return self.encoder.encode(acts.transpose(1, 2)).transpose(1, 2)  # (B, F, S)

    def pooled(self, raw: torch.Tensor, mode: str) -> torch.Tensor:
        """(B, units) pooled in the basis; the identity keeps the recorder's fast path."""
        if self.encoder is None:
            return pool_output(raw, self.point.layout, mode)
        return pool(self.canonical(raw), self.layout, mode)


def check_encoder(encoder, point: HookPoint) -> None:
    if not isinstance(encoder, Encoder):
        raise UserError(f"the basis for {point.name} is not an encoder (it needs name, n_features, "
                        f"d_in, encode, to_json and state): got {type(encoder).__name__}")
    check_name(encoder.name)
    if encoder.d_in != point.n_units:
        raise UserError(f"the encoder {encoder.name!r} reads {encoder.d_in} units but {point.name} "
                        f"has {point.n_units}: it was made for another layer")
