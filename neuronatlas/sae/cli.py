"""`neuronatlas sae ...`: train and inspect sparse autoencoders (registered in neuronatlas/cli.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

sae_app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                      help="Sparse autoencoders: train dictionaries on a layer, read SAELens files.")


@sae_app.command("train")
def train(
    model: str = typer.Argument(..., help="Model spec: timm:NAME, open_clip:..., zoo:NAME, ..."),
    layer: str = typer.Option(..., "--layer", "-l", help="The hook point to encode (see "
                                                          "`neuronatlas layers MODEL`)."),
    data: str = typer.Option(..., "--data", "-d", help="Probe set: a folder, file list, tar "
                                                        "shards, world:n=..."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the SAE (SAELens format) and "
                                                      "its metrics; rerun to resume."),
    architecture: str = typer.Option("topk", help="topk, relu (L1), jumprelu or batchtopk."),
    k: int = typer.Option(32, help="Active features per row (topk, batchtopk)."),
    expansion: int = typer.Option(8, help="Features per input unit."),
    features: int = typer.Option(0, help="Number of features (overrides --expansion)."),
    tokens: str = typer.Option("all", help="Rows: all positions, patches (grid only) or cls."),
    l1_coeff: float = typer.Option(5.0, help="relu: L1 weight."),
    l0_coeff: float = typer.Option(1.0, help="jumprelu: L0 weight."),
    lr: float = typer.Option(4e-4, help="Adam learning rate."),
    batch_tokens: int = typer.Option(1024, help="Rows per training step."),
    buffer_tokens: int = typer.Option(32768, help="Rows in the shuffle buffer (memory bound)."),
    epochs: int = typer.Option(1, help="Passes over the probe set."),
    image_batch: int = typer.Option(32, help="Images per forward pass."),
    dead_after: int = typer.Option(100_000, help="Rows without firing after which a feature is dead."),
    checkpoint_every: int = typer.Option(50, help="Steps between checkpoints."),
    eval_images: int = typer.Option(64, help="Images the metrics are measured on."),
    seed: int = typer.Option(0, help="Seed of the SAE, the data order and random model weights."),
    weights: Optional[str] = typer.Option(None, help="Local weights file or directory."),
    random_weights: bool = typer.Option(False, "--random-weights", help="Random model weights."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda... (default: GPU if present)."),
    workers: int = typer.Option(0, help="Image decoding processes (0: in this process)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
):
    """Train an SAE on one layer's activations; writes OUT/cfg.json, sae_weights.safetensors, metrics.json."""
    from .config import SAEConfig, TrainConfig
    from .fit import METRICS_FILE, train_sae

    sae_cfg = SAEConfig(architecture=architecture, d_in=1, d_sae=max(1, k), k=k,
                        l1_coeff=l1_coeff, l0_coeff=l0_coeff)
    cfg = TrainConfig(layer=layer, tokens=tokens, expansion=expansion, features=features, lr=lr,
                      batch_tokens=batch_tokens, buffer_tokens=buffer_tokens, epochs=epochs,
                      image_batch=image_batch, dead_after=dead_after,
                      checkpoint_every=checkpoint_every, seed=seed)
    train_sae(model, layer, data, out, sae_cfg, cfg, weights=weights, random_weights=random_weights,
              seed=seed, device=device, num_workers=workers, eval_images=eval_images,
              show_progress=not quiet)
    m = json.loads((out / METRICS_FILE).read_text())
    typer.echo(f"SAE in {out}: FVE {m['fve']:.3f}, L0 {m['l0']:.1f}, dead {m['dead_fraction']:.1%}, "
               f"output cosine {m.get('output_cosine_sae', float('nan')):.3f} "
               f"(zero-ablated {m.get('output_cosine_zero', float('nan')):.3f})")


@sae_app.command("info")
def info(source: str = typer.Argument(..., help="An SAE folder or hub id (REPO or REPO:FOLDER).")):
    """What an SAE is: architecture, size, and its metrics when neuronatlas trained it."""
    from .format import load_sae

    sae = load_sae(source)
    c = sae.cfg
    typer.echo(f"{c.architecture} SAE: {c.d_in} -> {c.d_sae} features"
               + (f", k {c.k}" if c.architecture in ("topk", "batchtopk") else ""))
    metrics = Path(source) / "metrics.json"
    if metrics.exists():
        for key, value in json.loads(metrics.read_text()).items():
            typer.echo(f"  {key}: {value:.4g}" if isinstance(value, float) else f"  {key}: {value}")
