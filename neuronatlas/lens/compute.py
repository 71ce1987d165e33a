"""`compute_second_order`: the second-order effects of every neuron of one MLP layer over a probe set,
stored in RUN/lens/second-order/LAYER/ (format: docs/run-format.md, written through neuronatlas.run).

Pass 1 (the model runs, on the shard loop `record` uses: lens/effects_pass.py): per batch, the
factored effects (coefficients, N x K per image) go straight to disk and into an exact running sum;
a checkpoint after every `checkpoint_every` batches makes an interrupted run resume from the last one,
and `shard=I, n_shards=N` computes one contiguous shard (pass 2 runs once every shard is done).
Pass 2 (no model): the mean effect, every image's
centred effect norm (from the coefficients and per-neuron K x K Gram matrices of the head vectors),
the running top-k per neuron with its coefficient rows, then the rank-1 approximation from them.
Memory is flat in the number of images: (N, K) sums, (N, k, K) top rows, one batch of coefficients.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from .. import run as rundir
from ..errors import UserError
from .rank1 import first_components
from ..recording.top_rows import TopRows
from .effects import SCALES, SecondOrderLens
from .effects_pass import merge_effects, missing_shards, run_effects_shard
from .vit import ClipViT

FORMAT_VERSION = 1


@dataclass(frozen=True)
class SecondOrderConfig:
    """How to compute second-order effects (dumps to JSON in lens.json)."""

    layer: str = "-2"  # block index (negative counts from the end) or the MLP's hook name
    scale: str = "norm100"  # "norm100": x 100 / |embedding| per image (the reference); "none"
    top_k: int = 100  # images per neuron kept for the PC and the significance threshold
    batch_size: int = 32
    num_workers: int | None = None
    device: str | None = None  # default: cuda when available
    weights: str | None = None
    random_weights: bool = False
    seed: int = 0  # for random weights
    checkpoint_every: int = 4  # batches per checkpoint block
    stats_block: int = 256  # images per block in pass 2
    shard: int = 0  # compute only this contiguous shard of pass 1 ...
    n_shards: int = 1  # ... of this many; pass 2 runs when all are done

    def __post_init__(self):
        if self.scale not in SCALES:
            raise UserError(f"unknown --scale {self.scale!r}: use one of {', '.join(SCALES)}")
        if self.top_k < 2:
            raise UserError(f"--top-k must be at least 2 (it was {self.top_k})")
        if self.batch_size < 1 or self.checkpoint_every < 1:
            raise UserError("--batch-size and --checkpoint-every must be at least 1")
        if not 0 <= self.shard < self.n_shards:
            raise UserError(f"shard {self.shard}/{self.n_shards} does not exist: use I/N with "
                            f"0 <= I < N")

    def to_json(self) -> dict:
        return asdict(self)


def pick_device(device: str | None) -> torch.device:
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_lens(model, cfg: SecondOrderConfig, device=None):
    """(target, lens) for a model spec (or a Target) and the layer of `cfg`."""
    from ..models import load_target
    from ..models.target import Target

    if isinstance(model, Target):
        target = model
    else:
        torch.manual_seed(cfg.seed)
        target = load_target(model, weights=cfg.weights, random_weights=cfg.random_weights)
    target.to(device or pick_device(cfg.device))
    vit = ClipViT.from_target(target)
    return target, SecondOrderLens(vit, cfg.layer, scale=cfg.scale)


def compute_second_order(model, data, out: Path | str, cfg: SecondOrderConfig = SecondOrderConfig(),
                         show_progress: bool = True, engine=None) -> rundir.SecondOrderResult | None:
    """Compute (or resume, or just open when finished) the second-order effects of `cfg.layer`.
    Returns None when this was one shard and others are still missing (like `record`)."""
    from ..data import open_probe

    target, lens = load_lens(model, cfg)
    probe = open_probe(data)
    if len(probe) < cfg.top_k:
        raise UserError(f"the probe set has {len(probe)} images, fewer than --top-k {cfg.top_k}: "
                        f"use more images or a smaller --top-k")
    _check_recorded_model(out, target)
    store = rundir.SecondOrderStore(out, lens.unit_layer)
    meta = store.create_or_verify(_meta(target, probe, lens, cfg))
    if meta.get("status") == "complete":
        return rundir.SecondOrderResult(out, lens.unit_layer)
    run_effects_shard(lens, target, probe, store, cfg, show_progress, engine)
    if missing_shards(store, cfg.n_shards):
        return None
    mean_coef, n_ok, failed = merge_effects(store, len(probe), lens.n_neurons, lens.n_heads,
                                            cfg.n_shards)
    if n_ok < cfg.top_k:
        raise UserError(f"only {n_ok} of {len(probe)} images could be read, fewer than --top-k "
                        f"{cfg.top_k}; see the failures in {store.dir / 'images.parquet'}")
    _write_images(store, probe, failed)
    _pass_statistics(lens, store, len(probe), mean_coef, cfg, show_progress)
    store.update_meta(status="complete", finished=time.strftime("%Y-%m-%dT%H:%M:%S"),
                      summary={"n_images": len(probe), "n_ok": n_ok, "n_unreadable": len(failed)})
    return rundir.SecondOrderResult(out, lens.unit_layer)


def lens_for(result: rundir.SecondOrderResult, device=None):
    """(target, lens) of the model and layer a stored result was computed with."""
    m = result.meta
    cfg = SecondOrderConfig(**{**m["config"], "device": device or m["config"].get("device")})
    from ..describe.text_decomposition import target_of

    return load_lens(target_of(result), cfg)


def _check_recorded_model(out, target) -> None:
    """Effects stored next to a recording must come from the recording's model (same unit ids)."""
    if not rundir.is_run(out):
        return
    model = rundir.read_meta(out)["key"]["model"]
    if model.get("spec") != target.spec or model.get("weights") != target.weights:
        raise UserError(f"{out} is a recording of {model.get('spec')} ({model.get('weights')}), not of "
                        f"{target.spec} ({target.weights}): its unit ids would not match; choose "
                        f"another --out directory")


def _meta(target, probe, lens: SecondOrderLens, cfg: SecondOrderConfig) -> dict:
    from ..recording.meta import package_versions  # the version a recording stores too

    model_key = {"spec": target.spec, "weights": target.weights}
    if target.weights == "random":
        model_key["seed"] = cfg.seed
    return {
        "format": rundir.SECOND_ORDER_FORMAT, "format_version": FORMAT_VERSION, "status": "computing",
        "key": {"model": model_key,
                "probe": {"kind": probe.kind, "fingerprint": probe.fingerprint(), "count": len(probe)},
                "layer": lens.unit_layer, "scale": cfg.scale, "top_k": cfg.top_k,
                "n_shards": cfg.n_shards},
        "probe": {"spec": probe.spec},
        "block": lens.layer, "heads": [list(h) for h in lens.heads], "n_neurons": lens.n_neurons,
        "out_dim": lens.out_dim, "family": lens.vit.family, "config": cfg.to_json(),
        "versions": {"neuronatlas": package_versions().get("neuronatlas", "dev"),
                     "torch": torch.__version__},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def _write_images(store, probe, failed) -> None:
    import pandas as pd

    reasons = {int(i): r for i, r in failed}
    store.write_table("images", pd.DataFrame({
        "index": np.arange(len(probe), dtype=np.int64),
        "image_id": [it.image_id for it in probe.items], "path": [it.path for it in probe.items],
        "label": [it.label for it in probe.items],
        "status": ["unreadable" if i in reasons else "ok" for i in range(len(probe))],
        "reason": [reasons.get(i) for i in range(len(probe))]}))


# -- pass 2: mean, norms, top-k, rank-1 ------------------------------------------------------------
def _pass_statistics(lens, store, n_images: int, mean_coef: np.ndarray, cfg, show_progress) -> None:
    import pandas as pd

    N, K, k = lens.n_neurons, lens.n_heads, cfg.top_k
    mean_coef = torch.as_tensor(mean_coef)  # (N, K) float64
    u = lens.head_vectors.detach().float().cpu()  # (K, N, D)
    gram = torch.cat([torch.einsum("knd,lnd->nkl", u[:, s:s + 256].double(), u[:, s:s + 256].double())
                      for s in range(0, N, 256)])  # (N, K, K): |c . u_n|^2 = c G_n c
    coefs = store.coefficients(N, K)
    norms_w = store.array_writer("norms", n_images, N)
    top = TopRows(N, k, K)
    # images per block: keeps the (N, k + block, K) float64 merge buffer near 2^24 numbers
    block = int(min(cfg.stats_block, max(8, 2 ** 24 // (N * K))))
    try:
        for start in range(0, n_images, block):
            c = torch.tensor(np.array(coefs[start:start + block]), dtype=torch.float64)
            cc = c - mean_coef
            norms = torch.einsum("bnk,nkl,bnl->bn", cc, gram, cc).clamp(min=0).sqrt()
            norms_w.write(start, norms.float().numpy())  # NaN rows stay NaN
            top.update(norms.numpy(), np.arange(start, start + len(c)), cc.numpy())
        norms_w.flush()
    finally:
        norms_w.close()
    top_norms, top_index, top_cc = top.result()
    pcs, explained = first_components(torch.as_tensor(top_cc), u)
    mean_effect = torch.einsum("nk,knd->nd", mean_coef, u.double())
    threshold = top_norms[:, -1]
    store.write_arrays({
        "mean_coefficient": mean_coef.numpy(), "mean_effect": mean_effect.float().numpy(),
        "head_vectors": u.numpy(), "top_norms": top_norms.astype(np.float32),
        "top_index": top_index, "pc": pcs.float().numpy(),
        "explained_variance": explained.float().numpy(), "threshold": threshold.astype(np.float32)})
    store.write_table("neurons", pd.DataFrame({
        "unit": [f"{lens.unit_layer}:{i}" for i in range(N)], "index": np.arange(N),
        "threshold": threshold.astype(np.float64), "explained_variance": explained.double().numpy(),
        "mean_effect_norm": mean_effect.norm(dim=-1).numpy(),
        "top_norm": top_norms[:, 0].astype(np.float64)}))
