"""Shared by server and export: the page shell, the guard for paths taken from URLs, and what a
unit page shows (the index's labels and scores plus the run's exemplars, image classes and
histogram)."""

from __future__ import annotations

import json
import weakref
from pathlib import Path

from urllib.parse import quote

import numpy as np

from ..run import Run
from .queries import AtlasIndex

STATIC = Path(__file__).parent / "static"


def safe_join(root: Path, relative: str) -> Path | None:
    """root/relative if it names an existing file inside root after resolving '..' and symlinks;
    None otherwise (absolute paths, traversal, links that lead out, directories, missing files)."""
    if not relative or "\0" in relative or relative.startswith(("/", "\\")) or ":" in relative[:3]:
        return None
    root = root.resolve()
    try:
        path = (root / relative).resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if not path.is_relative_to(root) or not path.is_file():
        return None
    return path


def shell_html(config: dict, title: str) -> str:
    """The one page every route serves; `config` tells the script where its data comes from."""
    html = (STATIC / "index.html").read_text()
    return (html.replace("{{TITLE}}", _escape(title))
            .replace("{{CONFIG}}", json.dumps(config).replace("</", "<\\/"))
            .replace("{{ASSETS}}", config.get("assets", "static")))


def _escape(text: str) -> str:
    return (str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;"))


def not_found_html(message: str, assets: str = "/static") -> str:
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Not found - neuronatlas</title><link rel="icon" href="data:,"><link rel="stylesheet" href="{assets}/app.css"></head>
<body><header class="top"><a class="brand" href="/">neuronatlas</a></header>
<main class="page notfound"><h1>404</h1><p>{_escape(message)}</p>
<p><a href="/units">Browse the units</a> or go to the <a href="/">run overview</a>.</p></main>
</body></html>"""


class UrlScheme:
    """Where the browser finds tiles: the server's routes or the export's files."""

    def __init__(self, plain, heat):
        self.plain, self.heat = plain, heat


SERVER_URLS = UrlScheme(plain=lambda i: f"/tiles/plain/{i}.png",
                        heat=lambda unit, pos, ui, i: f"/tiles/heat/{i}/{quote(unit, safe='')}")
EXPORT_URLS = UrlScheme(plain=lambda i: f"img/plain/{i}.png",
                        heat=lambda unit, pos, ui, i: f"img/L{pos}/{ui}/{i}.png")


def has_heat(run: Run, layer: str) -> bool:
    return run.layers[layer]["layout"].get("grid") is not None


def unit_detail(run: Run, index: AtlasIndex, unit: str, urls: UrlScheme,
                images_available: bool = True, images_note: str | None = None) -> dict:
    detail = index.unit(unit)
    layer, ui = run.parse_unit(unit)
    pos = list(run.layers).index(layer)
    heat = has_heat(run, layer)
    images = _image_table(run)
    for side in ("top", "bottom"):
        table = run.topk(unit) if side == "top" else run.bottomk(unit)
        detail[side] = [{
            "rank": int(r.rank), "index": int(r.index), "image_id": str(r.image_id),
            "class": images.get(int(r.index)), "value": float(r.value),
            "plain": urls.plain(int(r.index)) if images_available else None,
            "heat": urls.heat(unit, pos, ui, int(r.index)) if images_available and heat else None,
        } for r in table.itertuples(index=False)]
    edges, counts = run.histogram(unit)
    nz = np.flatnonzero(counts)
    lo, hi = (int(nz[0]), int(nz[-1]) + 1) if len(nz) else (0, 0)
    detail["histogram"] = {"edges": [float(e) for e in edges[lo:hi + 1]],
                           "counts": [int(c) for c in counts[lo:hi]]}
    detail["has_heat"] = heat
    detail["images_available"] = images_available
    detail["images_note"] = images_note
    detail["pooling"] = run.layers[layer]["pooling"]
    return detail


_CLASSES: "weakref.WeakKeyDictionary[Run, dict]" = weakref.WeakKeyDictionary()


def _image_table(run: Run) -> dict:
    """probe index -> the image's class label (None when unlabelled), cached per open run."""
    if run not in _CLASSES:
        im = run.images
        _CLASSES[run] = {int(i): (None if c is None or (isinstance(c, float) and np.isnan(c))
                                  else str(c)) for i, c in zip(im["index"], im["label"])}
    return _CLASSES[run]
