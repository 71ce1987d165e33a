"""`neuronatlas zoo ...`: the zoo's command group. `list` lives here; packages that own zoo models
attach their own commands to `zoo_app` (the world models' train / eval, wired in cli.py)."""

from __future__ import annotations

import json

import typer

from .zoo import entries

zoo_app = typer.Typer(add_completion=False, no_args_is_help=True,
                      help="The embedded model zoo: list it; train or evaluate the world models.")


@zoo_app.command("list")
def list_cmd(as_json: bool = typer.Option(False, "--json", help="One JSON object per line.")):
    """Every zoo:NAME: what it is, its input size and where its weights come from."""
    for e in entries():
        typer.echo(json.dumps(e.to_json()) if as_json else e.line())
