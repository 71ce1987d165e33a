"""The static atlas: a folder that works opened from file:// (no server, no network).

    DIR/index.html              the same page shell and script as the server (mode "static")
    DIR/assets/app.js, app.css
    DIR/data/overview.js        NA.put("overview", {...}): browsers refuse fetch() on file://, so data
    DIR/data/rows-I.js          ships as scripts that hand it to the page. Rows: the unit list in
                                chunks of ROW_CHUNK units (search, filters and paging run in the page)
    DIR/data/detail-C.js        unit pages, DETAIL_CHUNK units per file, loaded when one is opened
    DIR/img/plain/INDEX.png     exemplar tiles copied from the run's tile cache (tiles.py)
    DIR/img/L{POS}/UNIT/INDEX.png

Images are exported for every unit of runs with up to AUTO_IMAGE_UNITS units; for bigger runs for
the AUTO_IMAGE_UNITS units with the widest activation spread unless `images="all"` (rendering
re-runs the model on every exemplar), and always for the units on the unit list's first FIRST_PAGES
pages (all units, and each layer's list); any other unit's page says how to get its images.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

from ..errors import UserError
from ..run import Run, open_run
from .index import ensure_index
from .lens_view import export_lens, has_vlm_results, lens_only
from .pages import EXPORT_URLS, STATIC, shell_html, unit_detail
from .queries import AtlasIndex, UnitQuery
from .tiles import TileRenderer

ROW_CHUNK = 5000
DETAIL_CHUNK = 100
AUTO_IMAGE_UNITS = 2000
FIRST_PAGES = 2  # pages of the unit list whose units always get images (reachable_units)
MARKER = ".neuronatlas-export"


def _clean(obj):
    if isinstance(obj, float):
        return None if math.isnan(obj) or math.isinf(obj) else obj
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def _write_js(path: Path, key: str, value) -> None:
    text = json.dumps(_clean(value), separators=(",", ":"), allow_nan=False, default=str)
    path.write_text(f"NA.put({json.dumps(key)},{text});\n", encoding="utf-8")


def reachable_units(index: AtlasIndex, pages: int = FIRST_PAGES) -> list[str]:
    """The units on the first `pages` pages of the unit list in its default order and page size:
    the list of all units and each layer's list (the overview links to both)."""
    n = pages * UnitQuery.per_page
    units = [r[0] for r in index.con.execute("SELECT unit FROM units ORDER BY uid LIMIT ?", (n,))]
    for (layer,) in index.con.execute("SELECT DISTINCT layer FROM units").fetchall():
        units += [r[0] for r in index.con.execute(
            "SELECT unit FROM units WHERE layer = ? ORDER BY uid LIMIT ?", (layer, n))]
    return list(dict.fromkeys(units))


def image_units(run: Run, index: AtlasIndex, images, first_pages: int = FIRST_PAGES) -> list[str]:
    """Which units get exemplar images: 'all', 'none', 'auto' or a number (widest spread first).
    Short of 'all', the units a person reaches from the unit list's first pages
    (`reachable_units`) get them too, so browsing from the start never meets an empty page."""
    n = index.overview["n_units"]
    if images == "none" or images == 0:
        return []
    if images == "all" or (images == "auto" and n <= AUTO_IMAGE_UNITS):
        return [r[0] for r in index.con.execute("SELECT unit FROM units ORDER BY uid")]
    try:
        limit = AUTO_IMAGE_UNITS if images == "auto" else int(images)
    except (TypeError, ValueError):
        raise UserError(f"--images must be all, none, auto or a number (got {images!r})") from None
    widest = [r[0] for r in index.con.execute(
        "SELECT unit FROM units ORDER BY (std IS NULL), std DESC, uid LIMIT ?", (limit,))]
    return list(dict.fromkeys(widest + reachable_units(index, first_pages)))


def missing_images_note(run: Run) -> str:
    """What a unit page without exported images says: how to get them."""
    return (f"images were not exported for this unit: export again with --images all "
            f"(neuronatlas atlas {run.path} --export DIR --images all) or serve the run "
            f"(neuronatlas atlas {run.path} --serve), which renders any unit's images")


def export(run: Run | str | Path, out: str | Path, images="auto", progress: bool = True,
           renderer: TileRenderer | None = None, first_pages: int = FIRST_PAGES) -> Path:
    """Write the static atlas of `run` into `out`; returns the path of its index.html.
    `first_pages`: pages of the unit list whose units get images whatever `images` says.
    A run with a logit lens gets the lens viewer in OUT/vlm/ (a lens-only directory: only that)."""
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not (out / MARKER).exists():
        raise UserError(f"{out} exists and is not an atlas export: choose an empty or new directory")
    if not isinstance(run, Run) and lens_only(run):
        out.mkdir(parents=True, exist_ok=True)
        page = export_lens(Path(run), out / "vlm", atlas_home=None, progress=progress)
        (out / MARKER).write_text(json.dumps({"run": str(run), "lens": True}))
        return page
    run = open_run(run) if not isinstance(run, Run) else run
    if out.resolve() == run.path.resolve() or run.path.resolve() in out.resolve().parents:
        raise UserError(f"export the atlas outside the run directory (got {out})")
    for sub in ("data", "img"):
        if (out / sub).exists():
            shutil.rmtree(out / sub)  # a previous export: replaced whole, never mixed
    (out / "data").mkdir(parents=True)
    (out / "assets").mkdir(exist_ok=True)
    index = AtlasIndex(ensure_index(run)[0])
    renderer = renderer or TileRenderer(run)

    with_images = image_units(run, index, images, first_pages)
    if with_images:
        try:
            renderer.ensure(with_images, progress=progress)
        except UserError as exc:  # model cannot be rebuilt: export everything else
            print(f"warning: {exc}; exporting without exemplar images")
            with_images = []
    has_images = set(with_images)

    for name in ("app.js", "app.css"):
        shutil.copyfile(STATIC / name, out / "assets" / name)
    config = {"mode": "static", "assets": "assets", "run": run.path.name}
    if has_vlm_results(run.path):
        config["lens"] = "vlm/index.html"
        export_lens(run.path, out / "vlm", progress=progress)
    (out / "index.html").write_text(shell_html(config, f"neuronatlas: {run.path.name}"),
                                    encoding="utf-8")

    n_chunks = 0
    for n_chunks, rows in enumerate(index.all_rows(ROW_CHUNK), start=1):
        _write_js(out / "data" / f"rows-{n_chunks - 1}.js", f"rows-{n_chunks - 1}", rows)
    overview = {**index.overview, "path": str(run.path), "tiles_error": renderer.error,
                "export": {"row_chunks": n_chunks, "detail_chunk": DETAIL_CHUNK,
                           "image_units": len(has_images)}}
    _write_js(out / "data" / "overview.js", "overview", overview)

    units = [r[0] for r in index.con.execute("SELECT unit FROM units ORDER BY uid")]
    if has_images:
        (out / "img" / "plain").mkdir(parents=True)
    made: set = set()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(units), desc="atlas pages", unit="unit")
    for c in range(0, len(units), DETAIL_CHUNK):
        chunk = {}
        for u in units[c:c + DETAIL_CHUNK]:
            d = unit_detail(run, index, u, EXPORT_URLS, images_available=u in has_images,
                            images_note=renderer.error or missing_images_note(run))
            chunk[u] = d
            if u in has_images:
                _copy_tiles(renderer, u, d, out, made)
        _write_js(out / "data" / f"detail-{c // DETAIL_CHUNK}.js", f"detail-{c // DETAIL_CHUNK}",
                  chunk)
        if bar is not None:
            bar.update(len(chunk))
    if bar is not None:
        bar.close()
    (out / MARKER).write_text(json.dumps({"run": str(run.path), "units": len(units),
                                          "image_units": len(has_images)}))
    return out / "index.html"


def _place(src: Path, dst: Path) -> None:
    """Hard-link a cached tile into the export (no copy), or copy it across file systems."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _copy_tiles(renderer: TileRenderer, unit: str, detail: dict, out: Path, made: set) -> None:
    for t in detail["top"] + detail["bottom"]:
        plain = out / t["plain"]
        if plain not in made:
            _place(renderer.plain_path(t["index"]), plain)
            made.add(plain)
        if t["heat"]:
            heat = out / t["heat"]
            if heat.parent not in made:
                heat.parent.mkdir(parents=True, exist_ok=True)
                made.add(heat.parent)
            _place(renderer.heat_path(unit, t["index"]), heat)
