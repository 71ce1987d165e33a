"""`neuronatlas explain RUN IMAGE`: why the run's model gave its output on one image."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def explain_command(
    run: Path = typer.Argument(..., help="A recorded run (its model and layers are explained)."),
    image: str = typer.Argument(..., help="An index or image id of the run's probe set, or an "
                                          "image file."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for explanation.json and "
                                                      "attributions.parquet."),
    target_class: Optional[str] = typer.Option(None, "--target", help="Class to explain (index or "
                                                                      "name; default: predicted)."),
    text: Optional[str] = typer.Option(None, "--text", help="Explain the image-text score of this "
                                                            "prompt (CLIP-style models)."),
    method: str = typer.Option("grad_x_act", help="grad_x_act or integrated_gradients."),
    steps: int = typer.Option(16, help="Integrated gradients: points on the path."),
    top: int = typer.Option(10, help="Top units of the last layer listed."),
    chain_k: int = typer.Option(5, "--chain-k", help="Units per layer in the chain."),
    baseline: str = typer.Option("mean", help="Ablation for the deletion curves: mean (the run's "
                                              "recorded mean) or zero."),
    random_draws: int = typer.Option(5, help="Random unit sets per k in the deletion curves."),
    deletion_layers: str = typer.Option("last", help="Deletion curves for the last recorded layer "
                                                     "or all of them."),
    chain_layers: Optional[int] = typer.Option(None, help="The chain goes through the last N "
                                                          "recorded layers (default all)."),
    seed: int = typer.Option(0, help="Seed of the random unit sets."),
    chat: Optional[str] = typer.Option(None, help="A chat backend for an LLM summary of the chain "
                                                  "(e.g. openai:MODEL@URL)."),
):
    """Attribute one image's output to the run's units, chain them through its layers, say why."""
    from . import explain

    client = None
    if chat:
        from ..backends.chat import load_chat_client

        client = load_chat_client(chat)
    if target_class is not None and text is not None:
        from ..errors import UserError

        raise UserError("pass --target (a class) or --text (a prompt), not both")
    result = explain(run, image, target_class=target_class, text=text, method=method, steps=steps,
                     top=top, chain_k=chain_k, baseline=baseline, random_draws=random_draws,
                     seed=seed, deletion_layers=deletion_layers, chain_layers=chain_layers,
                     chat=client, out=out)
    typer.echo(result["sentence"])
    if "llm" in result:
        typer.echo(result["llm"]["summary"])
    typer.echo(f"explanation in {out}/explanation.json")
