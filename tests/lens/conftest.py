"""Real CLIP ViTs for the lens tests: a random-weight open_clip ViT-B-32 and the committed world-clip."""

import pytest
import torch


@pytest.fixture(scope="session")
def b32_target():
    from neuronatlas.models import load_target

    torch.manual_seed(0)
    return load_target("open_clip:ViT-B-32", random_weights=True)


@pytest.fixture(scope="session")
def world_clip_target():
    from neuronatlas.models import load_target

    return load_target("zoo:world-clip")


@pytest.fixture(scope="session")
def frozen_intervention():
    return _frozen_intervention


@torch.no_grad()
def _frozen_intervention(vit, pixels, layer, neurons, scale):
    """Ground truth by brute force: re-run the later blocks' heads with every attention pattern and
    LayerNorm std frozen at the clean pass, with the write of `neurons` (of block `layer`) removed
    from the value inputs; the changed CLS head outputs go straight to ln_post (the second-order
    path). Returns the embedding change (clean - ablated) * scale, per image: (B, D_out)."""
    tr = vit.trace(pixels, layer, keep_residual=True)
    src = vit.blocks[layer]
    w = src.w_fc2[:, neurons] if src.ls_2 is None else (src.w_fc2 * src.ls_2[:, None])[:, neurons]
    write = tr.acts_BTN[..., neurons] @ w.T  # (B, T, D): what these neurons add to the residual
    cls = vit.cls_index
    delta = torch.zeros_like(tr.residual[vit.n_layers][:, cls])
    for l in range(layer + 1, vit.n_layers):
        b = vit.blocks[l]
        x, sd, probs = tr.residual[l], tr.ln1_std[l], tr.attn[l]
        clean = b.head_outputs(probs, b.values(b.ln_1(x, sd)))[:, :, cls].sum(1)
        ablated = b.head_outputs(probs, b.values(b.ln_1(x - write, sd)))[:, :, cls].sum(1)
        delta += ablated - clean
    final = tr.residual[vit.n_layers][:, cls]
    e_clean = vit.ln_post(final, tr.post_std) @ vit.proj
    e_abl = vit.ln_post(final + delta, tr.post_std) @ vit.proj
    return (e_clean - e_abl) * scale[:, None]
