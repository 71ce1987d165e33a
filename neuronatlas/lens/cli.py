"""`neuronatlas lens ...`: the second-order lens from the command line (registered in neuronatlas/cli.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

lens_app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                       help="CLIP second-order lens: neuron effects through later attention heads.")


@lens_app.command("second-order")
def second_order(
    model: str = typer.Argument(..., help="A CLIP ViT: open_clip:ViT-B-32/TAG, hf:DIR, zoo:world-clip."),
    layer: str = typer.Option(..., "--layer", "-l", help="MLP block index (negative from the end) or "
                                                          "its hook name, e.g. 9 or "
                                                          "visual.transformer.resblocks.9.mlp.gelu."),
    data: str = typer.Option(..., "--data", "-d", help="Probe set the effects are computed on (a "
                                                        "folder, file list, tar shards, world:...)."),
    out: Path = typer.Option(Path("runs/second-order"), "--out", "-o",
                             help="Run directory (a recorded run of the same model, or a new one); "
                                  "effects go to OUT/lens/second-order/LAYER/."),
    top_k: int = typer.Option(100, help="Images per neuron for the PC and the significance threshold."),
    scale: str = typer.Option("norm100", help="norm100 (x 100/|embedding|, as the paper) or none."),
    batch_size: int = typer.Option(32, help="Images per forward pass."),
    workers: Optional[int] = typer.Option(None, help="Decoding processes (0: in this process)."),
    checkpoint_every: int = typer.Option(4, help="Batches per checkpoint."),
    shard: str = typer.Option("0/1", help="Compute only shard I of N ('I/N', contiguous); the "
                                          "statistics follow when every shard is done."),
    weights: Optional[str] = typer.Option(None, help="Local weights file or directory."),
    random_weights: bool = typer.Option(False, "--random-weights", help="Random weights."),
    seed: int = typer.Option(0, help="Seed of the random weights."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda... (default: GPU if present)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
):
    """Second-order effects of every neuron of one MLP layer; rerun the same command to resume."""
    from ..recording import parse_shard
    from .compute import SecondOrderConfig, compute_second_order

    i, n = parse_shard(shard)
    cfg = SecondOrderConfig(layer=layer, scale=scale, top_k=top_k, batch_size=batch_size,
                            num_workers=workers, device=device, weights=weights,
                            random_weights=random_weights, seed=seed,
                            checkpoint_every=checkpoint_every, shard=i, n_shards=n)
    res = compute_second_order(model, data, out, cfg, show_progress=not quiet)
    if res is None:
        typer.echo(f"shard {i}/{n} done; the statistics are computed when every shard has finished "
                   f"(run the same command with the other --shard values)")
        return
    s = res.meta["summary"]
    ev = res.explained_variance
    typer.echo(f"second-order effects of {res.n_neurons} neurons of {res.layer} over {s['n_ok']} "
               f"images ({len(res.heads)} later heads) in {res.path}")
    typer.echo(f"rank-1: the first PC explains {float(ev.mean()):.3f} of the top-{top_k} variance on "
               f"average (median {float(__import__('numpy').median(ev)):.3f})")
    if s["n_unreadable"]:
        typer.echo(f"skipped {s['n_unreadable']} unreadable images (status 'unreadable' in "
                   f"images.parquet)")


@lens_app.command("ablate")
def ablate(
    run: Path = typer.Argument(..., help="Run directory with second-order effects."),
    data: str = typer.Option(..., "--data", "-d", help="Evaluation probe set (not the one the "
                                                        "effects were computed on)."),
    task: str = typer.Option(..., help="world-color, world-shape (world probe sets with one object), "
                                        "imagenet (labels are ImageNet class names) or labels."),
    layer: Optional[str] = typer.Option(None, help="Which layer's effects (default: the only one)."),
    batch_size: int = typer.Option(32),
    workers: Optional[int] = typer.Option(None),
    device: Optional[str] = typer.Option(None),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """Zero-shot accuracy under the ablation suite (mean-ablate all / significant / insignificant
    effects, PC projection); the table is stored as RUN/evaluation/second_order_ablations.parquet."""
    from .. import run as rundir
    from .ablation import zero_shot_ablations
    from .compute import lens_for

    res = rundir.open_second_order(run, layer)
    target, lens = lens_for(res, device)
    df = zero_shot_ablations(lens, target, res, data, task, batch_size, workers, not quiet)
    df["data"] = data
    old = rundir.read_evaluation(run, "second_order_ablations")
    if old is not None:  # one block of rows per (layer, task, data): replace ours, keep the others
        import pandas as pd

        same = (old["layer"] == res.layer) & (old["task"] == df["task"].iloc[0]) & \
            (old.get("data", pd.Series([None] * len(old))) == data)
        df_all = pd.concat([old[~same], df], ignore_index=True)
    else:
        df_all = df
    rundir.write_evaluation(run, "second_order_ablations", df_all)
    for r in df.itertuples():
        typer.echo(f"{r.condition:18s} {r.accuracy:.4f}")
    typer.echo(f"zero-shot {task} on {int(df['n'].iloc[0])} images; table in "
               f"{rundir.evaluation_path(run, 'second_order_ablations')}")


from .apps_cli import register as _register_apps  # noqa: E402  decompose, segment, adversarial, discover

_register_apps(lens_app)
