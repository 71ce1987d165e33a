"""Second-order effects of MLP neurons in a CLIP ViT (Gandelsman et al., "Interpreting the second-order
effects of neurons in CLIP"): what neuron n of block `layer` adds to the image embedding through the
attention heads of every later block, with each LayerNorm linearised at the token's recorded std.

Neuron n writes act_n(t) * w_n into the residual at token t (w_n = fc2 column n, times the block's
layer scale). Head h of a later block l' reads it through ln_1 (frozen std sigma_l'(t): the exact
linear map g1 * C x / sigma, C = mean-centering), its value/out weights and its CLS attention row,
and writes to the CLS token, which ln_post (frozen std sigma_post) and the projection map to the
embedding. The effect is linear in the activation, so it factorises:

    effect[b, n] = sum_{l', h} coef[b, n, (l', h)] * u[(l', h), n]
    coef[b, n, (l', h)] = scale_b / sigma_post_b * sum_t attn_b[l', h, CLS, t] / sigma_l'_b(t) * act_bn(t)
    u[(l', h), n] = proj^T diag(g_post) C  ls_1^l' W_O^h W_V^h  diag(g_1^l') C w_n      (D_out,)

`u` ("head vectors", K x N x D_out with K = later blocks x heads) depends only on the weights and is
computed once; a batch then costs one (B, K, T) x (B, T, N) contraction plus (B, N, K) x (K, N, D_out).
No per-image, per-head (T, N, D) tensor is ever formed (the reference formed one per head, batch 1).

Differences from the reference code (prior-art section 3), on purpose:
- centering: the reference splits the recorded mean over K = (1+2l')N residual components
  (x - mu/K); we centre the neuron's own write (C w_n). Both sum to the same total over all
  components, but only C w_n is the change of the embedding when the neuron's write is removed with
  the std frozen (the LayerNorm mean is linear in its input, so freezing it is not needed).
- bias shares (b_fc2/N, b_V/K, b_O/(K H), beta/K) are neuron-independent constants; they are not
  part of a neuron's effect here (they cancel in centred effects, PCs and mean-ablations anyway).
- scale: "norm100" multiplies effects by 100 / |embedding| per image, as the reference does;
  "none" keeps the raw embedding units.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import UserError
from .vit import ClipViT, Trace

SCALES = ("norm100", "none")


@dataclass
class Coefficients:
    """A batch's second-order effects in factored form: effect = coef @ head vectors.

    coef_BNK   (B, N, K) per image, neuron and later head (l', h); scale and 1/sigma_post included
    embedding  (B, D_out) the image embedding as the model computes it (raw units)
    scale      (B,) the factor applied to effects (100/|embedding| or 1)
    """

    coef_BNK: torch.Tensor
    embedding: torch.Tensor
    scale: torch.Tensor

    @property
    def scaled_embedding(self) -> torch.Tensor:
        """The embedding in the units of the effects."""
        return self.embedding * self.scale[:, None]


class SecondOrderLens:
    """The second-order lens of one MLP block of a CLIP ViT.

        lens = SecondOrderLens(ClipViT.from_target(target), layer=9)
        co = lens.coefficients(pixels)          # Coefficients, (B, N, K)
        eff = lens.effects(co, neurons=[0, 5])   # (B, 2, D_out)
        maps = lens.token_maps(pixels, direction)  # (B, N, T): per-token effect . direction
    """

    def __init__(self, vit: ClipViT, layer: int | str, scale: str = "norm100"):
        if scale not in SCALES:
            raise UserError(f"unknown effect scale {scale!r}: use one of {', '.join(SCALES)}")
        self.vit, self.layer, self.scale = vit, vit.layer_index(layer), scale
        self.later = list(range(self.layer + 1, vit.n_layers))
        self.heads = [(l, h) for l in self.later for h in range(vit.blocks[l].n_heads)]
        self._u: torch.Tensor | None = None

    # -- facts ----------------------------------------------------------------------------------
    @property
    def unit_layer(self) -> str:
        """Hook-point name of the neurons (unit ids are `unit_layer:INDEX`)."""
        return self.vit.unit_layer(self.layer)

    @property
    def n_neurons(self) -> int:
        return self.vit.blocks[self.layer].w_fc2.shape[1]

    @property
    def n_heads(self) -> int:
        """K: later blocks x heads, the last axis of the coefficients."""
        return len(self.heads)

    @property
    def out_dim(self) -> int:
        return self.vit.out_dim

    # -- weights-only part ----------------------------------------------------------------------
    @property
    def head_vectors(self) -> torch.Tensor:
        """u (K, N, D_out): the embedding change per unit of coefficient, for each head and neuron."""
        if self._u is None:
            self._u = self._head_vectors()
        return self._u

    @torch.no_grad()
    def _head_vectors(self) -> torch.Tensor:
        vit = self.vit
        src = vit.blocks[self.layer]
        w = src.w_fc2 if src.ls_2 is None else src.w_fc2 * src.ls_2[:, None]  # (D, N)
        w = w - w.mean(0, keepdim=True)  # C w_n
        m = vit.proj.T * vit.ln_post.weight[None, :]  # proj^T diag(g_post)   (D_out, D)
        post = m - m.mean(1, keepdim=True)  # ... C (C is symmetric)
        out = []
        for l in self.later:
            b = vit.blocks[l]
            H, dh = b.n_heads, b.head_dim
            values = (b.w_v @ (b.ln_1.weight[:, None] * w)).view(H, dh, -1)  # W_V^h diag(g1) C w
            w_o = b.w_o if b.ls_1 is None else b.w_o * b.ls_1[:, None]
            q = torch.einsum("ed,dhj->hej", post, w_o.view(w_o.shape[0], H, dh))  # (H, D_out, dh)
            out.append((q @ values).transpose(1, 2))  # (H, N, D_out)
        return torch.cat(out).contiguous()

    # -- per batch ------------------------------------------------------------------------------
    def trace(self, pixels: torch.Tensor) -> Trace:
        return self.vit.trace(pixels, self.layer)

    def head_weights(self, trace: Trace) -> torch.Tensor:
        """(B, K, T): attn[l', h, CLS, t] / sigma_l'(t), heads in `self.heads` order."""
        return torch.cat([trace.attn_cls[l] / trace.ln1_std[l][:, None, :] for l in self.later], 1)

    def effect_scale(self, trace: Trace) -> torch.Tensor:
        """(B,) the per-image factor of the effects: scale / sigma_post is in the coefficients."""
        if self.scale == "none":
            return torch.ones_like(trace.post_std)
        return 100.0 / trace.embedding.norm(dim=-1)

    @torch.no_grad()
    def coefficients(self, pixels_or_trace) -> Coefficients:
        tr = pixels_or_trace if isinstance(pixels_or_trace, Trace) else self.trace(pixels_or_trace)
        s = self.effect_scale(tr)
        coef = torch.einsum("bkt,btn->bnk", self.head_weights(tr), tr.acts_BTN)
        coef = coef * (s / tr.post_std)[:, None, None]
        return Coefficients(coef, tr.embedding, s)

    @torch.no_grad()
    def effects(self, coefficients: Coefficients | torch.Tensor, neurons=None) -> torch.Tensor:
        """(B, n, D_out) second-order effects of `neurons` (default all), in the lens's scale."""
        coef = coefficients.coef_BNK if isinstance(coefficients, Coefficients) else coefficients
        u = self.head_vectors.to(coef.dtype)
        if neurons is not None:
            neurons = torch.as_tensor(neurons, dtype=torch.long, device=coef.device)
            coef, u = coef[:, neurons], u[:, neurons]
        # one (B, K) x (K, D) product per neuron
        return torch.bmm(coef.transpose(0, 1), u.transpose(0, 1)).transpose(0, 1)

    @torch.no_grad()
    def token_maps(self, pixels_or_trace, direction: torch.Tensor, neurons=None) -> torch.Tensor:
        """(B, n, T) per-token second-order contributions projected on `direction` ((D_out,) or one
        per image (B, D_out)); summed over tokens they give effect . direction. Token order is the
        model's (CLS first, then the patch grid row by row)."""
        tr = pixels_or_trace if isinstance(pixels_or_trace, Trace) else self.trace(pixels_or_trace)
        u = self.head_vectors
        acts = tr.acts_BTN
        if neurons is not None:
            neurons = torch.as_tensor(neurons, dtype=torch.long, device=acts.device)
            u, acts = u[:, neurons], acts[..., neurons]
        d = direction.to(u.device, u.dtype)
        if d.dim() == 1:
            ud = torch.einsum("knd,d->kn", u, d)[None].expand(acts.shape[0], -1, -1)
        elif d.dim() == 2 and d.shape[0] == acts.shape[0]:
            ud = torch.einsum("knd,bd->bkn", u, d)
        else:
            raise UserError(f"direction must have shape ({u.shape[-1]},) or (batch, {u.shape[-1]}), "
                            f"got {tuple(d.shape)}")
        w = self.head_weights(tr)  # (B, K, T)
        s = self.effect_scale(tr) / tr.post_std
        return torch.einsum("bkt,bkn->bnt", w, ud) * acts.transpose(1, 2) * s[:, None, None]

    @torch.no_grad()
    def effects_per_head(self, pixels_or_trace, neurons) -> torch.Tensor:
        """(B, n, K, D_out): the effect of each neuron through each later head separately."""
        co = self.coefficients(pixels_or_trace)
        neurons = torch.as_tensor(neurons, dtype=torch.long, device=co.coef_BNK.device)
        u = self.head_vectors[:, neurons].to(co.coef_BNK.dtype)  # (K, n, D)
        return co.coef_BNK[:, neurons, :, None] * u.transpose(0, 1)[None]
