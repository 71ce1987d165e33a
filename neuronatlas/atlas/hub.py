"""One static page linking several exported atlases (e.g. the demo's runs): per run its model,
probe set, units, methods and how many unit pages carry images, each linking to its own export."""

from __future__ import annotations

import html
import json
import os
from pathlib import Path

from ..run import Run
from .export import MARKER


def write_hub(out: str | Path, atlases: dict[str, tuple[Run, Path]],
              title: str = "neuronatlas atlases") -> Path:
    """Write OUT/index.html linking each `name: (run, index.html of its export)`; links are relative
    so the folder opens from file:// and can be moved as a whole. Returns the page's path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, (run, page) in atlases.items():
        marker = Path(page).parent / MARKER
        info = json.loads(marker.read_text()) if marker.exists() else {}
        labels = run.labels() if run.path.joinpath("labels").exists() else None
        methods = sorted(labels["method"].unique()) if labels is not None and len(labels) else []
        link = os.path.relpath(Path(page).resolve(), out.resolve()).replace(os.sep, "/")
        cells = [f'<a href="{html.escape(link)}">{html.escape(name)}</a>',
                 f"<code>{html.escape(str(run.meta['model']['spec']))}</code>",
                 f"<code>{html.escape(str(run.meta['probe']['spec']))}</code>",
                 str(len(run.units)), html.escape(", ".join(run.layers)),
                 html.escape(", ".join(methods) or "none"),
                 str(info.get("image_units", "?"))]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    head = ["run", "model", "probe set", "units", "layers", "methods", "units with images"]
    page = (f"<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}"
            "</title><style>body{font-family:system-ui,sans-serif;margin:2em}table{border-collapse:"
            "collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}</style></head>"
            f"<body><h1>{html.escape(title)}</h1><table><tr>"
            + "".join(f"<th>{h}</th>" for h in head) + "</tr>\n" + "\n".join(rows)
            + "</table></body></html>\n")
    path = out / "index.html"
    path.write_text(page, encoding="utf-8")
    return path
