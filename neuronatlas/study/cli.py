"""`neuronatlas study export | import | report`."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

study_app = typer.Typer(no_args_is_help=True, add_completion=False)


@study_app.command("export")
def export_cmd(
    run: Path = typer.Argument(..., help="Run directory."),
    out: Path = typer.Option(..., help="New, empty folder to give the annotators."),
    mapping: Path = typer.Option(..., help="Where to write the id -> unit mapping (.json); must "
                                           "be outside --out."),
    units: Optional[str] = typer.Option(None, help="Comma-separated unit ids (LAYER:INDEX)."),
    per_layer: Optional[int] = typer.Option(None, help="Random units per recorded layer "
                                                       "(default 30)."),
    extremes: str = typer.Option("top", help="top, bottom or top,bottom: one grid each."),
    controls: float = typer.Option(0.2, help="Fraction of grids that are controls."),
    control_kind: str = typer.Option("random-images", help="random-images or mixed-exemplars."),
    seed: Optional[int] = typer.Option(None, help="Seed for the unit and control choice (ids and "
                                                  "order are always drawn from the OS)."),
    heatmap: bool = typer.Option(True, help="Overlay the unit's heat map on each image."),
    k: Optional[int] = typer.Option(None, help="Images per grid (default: all recorded)."),
    data: Optional[str] = typer.Option(None, help="Probe set, if it moved since recording."),
):
    """Export exemplar grids under random ids for a blind study, with the mapping kept apart."""
    from .export import ExportConfig, export_study

    cfg = ExportConfig(units=tuple(u.strip() for u in units.split(",") if u.strip())
                       if units else None, per_layer=per_layer,
                       extremes=tuple(e.strip() for e in extremes.split(",")), controls=controls,
                       control_kind=control_kind, seed=seed, heatmap=heatmap, k=k)
    doc = export_study(run, out, mapping, cfg, probe=data)
    typer.echo(f"wrote {doc['n_items']} grids ({doc['n_controls']} controls), sheet.csv, form.html "
               f"and README.txt to {out}; the mapping is in {mapping} (keep it from annotators)")


@study_app.command("import")
def import_cmd(
    responses: List[Path] = typer.Argument(..., help="Response files (.csv / .json) or folders."),
    mapping: Path = typer.Option(..., help="The mapping written by `study export`."),
    out: Path = typer.Option(..., help="Study folder to write."),
):
    """Validate the annotators' responses and join them with the mapping."""
    from .responses import import_responses

    df = import_responses(responses, mapping, out)
    typer.echo(f"imported {len(df)} answers from {df['annotator'].nunique()} annotators into {out}")


@study_app.command("report")
def report_cmd(
    study: Path = typer.Argument(..., help="Study folder written by `study import`."),
    run: Optional[Path] = typer.Option(None, help="Run directory (default: the mapping's)."),
    embedder: str = typer.Option("zoo:minilm", help="Text embedder for label agreement."),
):
    """Agreement statistics, per-layer rates with plots, controls, humans vs methods."""
    from .report import study_report

    tables = study_report(study, run=run, embedder=embedder)
    a = tables["agreement"].set_index("field")
    typer.echo(f"interpretable: kappa {a.loc['interpretable', 'kappa']:.3f}, alpha "
               f"{a.loc['interpretable', 'alpha_nominal']:.3f}; report in {study / 'report'}")
