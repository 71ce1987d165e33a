"""`neuronatlas vlm ...` (registered in neuronatlas/cli.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

vlm_app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                      help="VLM mechanistic interpretability: logit lens, token "
                      "ablation, attention knockout.")


@vlm_app.command("logit-lens")
def logit_lens(
    model: str = typer.Argument(..., help="zoo:world-llava or a local HF Llava checkpoint (hf:DIR)."),
    data: str = typer.Option(..., "--data", "-d", help="Probe set (folder, file list, world:...)."),
    out: Path = typer.Option(Path("runs/vlm"), "--out", "-o", help="Run directory; the lens goes to "
                                                                 "OUT/vlm/logit-lens/."),
    top_k: int = typer.Option(5, help="Tokens kept per layer and position."),
    prompt: Optional[str] = typer.Option(None, help="Prompt after the image (default: caption)."),
    batch_size: int = typer.Option(4, help="Images per forward pass (and per Parquet part)."),
    weights: Optional[str] = typer.Option(None, help="Checkpoint directory of zoo:world-llava."),
    random_weights: bool = typer.Option(False, "--random-weights", help="Random weights."),
    limit: Optional[int] = typer.Option(None, help="Only the first N images of the probe set."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
):
    """Top-k tokens of every layer at every position; rerun the same command to resume."""
    from .lens_run import run_logit_lens
    from .logit_lens import LensConfig
    from .subject import load_subject

    subject = load_subject(model, weights, random_weights)
    store = run_logit_lens(subject, data, out, LensConfig(top_k=top_k, prompt=prompt,
                                                          batch_size=batch_size),
                           show_progress=not quiet, limit=limit)
    typer.echo(f"logit lens written to {store.dir}; browse it with `neuronatlas atlas {out} --serve`")


def _csv(text: str, cast=str) -> tuple:
    from ..errors import UserError

    try:
        return tuple(cast(t.strip()) for t in text.split(",") if t.strip())
    except ValueError:
        raise UserError(f"expected a comma-separated list, got {text!r}") from None


@vlm_app.command("ablate")
def ablate(
    model: str = typer.Argument(..., help="zoo:world-llava or a local HF Llava checkpoint (hf:DIR)."),
    data: str = typer.Option(..., "--data", "-d", help="Probe set with object masks (world:...)."),
    out: Path = typer.Option(Path("runs/vlm"), "--out", "-o", help="Run directory; results go to "
                                                                 "OUT/vlm/ablation/NAME/."),
    name: str = typer.Option("default", help="Name of this experiment inside the run."),
    settings: str = typer.Option("polling,vqa", help="Comma list of polling, vqa, generative."),
    token_sets: str = typer.Option("object,random-matched,high-norm,random",
                                   help="Comma list of object, random-matched, high-norm, random, "
                                        "ig (integrated gradients, polling only)."),
    buffers: str = typer.Option("0,1,2", help="Dilation rounds around the object patches."),
    ks: str = typer.Option("5,10,20,40", help="k of the random-k and integrated-gradients sets."),
    baseline: str = typer.Option("mean", help="mean (post-projector image token) or zeros."),
    mean_images: int = typer.Option(200, help="Images the mean vector averages (the first N)."),
    ig_steps: int = typer.Option(50, help="Integrated-gradients steps."),
    polling: Optional[str] = typer.Option(None, help="Polling question template with {c}."),
    seed: int = typer.Option(0, help="Seed of the random token sets."),
    batch_size: int = typer.Option(16, help="Images per part (resume unit)."),
    limit: Optional[int] = typer.Option(None, help="Only the first N images."),
    weights: Optional[str] = typer.Option(None, help="Checkpoint directory of zoo:world-llava."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
):
    """Replace image-token embeddings (object patches, random, high-norm, IG top-k) by the mean
    image token and measure how often answers about the object stay right; resumable."""
    from .ablation_run import AblationConfig, run_ablation
    from .subject import load_subject

    cfg = AblationConfig(settings=_csv(settings), token_sets=_csv(token_sets),
                         buffers=_csv(buffers, int), ks=_csv(ks, int), baseline=baseline,
                         mean_images=mean_images, ig_steps=ig_steps, polling=polling, seed=seed,
                         batch_size=batch_size, limit=limit)
    subject = load_subject(model, weights)
    store = run_ablation(subject, data, out, cfg, name=name, show_progress=not quiet)
    cur = store.table("curves")
    for r in cur.itertuples(index=False):
        typer.echo(f"{r.setting:10s} {r.token_set:15s} param {r.param:3d}  k {r.k:6.1f}  "
                   f"accuracy {r.accuracy:.3f}  (n {r.n})  prob drop {r.prob_drop:+.3f}")
    typer.echo(f"tables and curves.png in {store.dir}")


@vlm_app.command("knockout")
def knockout(
    model: str = typer.Argument(..., help="zoo:world-llava or a local HF Llava checkpoint (hf:DIR)."),
    data: str = typer.Option(..., "--data", "-d", help="Probe set with object masks (world:...)."),
    out: Path = typer.Option(Path("runs/vlm"), "--out", "-o", help="Run directory; results go to "
                                                                 "OUT/vlm/knockout/NAME/."),
    name: str = typer.Option("default", help="Name of this experiment inside the run."),
    settings: str = typer.Option("vqa", help="Comma list of polling, vqa."),
    sources: str = typer.Option("object,non-object,rows-but-last", help="Blocked source sets."),
    destinations: str = typer.Option("last,last-row,question", help="Destination sets."),
    buffers: str = typer.Option("0,1", help="Buffers of the object source."),
    windows: Optional[str] = typer.Option(None, help="Layer windows NAME=LO-HI,... (default: "
                                                     "early/mid/late thirds, early-mid, mid-late, "
                                                     "all)."),
    polling: Optional[str] = typer.Option(None, help="Polling question template with {c}."),
    batch_size: int = typer.Option(16, help="Images per part (resume unit)."),
    limit: Optional[int] = typer.Option(None, help="Only the first N images."),
    weights: Optional[str] = typer.Option(None, help="Checkpoint directory of zoo:world-llava."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
):
    """Block attention from source to destination tokens in windows of layers and measure the
    answers' accuracy and the drop of the answer token's probability; resumable."""
    from .knockout_run import KnockoutConfig, run_knockout
    from .subject import load_subject

    cfg = KnockoutConfig(settings=_csv(settings), sources=_csv(sources),
                         destinations=_csv(destinations), buffers=_csv(buffers, int),
                         windows=windows, polling=polling, batch_size=batch_size, limit=limit)
    subject = load_subject(model, weights)
    store = run_knockout(subject, data, out, cfg, name=name, show_progress=not quiet)
    for r in store.table("summary").itertuples(index=False):
        typer.echo(f"{r.setting:8s} {r.source:14s} -> {r.destination:9s} {r.window:10s} "
                   f"accuracy {r.accuracy:.3f}  (n {r.n})  prob drop {r.prob_drop:+.3f}")
    typer.echo(f"tables and profile.png in {store.dir}")
