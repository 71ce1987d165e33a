"""The logit-lens viewer of the atlas (issue 14): one page per image and an index page, served by the
atlas app and written by the static export, from RUN/vlm/logit-lens/ (neuronatlas.run.vlm).

Per image: a tokens x layers table (rows: the prompt's positions, image tokens labelled
<IMG001>..; columns: layer 0 = the embedding output, then every decoder layer), each cell the top-1
token and its probability, the top-k in its tooltip. Hovering any cell, at any layer, highlights the
token's patch on the image; a click locks the highlight (click again to release). Hovering a patch
highlights its row. The index page searches image ids and the last layer's text and pages the list;
below it, every finished `vlm ablate` / `vlm knockout` experiment of the run: its plot and table.

Served: /vlm/lens (index), /vlm/lens/INDEX (image), JSON at /api/vlm/lens[/INDEX], images at
/vlm/lens-image/INDEX.png. Exported: DIR/vlm/index.html (hash routes #/INDEX), DIR/vlm/data/*.js
(NA.put scripts: browsers refuse fetch() on file://), DIR/vlm/img/INDEX.png.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..errors import UserError
from ..run import is_run
from ..run.vlm import LensStore, finished_experiments, has_logit_lens, has_vlm_results
from .pages import STATIC, _escape

__all__ = ["has_logit_lens", "has_vlm_results", "experiments", "lens_only", "lens_index", "lens_image", "lens_shell", "add_lens_routes",
           "export_lens"]


def lens_only(run_path) -> bool:
    """A directory holding vlm results (a logit lens, ablations, knockouts) but no recording."""
    return not is_run(Path(run_path)) and has_vlm_results(run_path)


def _records(df) -> list[dict]:
    import math

    rows = df.to_dict("records")
    return [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()}
            for r in rows]


def experiments(run_path, png_url) -> list[dict]:
    """The finished ablation / knockout experiments: their plot and result table."""
    out = []
    for e in finished_experiments(run_path):
        meta = json.loads(e.meta_path.read_text())
        table = e.table("curves" if e.kind == "ablation" else "summary")
        plot = "curves" if e.kind == "ablation" else "profile"
        out.append({"kind": e.kind, "name": e.name, "model": meta["key"]["model"],
                    "data": meta.get("data_spec"), "plot": png_url(e.kind, e.name) if
                    e.plot_path(plot).exists() else None, "columns": list(table.columns),
                    "rows": _records(table)})
    return out


def experiment_plot(run_path, kind: str, name: str) -> Path | None:
    for e in finished_experiments(run_path):
        if e.kind == kind and e.name == name:
            p = e.plot_path("curves" if kind == "ablation" else "profile")
            return p if p.exists() else None
    return None


def lens_index(store: LensStore, png_url=lambda kind, name: None) -> dict:
    exps = experiments(store.run, png_url)
    if not has_logit_lens(store.run):
        return {"model": exps[0]["model"] if exps else "", "data": None, "n_layers": 0, "top_k": 0,
                "status": "none", "images": [], "experiments": exps}
    meta = store.meta()
    images = store.images()
    return {"model": meta["key"]["model"], "data": meta.get("data_spec"), "n_layers": meta["n_layers"],
            "top_k": meta["key"]["top_k"], "status": meta.get("status"),
            "images": images.to_dict("records"), "experiments": exps}


def lens_image(store: LensStore, index: int, image_url: str) -> dict | None:
    """What one image's page shows: its tokens, the top-k per (layer, position), the geometry."""
    df = store.image_table(index)
    if df is None:
        return None
    meta = store.meta()
    df = df.sort_values(["layer", "position", "rank"])
    n_layers, k = int(df.layer.max()) + 1, int(df["rank"].max()) + 1
    first = df[(df.layer == 0) & (df["rank"] == 0)].sort_values("position")
    tokens = []
    for r in first.itertuples(index=False):
        if r.kind == "image":  # numbered by grid cell (row-major, from 1), as the reference does
            label = f"<IMG{r.patch + 1:03d}>" if r.patch >= 0 else "<IMG-CLS>"
        else:
            label = str(r.input_token)
        tokens.append({"position": int(r.position), "kind": r.kind, "patch": int(r.patch),
                       "label": label})
    n_pos = len(tokens)
    vocab: dict[str, int] = {}
    tok_idx = [vocab.setdefault(str(t), len(vocab)) for t in df.token]
    # cells[layer][position] = [[token index...], [prob...]] (rank order)
    cells = [[[[], []] for _ in range(n_pos)] for _ in range(n_layers)]
    for layer, pos, ti, p in zip(df.layer.tolist(), df.position.tolist(), tok_idx, df.prob.tolist()):
        cell = cells[layer][pos]
        cell[0].append(ti)
        cell[1].append(round(float(p), 5))
    return {"index": int(index), "image_id": str(df.image_id.iloc[0]), "model": meta["key"]["model"],
            "grid": int(meta["grid"]), "has_cls": bool(meta["has_cls"]), "n_layers": n_layers,
            "top_k": k, "tokens": tokens, "vocab": list(vocab), "cells": cells, "image": image_url}


def lens_shell(config: dict, title: str) -> str:
    html = (STATIC / "lens.html").read_text()
    return (html.replace("{{TITLE}}", _escape(title))
            .replace("{{CONFIG}}", json.dumps(config).replace("</", "<\\/"))
            .replace("{{ASSETS}}", config.get("assets", "/static")))


def add_lens_routes(app, run_path: Path, atlas_home: str | None = "/") -> None:
    """The viewer's routes on the atlas app (FastAPI) of `run_path`."""
    from fastapi.responses import FileResponse, HTMLResponse, JSONResponse

    store = LensStore(run_path)
    config = {"mode": "server", "assets": "/static", "run": Path(run_path).name, "home": atlas_home}
    cache: dict = {}

    def index_data():
        key = tuple(p.stat().st_mtime_ns for p in store.parts()) + tuple(
            e.meta_path.stat().st_mtime_ns for e in finished_experiments(run_path))
        if cache.get("key") != key:  # a lens still being written shows its new parts
            cache.update(key=key, value=lens_index(store, lambda k, n: f"/vlm/experiment-plot/{k}/{n}.png"))
        return cache["value"]

    @app.get("/vlm/lens", response_class=HTMLResponse)
    def lens_home():
        return HTMLResponse(lens_shell(config, f"logit lens - {Path(run_path).name}"))

    @app.get("/vlm/lens/{index}", response_class=HTMLResponse)
    def lens_page(index: str):
        if not index.isdigit() or not store.image_path(int(index)).exists():
            return HTMLResponse(f"<p>no logit lens of image {_escape(index)} in this run</p>",
                                status_code=404)
        return HTMLResponse(lens_shell(config, f"logit lens of image {index}"))

    @app.get("/api/vlm/lens")
    def lens_api_index():
        return index_data()

    @app.get("/api/vlm/lens/{index}")
    def lens_api_image(index: str):
        data = lens_image(store, int(index), f"/vlm/lens-image/{int(index)}.png") \
            if index.isdigit() else None
        if data is None:
            return JSONResponse({"error": f"no logit lens of image {index} in this run"}, 404)
        return data

    @app.get("/vlm/experiment-plot/{kind}/{name}")
    def experiment_png(kind: str, name: str):
        path = experiment_plot(run_path, kind, name.removesuffix(".png")) \
            if name.endswith(".png") else None
        if path is None:
            return JSONResponse({"error": "no such plot"}, 404)
        return FileResponse(path, media_type="image/png")

    @app.get("/vlm/lens-image/{name}")
    def lens_png(name: str):
        stem = name.removesuffix(".png")
        path = store.image_path(int(stem)) if stem.isdigit() and name.endswith(".png") else None
        if path is None or not path.exists():
            return JSONResponse({"error": "no such image"}, 404)
        return FileResponse(path, media_type="image/png")


def _write_js(path: Path, key: str, value) -> None:
    text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    path.write_text(f"NA.put({json.dumps(key)},{text});\n", encoding="utf-8")


def export_lens(run_path: Path, out: Path, atlas_home: str | None = "../index.html",
                progress: bool = False) -> Path:
    """Write the viewer into `out` (opens from file://); returns its index.html."""
    store = LensStore(run_path)
    if not has_vlm_results(run_path):
        raise UserError(f"{run_path} has no logit lens, ablation or knockout to export")
    for sub in ("data", "img"):
        if (out / sub).exists():
            shutil.rmtree(out / sub)
    (out / "data").mkdir(parents=True)
    (out / "img").mkdir()
    (out / "assets").mkdir(exist_ok=True)
    for name in ("lens.js", "lens.css", "app.css"):
        shutil.copyfile(STATIC / name, out / "assets" / name)
    config = {"mode": "static", "assets": "assets", "run": Path(run_path).name, "home": atlas_home}
    (out / "index.html").write_text(lens_shell(config, f"logit lens - {Path(run_path).name}"),
                                    encoding="utf-8")
    idx = lens_index(store, lambda k, n: f"img/{k}-{n}.png")
    for e in idx["experiments"]:
        if e["plot"]:
            shutil.copyfile(experiment_plot(run_path, e["kind"], e["name"]), out / e["plot"])
    _write_js(out / "data" / "index.js", "index", idx)
    rows = idx["images"]
    if progress:
        from tqdm.auto import tqdm

        rows = tqdm(rows, desc="logit-lens pages", unit="image")
    for r in rows:
        i = int(r["index"])
        shutil.copyfile(store.image_path(i), out / "img" / f"{i}.png")
        _write_js(out / "data" / f"image-{i}.js", f"image-{i}", lens_image(store, i, f"img/{i}.png"))
    return out / "index.html"
