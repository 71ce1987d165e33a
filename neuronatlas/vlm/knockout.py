"""Attention knockout (Neo et al. 2024, section 5; Geva et al. 2023): in chosen decoder layers,
destination positions may not attend to source positions.

`knocked_out(subject, block_BTT, layers)` puts a forward pre-hook on each chosen layer's attention
module that edits the `attention_mask` it receives, whatever its form:
- None (SDPA without padding: HF then relies on is_causal): a boolean causal mask is built (and
  the padding-free case stays causal), blocked edges set False;
- boolean (SDPA with padding; True = attend): blocked edges set False;
- float, additive (eager attention, always in transformers 5.x): blocked edges set to the dtype's
  minimum, so exp() underflows to exactly 0.
The reference (llava-interp, BlockAttentionHook) wrote False into whatever it received: on an
additive float mask False is 0.0, "attend", so its knockout silently did nothing with eager
attention or padding (tests show both: ours blocks, the reference's does not).
A position never loses attention to itself (a row with nothing to attend to would be NaN).
Attention implementations other than eager and sdpa (flash, flex) are refused: their masks are
not tensors this hook can edit.

Layer windows: `windows(n_layers)` splits the layers into early / mid / late thirds (contiguous,
every layer in one of them: the reference's 0-9 / 11-20 / 21-31 left layer 10 out), plus the
overlapping early-mid and mid-late and all; `parse_windows("early=0-9,late=21-31")` for others.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from ..errors import UserError
from .subject import VlmSubject, language_parts


def edit_mask(mask, block: torch.Tensor, q_len: int, k_len: int, dtype) -> torch.Tensor:
    """The attention mask with `block` [B, Tq0, Tk0] (True = cut the edge) applied to its top-left
    corner (a longer sequence during generation keeps its new rows and columns as they were)."""
    b = block.shape[0]
    full = torch.zeros(b, q_len, k_len, dtype=torch.bool)
    tq, tk = min(q_len, block.shape[1]), min(k_len, block.shape[2])
    full[:, :tq, :tk] = block[:, :tq, :tk]
    if q_len == k_len:
        full &= ~torch.eye(q_len, dtype=torch.bool)[None]
    if mask is None:
        causal = torch.ones(q_len, k_len, dtype=torch.bool).tril(k_len - q_len)
        return (causal[None] & ~full)[:, None]
    m = mask.clone()
    f = full[:, None].expand(-1, m.shape[1], -1, -1).to(m.device)
    if m.dtype == torch.bool:
        m[..., :q_len, :k_len][f] = False
    else:
        m[..., :q_len, :k_len][f] = torch.finfo(m.dtype).min
    return m


@contextlib.contextmanager
def knocked_out(subject: VlmSubject, block_BTT: torch.Tensor, layers):
    """While active, in each of `layers`, query i of row b may not attend to key j where
    block_BTT[b, i, j] is True."""
    impl = getattr(subject.config.text_config, "_attn_implementation", None) or "sdpa"
    if impl not in ("eager", "sdpa"):
        raise UserError(f"attention knockout supports eager and sdpa attention, not {impl!r}: load "
                        "the model with attn_implementation='sdpa' (or 'eager')")
    parts = language_parts(subject.model)
    n = len(parts.layers)
    bad = [l for l in layers if not 0 <= l < n]
    if bad:
        raise UserError(f"layer {bad[0]} is out of range: the model has decoder layers 0..{n - 1}")

    def pre(_m, args, kwargs):
        h = kwargs.get("hidden_states", args[0] if args else None)
        q_len = h.shape[1]
        mask = kwargs.get("attention_mask")
        k_len = mask.shape[-1] if mask is not None else q_len
        kwargs["attention_mask"] = edit_mask(mask, block_BTT, q_len, k_len, h.dtype)
        return args, kwargs

    handles = [parts.layers[l].self_attn.register_forward_pre_hook(pre, with_kwargs=True)
               for l in sorted(set(layers))]
    try:
        yield
    finally:
        for hd in handles:
            hd.remove()


def block_matrix(seq_len: int, sources: list[list[int]], destinations: list[list[int]]) -> torch.Tensor:
    """[B, T, T] bool: block[b, i, j] for i in destinations[b], j in sources[b]."""
    b = len(sources)
    block = torch.zeros(b, seq_len, seq_len, dtype=torch.bool)
    for r in range(b):
        if len(sources[r]) and len(destinations[r]):
            i = torch.as_tensor(destinations[r])[:, None]
            j = torch.as_tensor(sources[r])[None, :]
            block[r, i, j] = True
    return block


def windows(n_layers: int) -> dict[str, list[int]]:
    """early / mid / late thirds covering every layer, early-mid / mid-late overlaps, all."""
    thirds = [list(map(int, a)) for a in np.array_split(np.arange(n_layers), 3)]
    early, mid, late = (t or thirds[0] for t in thirds)
    out = {"early": early, "mid": mid, "late": late,
           "early-mid": sorted(set(early) | set(mid)), "mid-late": sorted(set(mid) | set(late)),
           "all": list(range(n_layers))}
    return out


def parse_windows(text: str, n_layers: int) -> dict[str, list[int]]:
    """'early=0-9,mid=10-20,x=3' -> {name: layers}; ranges inclusive."""
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, eq, spec = part.partition("=")
        try:
            lo, _, hi = spec.partition("-")
            layers = list(range(int(lo), int(hi or lo) + 1))
        except ValueError:
            layers = []
        if not eq or not name or not layers:
            raise UserError(f"bad layer window {part!r}: write NAME=LO-HI, e.g. early=0-9")
        if layers[-1] >= n_layers:
            raise UserError(f"window {part!r} goes past the last decoder layer ({n_layers - 1})")
        out[name] = layers
    return out
