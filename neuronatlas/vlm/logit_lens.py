"""Logit lens over a Llava model (Neo et al. 2024, arXiv 2410.07149; nostalgebraist's logit lens).

For every layer l (l = 0 the embedding output after the image features are merged in, l = 1..L the
output of decoder layer l) and every position p of the prompt, the residual h_l[p] is read through
the model's own head: logits = lm_head(norm(h_l[p])), probabilities = softmax(logits), top-k kept.

Departures from the reference (llava-interp, src/lvlm_lens.py), and why:
- residuals are taken by hooks on the decoder layers (the raw residual stream), and the final norm is
  applied exactly once. The reference normed HF's `hidden_states`, whose last entry is already normed,
  so its last layer was normed twice; here the last layer equals the model's own logits (tested).
- streamed: one layer x `chunk` positions at a time, top-k kept, so memory is chunk x vocab, never
  layers x positions x vocab.
- image-token count, grid and CLS are read from the config (VlmSubject), not 576 / 24.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from .subject import VlmSubject, language_parts


@dataclass(frozen=True)
class LensConfig:
    top_k: int = 5
    chunk: int = 256  # positions per unembedding step
    prompt: str | None = None  # None: the model's default (world-llava: caption; HF: "Describe...")
    batch_size: int = 4

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "LensConfig":
        return cls(**d)


def residuals(subject: VlmSubject, inputs: dict) -> tuple[list[torch.Tensor], torch.Tensor]:
    """([h_0 .. h_L] each [B, T, D] un-normed residuals, the model's output logits [B, T, V])."""
    parts = language_parts(subject.model)
    hs: list[torch.Tensor | None] = [None] * (len(parts.layers) + 1)

    def pre(_m, args, kwargs):
        hs[0] = (args[0] if args else kwargs["hidden_states"]).detach()

    def post_at(i):
        def post(_m, _a, out):
            hs[i + 1] = (out[0] if isinstance(out, tuple) else out).detach()
        return post

    handles = [parts.layers[0].register_forward_pre_hook(pre, with_kwargs=True)]
    handles += [layer.register_forward_hook(post_at(i)) for i, layer in enumerate(parts.layers)]
    try:
        with torch.no_grad():
            logits = subject.model(**inputs).logits
    finally:
        for h in handles:
            h.remove()
    return hs, logits  # type: ignore[return-value]


@torch.no_grad()
def lens_topk(subject: VlmSubject, hs: list[torch.Tensor], top_k: int, chunk: int = 256):
    """(probs [L+1, B, T, k], ids [L+1, B, T, k]): norm once, unembed, softmax, top-k per chunk."""
    parts = language_parts(subject.model)
    n_layers, (b, t, d) = len(hs), hs[0].shape
    probs = torch.empty(n_layers, b * t, top_k)
    ids = torch.empty(n_layers, b * t, top_k, dtype=torch.long)
    for l, h in enumerate(hs):
        flat = h.reshape(b * t, d)
        for s in range(0, b * t, chunk):
            logits = parts.lm_head(parts.norm(flat[s:s + chunk])).float()
            p, i = torch.softmax(logits, -1).topk(top_k, dim=-1)
            probs[l, s:s + chunk], ids[l, s:s + chunk] = p, i
    return probs.view(n_layers, b, t, top_k), ids.view(n_layers, b, t, top_k)
