"""Token ablation in a Llava model (Neo et al. 2024, arXiv 2410.07149, section 4): replace the
language model's input embeddings at a set of image-token positions by the mean post-projector
image token (or zeros), then ask the model again.

Pieces (the experiment loop is ablation_run.py):
- `image_features`: the post-projector image tokens [B, n_image_tokens, D], through the model's own
  `get_image_features` with the config's feature layer and strategy.
- `MeanVector`: their mean streamed over a probe set (float64 sum + count, stored with its count).
- `ablated(subject, mask_BT, vector)`: a forward pre-hook on the language model that writes `vector`
  into `inputs_embeds[mask_BT]`. Every forward of the prompt re-applies it (answers are generated
  without a KV cache), which equals replacing the embeddings once at prefill.
- token sets in image-feature order k (k = patch + 1 with CLS kept): `object_tokens` (grid cells that
  overlap a mask, grown by `buffer` rounds of 8-neighbour dilation), `high_norm_tokens`
  (norm > mean + 2 std), `random_tokens` (seeded, same k), `integrated_gradients`.

Departures from the reference (llava-interp), and why:
- integrated gradients write the interpolation into the image positions only (the reference's
  `[start:end+1]` also overwrote the first text token, `end` being exclusive already); tested;
- random tokens are seeded (the reference's `random.sample` was not);
- grid, CLS and token count come from the config (the reference hard-coded 576 / 24).
"""

from __future__ import annotations

import contextlib
import hashlib
import random

import numpy as np
import torch

from .subject import VlmSubject


@torch.no_grad()
def image_features(subject: VlmSubject, pixels: torch.Tensor) -> torch.Tensor:
    """Post-projector image tokens [B, n_image_tokens, D] (what the language model receives)."""
    c = subject.config
    out = subject.model.model.get_image_features(
        pixel_values=pixels, vision_feature_layer=c.vision_feature_layer,
        vision_feature_select_strategy=c.vision_feature_select_strategy)
    feats = getattr(out, "pooler_output", out)
    feats = torch.stack(list(feats)) if isinstance(feats, (list, tuple)) else feats
    return feats.reshape(pixels.shape[0], subject.n_image_tokens, -1)


class MeanVector:
    """Mean of the post-projector image tokens over images x tokens, streamed (float64 sum)."""

    def __init__(self, dim: int):
        self.sum = np.zeros(dim, np.float64)
        self.count = 0

    def update(self, feats: torch.Tensor) -> None:
        f = feats.reshape(-1, feats.shape[-1]).double()
        self.sum += f.sum(0).numpy()
        self.count += f.shape[0]

    @property
    def mean(self) -> np.ndarray:
        return (self.sum / max(self.count, 1)).astype(np.float32)


def mean_vector_key(subject: VlmSubject, fingerprint: str, n: int) -> str:
    return hashlib.sha256(f"{subject.name}|{fingerprint}|{n}".encode()).hexdigest()[:16]


@contextlib.contextmanager
def ablated(subject: VlmSubject, mask_bt: torch.Tensor | None, vector: torch.Tensor | None):
    """While active, the language model's inputs_embeds[mask_bt] := vector (zeros if None).
    Rows of a batch may ablate different positions; a None mask ablates nothing."""
    lm = subject.model.model.language_model

    def pre(_m, args, kwargs):
        emb = kwargs.get("inputs_embeds")
        if emb is None or mask_bt is None:
            return None
        if emb.shape[:1] != mask_bt.shape[:1] or emb.shape[1] < mask_bt.shape[1]:
            # a silent no-op here would be the reference's kind of bug: say so instead
            raise ValueError(f"ablation mask {tuple(mask_bt.shape)} does not fit the language "
                             f"model's input {tuple(emb.shape[:2])}")
        m = torch.zeros(emb.shape[:2], dtype=torch.bool)
        m[:, :mask_bt.shape[1]] = mask_bt
        emb = emb.clone()
        emb[m] = 0.0 if vector is None else vector.to(emb.dtype)
        kwargs["inputs_embeds"] = emb
        return args, kwargs

    handle = lm.register_forward_pre_hook(pre, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def positions_mask(subject: VlmSubject, input_ids: torch.Tensor, tokens: list) -> torch.Tensor:
    """[B, T] bool: the sequence positions of each row's image-feature indices `tokens[b]`."""
    mask = torch.zeros(input_ids.shape, dtype=torch.bool)
    for b, pos in enumerate(subject.image_positions(input_ids)):
        ks = torch.as_tensor(sorted(tokens[b]), dtype=torch.long)
        if len(ks):
            mask[b, pos[ks]] = True
    return mask


# -- token sets (image-feature indices) -------------------------------------------------------------
def mask_cells(mask: np.ndarray, grid: int) -> np.ndarray:
    """[grid, grid] bool: cells that overlap the mask (IoU > 0), for a square mask of any size."""
    h, w = mask.shape
    ys = (np.arange(h) * grid) // h
    xs = (np.arange(w) * grid) // w
    cells = np.zeros((grid, grid), bool)
    yy, xx = np.nonzero(mask)
    cells[ys[yy], xs[xx]] = True
    return cells


def dilate(cells: np.ndarray, rounds: int) -> np.ndarray:
    """`rounds` of 8-neighbour dilation on the grid."""
    out = cells.copy()
    for _ in range(rounds):
        p = np.pad(out, 1)
        out = np.zeros_like(out)
        for dy in (0, 1, 2):
            for dx in (0, 1, 2):
                out |= p[dy:dy + cells.shape[0], dx:dx + cells.shape[1]]
    return out


def object_tokens(subject: VlmSubject, mask: np.ndarray, buffer: int = 0) -> list[int]:
    cells = dilate(mask_cells(mask, subject.grid), buffer)
    return [int(p) + int(subject.has_cls) for p in np.flatnonzero(cells.reshape(-1))]


def high_norm_tokens(feats_ND: torch.Tensor, n_std: float = 2.0) -> list[int]:
    """Image tokens whose post-projector L2 norm exceeds mean + n_std * std (over this image)."""
    norms = feats_ND.norm(dim=-1)
    return torch.nonzero(norms > norms.mean() + n_std * norms.std()).flatten().tolist()


def random_tokens(n_tokens: int, k: int, seed) -> list[int]:
    return sorted(random.Random(f"random-tokens/{seed}").sample(range(n_tokens), min(k, n_tokens)))


def integrated_gradients(subject: VlmSubject, inputs: dict, target_id: int, mean: torch.Tensor,
                         steps: int = 50, chunk: int = 10, absolute: bool = True) -> torch.Tensor:
    """|IG| per image token [n_image_tokens] for one prompt (batch of 1): baseline = the image tokens
    mean-ablated, path = straight line in embedding space at the image positions only, target = the
    logit of `target_id` at the last position; Riemann midpoints, `steps` of them, summed |.| over
    the hidden dimension (signed sums with absolute=False: they add up to f(clean) - f(baseline))."""
    model = subject.model
    ids, attn = inputs["input_ids"], inputs["attention_mask"]
    assert ids.shape[0] == 1, "one prompt at a time"
    captured = {}

    def grab(_m, args, kwargs):
        captured["emb"] = kwargs["inputs_embeds"].detach()

    h = model.model.language_model.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with torch.no_grad():
            model(**inputs)
    finally:
        h.remove()
    clean = captured["emb"][0]  # [T, D]
    pos = subject.image_positions(ids)[0]
    base = clean.clone()
    base[pos] = mean.to(clean.dtype)
    delta = (clean - base)[pos]  # [n_img, D]; zero elsewhere by construction
    last = int(attn[0].sum()) - 1
    grads = torch.zeros_like(delta)
    alphas = (torch.arange(steps, dtype=clean.dtype) + 0.5) / steps
    lm = model.model.language_model
    for s in range(0, steps, chunk):
        a = alphas[s:s + chunk]
        x = base.expand(len(a), -1, -1).clone()
        img = (base[pos][None] + a[:, None, None] * delta[None]).requires_grad_(True)
        x[:, pos] = img  # only the image positions move along the path
        out = lm(inputs_embeds=x, attention_mask=attn.expand(len(a), -1))
        logits = model.lm_head(out.last_hidden_state[:, last])
        (g,) = torch.autograd.grad(logits[:, target_id].sum(), img)
        grads += g.sum(0).detach()
    ig = (grads / steps) * delta
    return ig.abs().sum(-1) if absolute else ig.sum(-1)
