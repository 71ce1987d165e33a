"""The `neuronatlas` command: thin wrappers that parse options, call the API and show progress.

A UserError prints one line (no stack trace) and exits with code 2; Ctrl-C says how to resume.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from typer.core import TyperCommand

from .errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Explain what the units of vision models respond to, and measure whether "
                       "each explanation is right.")


def _err(msg: str) -> None:
    typer.echo(f"error: {msg}", err=True)


def _zoo_help() -> str:
    from .models.zoo import help_text

    return help_text()


def _spec_help() -> str:
    """Every model family's grammar (plugins included), from the families themselves."""
    from .models.registry import forms

    text = f"Model spec: {forms()}; e.g. timm:vit_tiny_patch16_224."
    try:  # typer renders help as rich markup: the grammars' [optional] parts are not tags
        from rich.markup import escape
    except ImportError:
        return text
    return escape(text)


@app.command()
def layers(
    model: str = typer.Argument(..., help=_spec_help()),
    weights: Optional[str] = typer.Option(None, help="Local weights file or directory."),
    random_weights: bool = typer.Option(False, "--random-weights",
                                        help="Build the architecture with random weights."),
    pattern: Optional[str] = typer.Option(None, "--match", help="Only list names matching this glob."),
):
    """List the model's hook points: one per line, name first, then output shape and layout."""
    from .models import format_layers, load_target

    target = load_target(model, weights=weights, random_weights=random_weights)
    if pattern:
        names = {p.name for p in target.select([pattern])}
        lines = [l for l in format_layers(target) if l.split()[0] in names]
    else:
        lines = format_layers(target)
    typer.echo("\n".join(lines))


@app.command()
def record(
    model: str = typer.Argument(..., help="Model spec (see `neuronatlas layers --help`). Offline zoo "
                                           "(`neuronatlas zoo list`): " + _zoo_help()),
    layers: str = typer.Option(..., "--layers", "-l",
                               help="Comma-separated glob patterns over hook-point names, e.g. "
                                    "'blocks.*.mlp.fc1'. `neuronatlas layers MODEL` lists them."),
    data: str = typer.Option(..., "--data", "-d",
                             help="Probe set: a folder (class = sub-folder), a file list (.txt/.csv), "
                                  "tar shards ('shards-{000..009}.tar'), world:n=1000,size=224, "
                                  "photos:, or hf:PATH (a dataset saved with save_to_disk)."),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory to create or resume."),
    pooling: Optional[str] = typer.Option(
        None, help="mean | max | cls | patch_mean | patch_max | none. Default per layer kind: conv "
                   "mean over H x W, ViT tokens patch_mean (CLS and registers excluded), vectors none."),
    k: int = typer.Option(20, help="Exemplars kept per unit at each end (top and bottom)."),
    batch_size: int = typer.Option(32, help="Images per forward pass."),
    workers: Optional[int] = typer.Option(None, help="Decoding processes (default min(4, cores); 0 "
                                                     "decodes in this process)."),
    save_acts: bool = typer.Option(False, "--save-acts",
                                   help="Also write the pooled images x units matrix (float32)."),
    dedup: bool = typer.Option(True, help="Record byte-identical images once (--no-dedup: keep all)."),
    shard: str = typer.Option("0/1", help="Record only shard I of N ('I/N'); merge when all are done."),
    shard_mode: str = typer.Option("contiguous", help="contiguous blocks or strided (every N-th)."),
    seed: int = typer.Option(0, help="Seed for random weights and anything random; recorded."),
    weights: Optional[str] = typer.Option(None, help="Local weights file or directory."),
    random_weights: bool = typer.Option(False, "--random-weights",
                                        help="Build the architecture with random weights."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:1... (default: GPU if present)."),
    checkpoint_seconds: float = typer.Option(60.0, help="Checkpoint at least this often (seconds)."),
    checkpoint_every: Optional[int] = typer.Option(None, help="Also checkpoint every N batches."),
    basis: list[str] = typer.Option([], "--basis",
                                    help="LAYER=FILE.npz: record LAYER's units in the basis of an "
                                         "encoder file (features as units, ids LAYER:INDEX@NAME; "
                                         "neuronatlas.run.save_encoder_file writes one). Repeatable."),
    sae: list[str] = typer.Option([], "--sae",
                                  help="DIR or LAYER=DIR: record the layer an SAE folder (ours, "
                                       "SAELens's, or a hub id) was trained on in its features "
                                       "(ids LAYER:INDEX@sae). Repeatable."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
):
    """Record top/bottom exemplars and statistics of every unit of LAYERS over a probe set.

    Rerunning the same command resumes an interrupted run; recording a different model, probe set
    or pooling into an existing run is refused.
    """
    from .recording import RecordConfig, parse_shard
    from .recording import record as do_record

    i, n = parse_shard(shard)
    cfg = RecordConfig(layers=tuple(p for p in layers.split(",") if p.strip()), pooling=pooling,
                       k=k, batch_size=batch_size, num_workers=workers, save_acts=save_acts,
                       dedup=dedup, shard=i, n_shards=n, shard_mode=shard_mode, seed=seed,
                       weights=weights, random_weights=random_weights, device=device,
                       checkpoint_seconds=checkpoint_seconds, checkpoint_every=checkpoint_every)
    run = do_record(model, data, out, cfg, show_progress=not quiet,
                    basis={**_encoders(basis), **_sae_encoders(sae)} if basis or sae else None)
    if run is None:
        typer.echo(f"shard {i}/{n} done; the run is merged when every shard has finished "
                   f"(or run `neuronatlas merge {out}`)")
        return
    _print_summary(run)


def _encoders(items: list[str]) -> dict:
    """--basis LAYER=FILE options -> {layer: encoder}."""
    from .recording.basis import encoder_from_state
    from .run import load_encoder_file

    out = {}
    for item in items:
        layer, eq, path = item.partition("=")
        if not eq or not layer or not path:
            raise UserError(f"--basis must look like LAYER=FILE.npz (got '{item}')")
        out[layer] = encoder_from_state(*load_encoder_file(path))
    return out


def _sae_encoders(items: list[str]) -> dict:
    """--sae DIR / LAYER=DIR options -> {layer: the SAE as an encoder}."""
    from .sae.basis import sae_encoder, sae_layer

    out = {}
    for item in items:
        layer, eq, folder = item.partition("=") if "=" in item else ("", "", item)
        layer = layer or sae_layer(folder)
        if not layer:
            raise UserError(f"the SAE in {folder} does not say which layer it reads: pass "
                            f"--sae LAYER={folder}")
        out[layer] = sae_encoder(folder)
    return out


def _print_summary(run) -> None:
    s = run.meta["summary"]
    typer.echo(f"recorded {s['n_ok']} images x {len(run.units)} units "
               f"({', '.join(run.layers)}) into {run.path}")
    bad = run.images[run.images["status"] == "unreadable"]
    if len(bad):
        shown = "; ".join(f"{r.image_id}: {r.reason}" for r in bad.head(3).itertuples())
        typer.echo(f"skipped {len(bad)} unreadable images ({shown}{'; ...' if len(bad) > 3 else ''})"
                   f" — listed in images.parquet with status 'unreadable'")
    if s["n_duplicate"]:
        typer.echo(f"recorded {s['n_duplicate']} byte-identical duplicates once (status 'duplicate')")


@app.command()
def merge(run: Path = typer.Argument(..., help="Run directory whose shards have all finished.")):
    """Merge the shards of a run into its final tables (exact)."""
    from .recording import finalize

    _print_summary(finalize(run, require=True))


@app.command()
def info(run: Path = typer.Argument(..., help="Run directory.")):
    """Summarise a run: model, probe set, layers, pooling, counts."""
    from .run import open_run

    r = open_run(run)
    m = r.meta
    typer.echo(f"model   {m['key']['model']['spec']}  (weights: {m['key']['model']['weights']})")
    typer.echo(f"probe   {m['probe']['spec']}  ({m['summary']['n_ok']} recorded of "
               f"{m['summary']['n_images']})")
    for l in m["layers"]:
        typer.echo(f"layer   {l['name']}  {l['n_units']} units  {l['layout']['kind']}  "
                   f"pooling={l['pooling']}")


@app.command()
def exemplars(
    run: Path = typer.Argument(..., help="Run directory."),
    unit: str = typer.Argument(..., help="Unit id LAYER:INDEX, e.g. blocks.9.mlp.fc1:1337."),
    out: Path = typer.Option(..., "--out", "-o", help="grid.png or grid.svg; with --which both, "
                                                       "-top / -bottom are added to the name."),
    which: str = typer.Option("both", help="top, bottom or both."),
    k: Optional[int] = typer.Option(None, help="How many exemplars (default: all recorded)."),
    heatmap: bool = typer.Option(True, help="Overlay the unit's spatial map (--no-heatmap: plain)."),
    svg: bool = typer.Option(True, help="Also write an SVG next to each PNG."),
    data: Optional[str] = typer.Option(None, help="Probe set, if it moved since recording."),
):
    """Draw a unit's top/bottom exemplars with heatmaps (re-runs the model on them)."""
    from .atlas.exemplars import exemplar_grids

    for p in exemplar_grids(run, unit, out, which, k, heatmap, probe=data, svg=svg):
        typer.echo(str(p))


class _DescribeCommand(TyperCommand):
    """`describe`'s options after RUN and --method are the chosen method's config fields
    (neuronatlas/cli_options.py), added to the command just before its arguments are parsed."""

    def parse_args(self, ctx, args):
        from .cli_options import config_params, option_names, refuse_foreign, value_of
        from .describe import get_labeler, labelers

        base = [p for p in self.params if not getattr(p, "generated", False)]
        method = value_of(args, "--method", "clip-dissect")
        known = labelers()
        for p in base:
            if p.name == "method":
                p.help = (f"The labeler: {', '.join(known)}. `--method M --help` shows M's "
                          f"options.")
        lab = get_labeler(method)  # unknown -> one line with the near matches
        own = config_params(lab.config, "labeler_options", skip={p.name for p in base})
        self.params = base + own
        summary = " ".join((lab.label.__doc__ or "").split("\n\n")[0].split())
        self.help = (self.help or "").split("\n\n--method")[0] + f"\n\n--method {method}: {summary}"
        others = {m: option_names(config_params(l.config, "x")) for m, l in known.items()
                  if m != method}
        refuse_foreign(args, option_names(self.params), others, method, f"neuronatlas describe "
                                                                        f"--method {method}")
        return super().parse_args(ctx, args)


@app.command(cls=_DescribeCommand)
def describe(
    ctx: typer.Context,
    run: Path = typer.Argument(..., help="Run directory (CLIP-Dissect needs one recorded with "
                                          "--save-acts)."),
    method: str = typer.Option("clip-dissect", help="The labeler."),
):
    """Label every unit of a run with a describe method; labels are stored in the run.

    The options after --method are the method's own (its config's fields)."""
    from .describe import describe as do_describe
    from .describe import get_labeler

    options = ctx.meta.get("labeler_options", {})
    df = do_describe(run, method, **options)
    best = df[df["rank"] == 0].head(12)
    for r in best.itertuples():
        typer.echo(f"{r.unit:40s} {r.label:30s} {r.score:.4g}")
    name = df["method"].iloc[0]
    typer.echo(f"labelled {df['unit'].nunique()} units with {name}; "
               f"read them with neuronatlas.open_run('{run}').labels()")
    report = get_labeler(method).report
    if report is not None:
        line = report(run, name)
        if line:
            typer.echo(line)


def _first_line(fn, default: str) -> str:
    return ((getattr(fn, "__doc__", None) or default).strip().split("\n") or [default])[0]


class _EvaluateCommand(TyperCommand):
    """`evaluate`'s options are the registered metrics' config fields (one per name) and a
    --NAME/--no-NAME switch per metric, added just before the arguments are parsed."""

    def parse_args(self, ctx, args):
        from .cli_options import union_params
        from .evaluate.base import metrics

        base = [p for p in self.params if not getattr(p, "generated", False)]
        known = metrics()
        switches = {name.replace("-", "_"): f"{(m.score.__doc__ or name).split(chr(10))[0]} "
                                            f"(default: {_first_line(m.applies, 'always')})"
                    for name, m in known.items()}
        self.params = base + union_params([m.config for m in known.values()], "metric_options",
                                          skip={p.name for p in base}, switches=switches)
        return super().parse_args(ctx, args)


@app.command(cls=_EvaluateCommand)
def evaluate(
    ctx: typer.Context,
    run: Path = typer.Argument(..., help="Run directory with labels."),
    methods: Optional[str] = typer.Option(None, help="Comma-separated methods (default: all)."),
    metrics: Optional[str] = typer.Option(None, help="Comma-separated metrics (default: every one "
                                                     "that applies; see the switches below)."),
):
    """Measure how right each method's labels are: ground truth, simulation, agreement, detection.

    The other options are the metrics' own (their configs' fields) and one switch per metric."""
    from .evaluate import evaluate as do_evaluate

    options = ctx.meta.get("metric_options", {})
    switches = {k: v for k, v in ctx.meta.get("metric_options_switches", {}).items()}
    summary = do_evaluate(run, methods=methods.split(",") if methods else None,
                          metrics=metrics.split(",") if metrics else None, switches=switches,
                          **options)
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"evaluation of {run}")
    for col in summary.columns:
        table.add_column(str(col))
    for row in summary.itertuples(index=False):
        table.add_row(*[f"{v:.3f}" if isinstance(v, float) else str(v) for v in row])
    Console().print(table)


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), help="Where to write the demo run."),
    small: bool = typer.Option(False, help="A reduced size, for tests."),
):
    """Run the whole pipeline on the embedded default (no downloads, CPU)."""
    from .demo import run_demo

    run_demo(out, small=small)


def _register_zoo() -> None:
    """`neuronatlas zoo list|train|eval`: the group lives with the zoo (models/zoo_cli.py); the world
    models attach their training commands to it."""
    from .models.zoo_cli import zoo_app

    try:
        from .worldmodels.train import eval_cmd, train_cmd
    except ImportError:  # transformers missing: `zoo list` and the rest of the CLI still work
        pass
    else:
        zoo_app.command("train")(train_cmd)
        zoo_app.command("eval")(eval_cmd)
    app.add_typer(zoo_app, name="zoo")


_register_zoo()


def _register_features() -> None:
    """Command groups that live with their feature: `study`, `atlas`, `lens`."""
    from .atlas.cli import atlas
    from .explain.cli import explain_command
    from .lens.cli import lens_app
    from .sae.cli import sae_app
    from .study.cli import study_app

    app.add_typer(study_app, name="study", help="Blind human studies: export, import, report.")
    app.command()(atlas)
    app.command("explain")(explain_command)
    app.add_typer(lens_app, name="lens", help="CLIP second-order lens: neuron effects through later "
                                              "attention heads, rank-1 PCs, ablations, text "
                                              "decomposition, segmentation, adversarial images.")
    from .vlm.cli import vlm_app

    app.add_typer(vlm_app, name="vlm", help="VLM mechanistic interpretability: logit lens, token "
                                            "ablation, attention knockout.")
    app.add_typer(sae_app, name="sae", help="Sparse autoencoders: train dictionaries on a layer, "
                                            "read and write SAELens files.")


_register_features()


_RESUME = "interrupted; rerun the same command to resume from the last checkpoint"


def _is_click_error(exc: BaseException) -> bool:
    """click's or typer's vendored usage error (the two no longer share a base class)."""
    return "click" in (type(exc).__module__ or "") and hasattr(exc, "show") and hasattr(exc, "exit_code")


def main() -> None:
    import os

    debug = "--debug" in sys.argv[1:] or os.environ.get("NEURONATLAS_DEBUG") == "1"
    if "--debug" in sys.argv[1:]:
        sys.argv.remove("--debug")
    try:
        rc = app(standalone_mode=False)
    except UserError as exc:
        if debug:
            raise
        _err(str(exc))
        sys.exit(2)
    except KeyboardInterrupt:
        _err(_RESUME)
        sys.exit(130)
    except Exception as exc:
        name = type(exc).__name__
        if _is_click_error(exc):
            exc.show()
            sys.exit(exc.exit_code)
        if name == "Exit" and hasattr(exc, "exit_code"):
            sys.exit(exc.exit_code)
        if name == "Abort":
            _err("aborted")
            sys.exit(1)
        if debug:
            raise
        _err(f"unexpected {name}: {exc} (rerun with --debug or NEURONATLAS_DEBUG=1 for the traceback)")
        sys.exit(1)
    # typer >= 0.29 returns the exit code (130 on Ctrl-C) instead of raising
    if isinstance(rc, int) and rc != 0:
        if rc == 130:
            _err(_RESUME)
        sys.exit(rc)


if __name__ == "__main__":
    main()
