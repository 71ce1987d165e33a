"""A uniform view of a CLIP image tower (open_clip `VisionTransformer` or transformers CLIP), so the
lens is written once: per block ln_1, the attention's q/k/v/out weights and heads, ln_2, the MLP
(fc1, activation, fc2), optional layer scales; then ln_post and the projection.

    vit = ClipViT.from_target(load_target("open_clip:ViT-B-32", random_weights=True))
    vit.forward(pixels)               # == model.encode_image(pixels) (checked in the tests)
    trace = vit.trace(pixels, layer=9)  # the MLP activations of block 9 + what later layers saw

Weights are the model's own tensors (no copies): `model.double()` then `from_model` gives a float64
view. Linear weights keep the nn.Linear convention (out x in); `proj` is (D, D_out), used as x @ proj.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError, near_matches


@dataclass(frozen=True)
class LayerNormView:
    weight: torch.Tensor  # (D,)
    bias: torch.Tensor  # (D,)
    eps: float

    def std(self, x: torch.Tensor) -> torch.Tensor:
        """The statistic the lens freezes: sqrt(var + eps) over the last axis, (...,)."""
        return torch.sqrt(x.var(-1, unbiased=False) + self.eps)

    def __call__(self, x: torch.Tensor, std: torch.Tensor | None = None) -> torch.Tensor:
        """LayerNorm; with `std` given (frozen), the exact linear map x -> g*(x - mean x)/std + b."""
        if std is None:
            return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)
        return (x - x.mean(-1, keepdim=True)) / std[..., None] * self.weight + self.bias


@dataclass(frozen=True)
class BlockView:
    """One residual block: x += ls_1 * attn(ln_1(x)); x += ls_2 * mlp(ln_2(x))."""

    ln_1: LayerNormView
    n_heads: int
    w_q: torch.Tensor  # (D, D) out x in
    b_q: torch.Tensor
    w_k: torch.Tensor
    b_k: torch.Tensor
    w_v: torch.Tensor
    b_v: torch.Tensor
    w_o: torch.Tensor  # (D, D): columns h*dh:(h+1)*dh belong to head h
    b_o: torch.Tensor
    ln_2: LayerNormView
    w_fc1: torch.Tensor  # (M, D)
    b_fc1: torch.Tensor
    act: Callable[[torch.Tensor], torch.Tensor]
    w_fc2: torch.Tensor  # (D, M): column n is what neuron n writes per unit of activation
    b_fc2: torch.Tensor
    ls_1: torch.Tensor | None = None  # layer scale (D,) or None
    ls_2: torch.Tensor | None = None
    mlp_name: str = ""  # hook-point name of the post-activation (the neurons' unit-id layer)

    @property
    def head_dim(self) -> int:
        return self.w_q.shape[0] // self.n_heads

    def attention(self, x: torch.Tensor, ln_std: torch.Tensor | None = None, need_probs: bool = True):
        """(attention output written to the residual (B,T,D), probabilities (B,H,T,T) or None);
        `x` is the block input. Output includes ls_1."""
        h = self.ln_1(x, ln_std)
        B, T, D = h.shape
        qkv = F.linear(h, torch.cat([self.w_q, self.w_k, self.w_v]), torch.cat([self.b_q, self.b_k, self.b_v]))
        q, k, v = (t.view(B, T, self.n_heads, -1).transpose(1, 2) for t in qkv.chunk(3, -1))
        if need_probs:
            probs = torch.softmax(q @ k.transpose(-1, -2) * self.head_dim ** -0.5, dim=-1)
            z = probs @ v
        else:  # the fused kernel, when nobody looks at the pattern
            probs, z = None, F.scaled_dot_product_attention(q, k, v)
        out = F.linear(z.transpose(1, 2).reshape(B, T, D), self.w_o, self.b_o)
        return (out * self.ls_1 if self.ls_1 is not None else out), probs

    def attention_probs(self, h: torch.Tensor) -> torch.Tensor:
        B, T, _ = h.shape
        q = (h @ self.w_q.T + self.b_q).view(B, T, self.n_heads, -1).transpose(1, 2)
        k = (h @ self.w_k.T + self.b_k).view(B, T, self.n_heads, -1).transpose(1, 2)
        return torch.softmax(q @ k.transpose(-1, -2) * self.head_dim ** -0.5, dim=-1)

    def values(self, h: torch.Tensor) -> torch.Tensor:
        B, T, _ = h.shape
        return (h @ self.w_v.T + self.b_v).view(B, T, self.n_heads, -1).transpose(1, 2)

    def head_outputs(self, probs: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Per-head residual writes (B, H, T, D) (without the out bias), ls_1 applied."""
        z = probs @ v  # (B, H, T, dh)
        w = self.w_o.view(self.w_o.shape[0], self.n_heads, self.head_dim)  # (D, H, dh)
        out = torch.einsum("bhtj,dhj->bhtd", z, w)
        return out * self.ls_1 if self.ls_1 is not None else out

    def _scaled(self, b: torch.Tensor, which: int) -> torch.Tensor:
        ls = self.ls_1 if which == 1 else self.ls_2
        return b * ls if ls is not None else b

    def mlp_acts(self, x: torch.Tensor) -> torch.Tensor:
        """Post-activation neuron values (B, T, M); `x` is the residual after this block's attention."""
        return self.act(F.linear(self.ln_2(x), self.w_fc1, self.b_fc1))

    def mlp_out(self, acts: torch.Tensor) -> torch.Tensor:
        return self._scaled(F.linear(acts, self.w_fc2, self.b_fc2), 2)


@dataclass
class Trace:
    """What one forward pass recorded for the lens of MLP layer `layer`.

    acts_BTN      post-activation values of every neuron of `layer` at every token
    attn_cls      {l': (B, H, T)} attention of the CLS query over tokens, for every later block l'
    ln1_std       {l': (B, T)} the token's std at ln_1 of every later block l'
    post_std      (B,) std of the CLS token at ln_post
    embedding     (B, D_out) the image embedding (== the library's encode_image)
    residual      {l: (B, T, D)} block inputs, only with keep_residual=True
    """

    layer: int
    acts_BTN: torch.Tensor
    attn_cls: dict[int, torch.Tensor]
    ln1_std: dict[int, torch.Tensor]
    post_std: torch.Tensor
    embedding: torch.Tensor
    residual: dict[int, torch.Tensor] | None = None
    attn: dict[int, torch.Tensor] | None = None  # full (B,H,T,T), only with keep_residual=True


class ClipViT:
    """The image tower of a CLIP model, as uniform weight views plus a hand-written forward."""

    def __init__(self, blocks: list[BlockView], ln_post: LayerNormView, proj: torch.Tensor,
                 embed: Callable[[torch.Tensor], torch.Tensor], family: str, cls_index: int = 0):
        self.blocks, self.ln_post, self.proj = blocks, ln_post, proj
        self.embed = embed  # pixels -> residual input of block 0 (patches + CLS + pos + ln_pre)
        self.family, self.cls_index = family, cls_index

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def from_target(cls, target) -> "ClipViT":
        """A ClipViT for a Target of an open_clip or transformers CLIP ViT; UserError otherwise."""
        return cls.from_model(target.model, spec=getattr(target, "spec", "the model"))

    @classmethod
    def from_model(cls, model: nn.Module, spec: str = "the model") -> "ClipViT":
        names = {id(m): n for n, m in model.named_modules()}
        visual = getattr(model, "visual", None)
        if visual is None and hasattr(model, "transformer") and hasattr(model, "class_embedding"):
            visual = model  # a bare open_clip VisionTransformer
        if visual is not None:
            return _from_open_clip(visual, names, spec)
        vision = getattr(model, "vision_model", None)
        if vision is None and hasattr(model, "encoder") and hasattr(model, "post_layernorm"):
            vision = model
        if vision is not None and hasattr(vision, "encoder") and hasattr(vision, "post_layernorm"):
            return _from_hf(model, vision, names, spec)
        raise UserError(f"{spec} is not a CLIP vision transformer (an open_clip ViT or a transformers "
                        f"CLIP model): the second-order lens needs attention blocks, ln_post and a "
                        f"projection, e.g. open_clip:ViT-B-32 or zoo:world-clip")

    # -- shape facts ----------------------------------------------------------------------------
    @property
    def n_layers(self) -> int:
        return len(self.blocks)

    @property
    def width(self) -> int:
        return self.proj.shape[0]

    @property
    def out_dim(self) -> int:
        return self.proj.shape[1]

    @property
    def n_neurons(self) -> int:
        return self.blocks[0].w_fc1.shape[0]

    @property
    def dtype(self) -> torch.dtype:
        return self.proj.dtype

    @property
    def device(self) -> torch.device:
        return self.proj.device

    def unit_layer(self, layer: int) -> str:
        """The hook-point name whose units are block `layer`'s neurons (unit ids `NAME:INDEX`)."""
        return self.blocks[layer].mlp_name

    def layer_index(self, layer: int | str) -> int:
        """Block index from an int, a digit string or a hook name of that block's MLP (fc1 / act /
        fc2 / mlp); UserError with near matches otherwise, or for the last block."""
        names = [b.mlp_name for b in self.blocks]
        n = self.n_layers
        if isinstance(layer, str) and layer.strip().lstrip("-").isdigit():
            layer = int(layer)
        if isinstance(layer, int):
            if not -n <= layer < n:
                raise UserError(f"layer {layer} is out of range: the model has {n} blocks (0..{n - 1}); "
                                f"second-order effects need a later block, so use 0..{n - 2}")
            idx = layer % n
        else:
            idx = _match_block(layer, names)
            if idx is None:
                hint = near_matches(layer, names)
                raise UserError(f"unknown MLP layer '{layer}'; "
                                + (f"did you mean: {', '.join(hint)}? " if hint else "")
                                + f"give a block index 0..{n - 2} or a name like {names[0]}")
        if idx == n - 1:
            raise UserError(f"layer {idx} is the last block: its neurons have no later attention "
                            f"heads, so no second-order effect; use 0..{n - 2}")
        return idx

    # -- forward --------------------------------------------------------------------------------
    @torch.no_grad()
    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.embed(pixels.to(self.device, self.dtype))
        for b in self.blocks:
            x = x + b.attention(x, need_probs=False)[0]
            x = x + b.mlp_out(b.mlp_acts(x))
        return self.ln_post(x[:, self.cls_index]) @ self.proj

    @torch.no_grad()
    def trace(self, pixels: torch.Tensor, layer: int, keep_residual: bool = False) -> Trace:
        """One forward pass, recording what the lens of MLP block `layer` needs."""
        x = self.embed(pixels.to(self.device, self.dtype))
        attn_cls, stds, residual, attn = {}, {}, {}, {}
        acts = None
        for i, b in enumerate(self.blocks):
            if i > layer:
                stds[i] = b.ln_1.std(x)
            if keep_residual:
                residual[i] = x
            out, probs = b.attention(x, need_probs=i > layer)
            if i > layer:
                attn_cls[i] = probs[:, :, self.cls_index]
                if keep_residual:
                    attn[i] = probs
            x = x + out
            a = b.mlp_acts(x)
            if i == layer:
                acts = a
            x = x + b.mlp_out(a)
        cls_tok = x[:, self.cls_index]
        if keep_residual:
            residual[self.n_layers] = x
        post_std = self.ln_post.std(cls_tok)
        emb = self.ln_post(cls_tok) @ self.proj
        return Trace(layer, acts, attn_cls, stds, post_std, emb,
                     residual if keep_residual else None, attn if keep_residual else None)


_MLP_PARTS = ("c_fc", "gelu", "c_proj", "fc1", "activation_fn", "fc2")  # open_clip, transformers


def _match_block(name: str, mlp_names: list[str]) -> int | None:
    """The block whose MLP (or one of its fc / activation modules) `name` is."""
    for i, full in enumerate(mlp_names):
        stem = full.rsplit(".", 1)[0]  # ...mlp
        if name in (full, stem) or name in (f"{stem}.{p}" for p in _MLP_PARTS):
            return i
    return None


def _ln(m: nn.Module) -> LayerNormView:
    if not isinstance(m, nn.LayerNorm):
        raise UserError(f"expected a LayerNorm, found {type(m).__name__}: the lens linearises "
                        f"LayerNorms only")
    return LayerNormView(m.weight, m.bias, float(m.eps))


def _from_open_clip(visual: nn.Module, names: dict, spec: str) -> ClipViT:
    from open_clip.transformer import ResidualAttentionBlock, VisionTransformer

    if not isinstance(visual, VisionTransformer):
        raise UserError(f"{spec} has an image tower of type {type(visual).__name__}, not a ViT: the "
                        f"second-order lens needs a CLIP vision transformer (e.g. open_clip:ViT-B-32)")
    if visual.attn_pool is not None or visual.pool_type != "tok" or visual.proj is None:
        raise UserError(f"{spec} pools its image embedding with {visual.pool_type!r} / an attention "
                        f"pooler: the lens supports CLS-token pooling followed by a projection only")
    blocks = []
    for blk in visual.transformer.resblocks:
        if not isinstance(blk, ResidualAttentionBlock) or not blk.attn.batch_first:
            raise UserError(f"{spec} uses {type(blk).__name__} blocks; the lens supports open_clip's "
                            f"ResidualAttentionBlock (batch first)")
        a = blk.attn
        wq, wk, wv = a.in_proj_weight.chunk(3)
        bq, bk, bv = a.in_proj_bias.chunk(3)
        blocks.append(BlockView(
            ln_1=_ln(blk.ln_1), n_heads=a.num_heads, w_q=wq, b_q=bq, w_k=wk, b_k=bk, w_v=wv, b_v=bv,
            w_o=a.out_proj.weight, b_o=a.out_proj.bias, ln_2=_ln(blk.ln_2),
            w_fc1=blk.mlp.c_fc.weight, b_fc1=blk.mlp.c_fc.bias, act=blk.mlp.gelu,
            w_fc2=blk.mlp.c_proj.weight, b_fc2=blk.mlp.c_proj.bias,
            ls_1=_layer_scale(blk.ls_1), ls_2=_layer_scale(blk.ls_2),
            mlp_name=names.get(id(blk.mlp.gelu), "")))
    if visual.final_ln_after_pool:
        pass  # CLS pooling: LayerNorm before or after pooling is the same map on the CLS token

    def embed(pixels):
        return visual._embeds(pixels)

    return ClipViT(blocks, _ln(visual.ln_post), visual.proj, embed, "open_clip")


def _layer_scale(m: nn.Module) -> torch.Tensor | None:
    return getattr(m, "gamma", None) if not isinstance(m, nn.Identity) else None


def _from_hf(model: nn.Module, vision: nn.Module, names: dict, spec: str) -> ClipViT:
    blocks = []
    for layer in vision.encoder.layers:
        at = layer.self_attn
        if not all(hasattr(at, p) for p in ("q_proj", "k_proj", "v_proj", "out_proj")):
            raise UserError(f"{spec}: attention of type {type(at).__name__} is not CLIP's; the lens "
                            f"supports CLIP vision transformers")
        blocks.append(BlockView(
            ln_1=_ln(layer.layer_norm1), n_heads=at.num_heads, w_q=at.q_proj.weight, b_q=at.q_proj.bias,
            w_k=at.k_proj.weight, b_k=at.k_proj.bias, w_v=at.v_proj.weight, b_v=at.v_proj.bias,
            w_o=at.out_proj.weight, b_o=at.out_proj.bias, ln_2=_ln(layer.layer_norm2),
            w_fc1=layer.mlp.fc1.weight, b_fc1=layer.mlp.fc1.bias, act=layer.mlp.activation_fn,
            w_fc2=layer.mlp.fc2.weight, b_fc2=layer.mlp.fc2.bias,
            mlp_name=names.get(id(layer.mlp.activation_fn), "")))
    projection = getattr(model, "visual_projection", None)
    ln_post = vision.post_layernorm
    width = ln_post.weight.shape[0]
    # no projection (a bare CLIPVisionModel): the embedding is the pooled output itself
    proj = projection.weight.T if projection is not None else \
        torch.eye(width, dtype=ln_post.weight.dtype, device=ln_post.weight.device)

    def embed(pixels):
        return vision.pre_layrnorm(vision.embeddings(pixels))

    return ClipViT(blocks, _ln(ln_post), proj, embed, "hf")

