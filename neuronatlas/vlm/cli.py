"""`neuronatlas vlm ...` (registered in neuronatlas/cli.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

vlm_app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                      help="VLM mechanistic interpretability: logit lens.")


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
