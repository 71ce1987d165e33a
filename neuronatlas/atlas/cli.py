"""`neuronatlas atlas RUN --serve | --export DIR`: browse a run's units, exemplars, labels, scores."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import UserError


def atlas(
    run: Path = typer.Argument(..., help="Run directory (recorded, optionally described and "
                                          "evaluated)."),
    serve: bool = typer.Option(False, "--serve", help="Start the web app (read-only)."),
    host: str = typer.Option("127.0.0.1", help="Address to bind; 0.0.0.0 exposes the atlas to "
                                               "your network."),
    port: int = typer.Option(8765, help="Port of the web app."),
    allow_host: Optional[list[str]] = typer.Option(
        None, "--allow-host", help="Also answer to this host name (repeat, or comma-separate; "
                                   "'*.example.org' for subdomains). By default the server "
                                   "answers only to loopback names and --host."),
    export: Optional[Path] = typer.Option(None, "--export", help="Write a static site into DIR "
                                                                 "(opens from file://)."),
    images: str = typer.Option("auto", help="Units whose exemplar images are exported: auto "
                                            "(all up to 2000 units, else the 2000 widest), all, "
                                            "none or a number."),
):
    """Browse a run: overview, searchable unit list, unit pages with exemplars and heatmaps,
    and a comparison of two methods."""
    if serve == (export is not None):
        raise UserError("choose one of --serve or --export DIR")
    if export is not None:
        from .export import export as do_export

        page = do_export(run, export, images=images)
        typer.echo(f"atlas written to {export}; open file://{page.resolve()}")
        return
    try:
        from .server import serve as do_serve
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise UserError("the atlas server needs fastapi and uvicorn: pip install "
                        "'neuronatlas[atlas]'") from None
    do_serve(run, host=host, port=port, allow_hosts=allow_host or ())
