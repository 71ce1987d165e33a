"""The reference implementation's way of computing second-order effects, kept as a slow baseline for
tests and benchmarks/second_order.py: one image at a time, and for every later block the full
(tokens, neurons, width) tensor of LayerNorm-linearised neuron writes, pushed through each head's
value and output weights, the CLS attention row, ln_post and the projection.

It computes the same quantity as `SecondOrderLens` (same centring and scale), by brute force.
"""

from __future__ import annotations

import torch

from .effects import SecondOrderLens


@torch.no_grad()
def naive_effects(lens: SecondOrderLens, pixels: torch.Tensor, neurons=None) -> torch.Tensor:
    """(B, n, D_out) effects of `neurons` (default all), image by image, head by head."""
    vit = lens.vit
    src = vit.blocks[lens.layer]
    w = src.w_fc2 if src.ls_2 is None else src.w_fc2 * src.ls_2[:, None]  # (D, N)
    if neurons is not None:
        w = w[:, torch.as_tensor(neurons, dtype=torch.long)]
    out = []
    for i in range(pixels.shape[0]):
        tr = vit.trace(pixels[i:i + 1], lens.layer)
        acts = tr.acts_BTN[0]
        if neurons is not None:
            acts = acts[:, torch.as_tensor(neurons, dtype=torch.long)]
        scale = lens.effect_scale(tr)[0]
        total = torch.zeros(w.shape[1], vit.out_dim, dtype=w.dtype, device=w.device)
        for l in lens.later:
            b = vit.blocks[l]
            write = acts[:, :, None] * w.T[None]  # (T, n, D): the neuron's residual write per token
            ln = (write - write.mean(-1, keepdim=True)) / tr.ln1_std[l][0][:, None, None] * b.ln_1.weight
            for h in range(b.n_heads):
                sl = slice(h * b.head_dim, (h + 1) * b.head_dim)
                v = ln @ b.w_v[sl].T  # (T, n, dh)
                z = torch.einsum("t,tnj->nj", tr.attn_cls[l][0, h], v)
                o = z @ b.w_o[:, sl].T  # (n, D)
                if b.ls_1 is not None:
                    o = o * b.ls_1
                o = (o - o.mean(-1, keepdim=True)) / tr.post_std[0] * vit.ln_post.weight
                total += o @ vit.proj
        out.append(total * scale)
    return torch.stack(out)
