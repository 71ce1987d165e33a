"""The atlas web app: a read-only FastAPI server over one run.

    neuronatlas atlas RUN --serve [--host 127.0.0.1] [--port 8765]

Pages (/, /units, /unit/UNIT, /compare) are one HTML shell whose script asks the JSON API
(/api/...) for data; exemplar tiles (/tiles/...) are rendered on first request and cached under the
run (see tiles.py). Only GET routes exist. Paths from the URL are only ever resolved inside the
run directory or the package's static folder (`safe_join`); anything else is a 404. Requests whose
Host header is not a loopback name (or one allowed with --allow-host) get a 400 (hosts.py: DNS
rebinding).
"""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import UserError
from ..run import Run, open_run
from .hosts import HostCheck, allowed_hosts
from .index import ensure_index
from .lens_view import add_lens_routes, has_vlm_results, lens_only
from .pages import SERVER_URLS, STATIC, not_found_html, safe_join, shell_html, unit_detail
from .queries import AtlasIndex, CompareQuery, UnitNotFound, UnitQuery
from .tiles import TileRenderer

log = logging.getLogger("neuronatlas.atlas")


def create_app(run: Run | str | Path, renderer: TileRenderer | None = None,
               allow_hosts=allowed_hosts()):
    """The app over `run`; it answers only to the names in `allow_hosts` (hosts.py)."""
    if not isinstance(run, Run) and lens_only(run):
        app = _lens_app(Path(run))
        app.add_middleware(HostCheck, allowed=allow_hosts)
        return app
    run = open_run(run) if not isinstance(run, Run) else run
    path, _ = ensure_index(run)
    index = AtlasIndex(path)
    renderer = renderer or TileRenderer(run)
    n_images = int(run.meta["summary"]["n_images"])
    app = FastAPI(title=f"neuronatlas: {run.path.name}", docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.run, app.state.index, app.state.renderer = run, index, renderer
    config = {"mode": "server", "assets": "/static", "run": run.path.name}
    if has_vlm_results(run.path):
        config["lens"] = "/vlm/lens"
        add_lens_routes(app, run.path)

    def missing(request: Request, message: str):
        if request.url.path.startswith(("/api/", "/tiles/", "/files/", "/static/")):
            return JSONResponse({"error": message}, status_code=404)
        return HTMLResponse(not_found_html(message), status_code=404)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 404:
            return missing(request, f"there is nothing at {request.url.path}")
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)

    @app.exception_handler(UserError)
    async def user_error(request: Request, exc: UserError):
        return JSONResponse({"error": str(exc)}, status_code=400)

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception):  # one line, never a stack trace
        log.exception("atlas request failed: %s", request.url.path)
        return JSONResponse({"error": f"internal error: {type(exc).__name__}"}, status_code=500)

    app.add_middleware(HostCheck, allowed=allow_hosts)

    @app.middleware("http")
    async def headers(request: Request, call_next):
        response = await call_next(request)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    # -- pages ------------------------------------------------------------------------------------
    @app.get("/", response_class=HTMLResponse)
    @app.get("/units", response_class=HTMLResponse)
    @app.get("/compare", response_class=HTMLResponse)
    def page():
        return HTMLResponse(shell_html(config, f"neuronatlas: {run.path.name}"))

    @app.get("/unit/{unit:path}", response_class=HTMLResponse)
    def unit_page(unit: str, request: Request):
        try:
            index.uid_of(unit)
        except UnitNotFound:
            return missing(request, f"unit {unit!r} is not in this run")
        return HTMLResponse(shell_html(config, f"{unit} - neuronatlas"))

    # -- data -------------------------------------------------------------------------------------
    @app.get("/api/overview")
    def overview():
        return {**index.overview, "tiles_error": renderer.error}

    @app.get("/api/units")
    def units(request: Request):
        return index.list_units(UnitQuery.from_params(dict(request.query_params)))

    @app.get("/api/compare")
    def compare(request: Request):
        return index.compare(CompareQuery.from_params(dict(request.query_params)))

    @app.get("/api/unit/{unit:path}")
    def unit_data(unit: str, request: Request):
        try:
            return unit_detail(run, index, unit, SERVER_URLS,
                               images_available=renderer.error is None,
                               images_note=renderer.error)
        except UnitNotFound:
            return missing(request, f"unit {unit!r} is not in this run")

    # -- files: tiles, package assets, the run's own files ----------------------------------------
    def png(path: Path):
        return FileResponse(path, media_type="image/png",
                            headers={"Cache-Control": "public, max-age=86400"})

    @app.get("/tiles/plain/{name}")
    def plain_tile(name: str, request: Request):
        stem = name.removesuffix(".png")
        if not stem.isdigit() or not 0 <= int(stem) < n_images or not name.endswith(".png"):
            return missing(request, "no such image")
        i = int(stem)
        if not renderer.plain_path(i).exists():
            if renderer.error:
                return missing(request, renderer.error)
            owner = _exemplar_owner(index, run, i)
            if owner is None:
                return missing(request, "that image is no unit's exemplar")
            renderer.ensure([owner])
        return png(renderer.plain_path(i))

    @app.get("/tiles/heat/{image}/{unit:path}")
    def heat_tile(image: str, unit: str, request: Request):
        try:
            index.uid_of(unit)
        except UnitNotFound:
            return missing(request, f"unit {unit!r} is not in this run")
        if not image.isdigit() or int(image) not in renderer.exemplar_indices(unit):
            return missing(request, f"image {image} is not an exemplar of {unit}")
        if renderer.error:
            return missing(request, renderer.error)
        renderer.ensure([unit])
        path = renderer.heat_path(unit, int(image))
        return png(path) if path.exists() else missing(request, f"{unit} has no heatmap")

    @app.get("/static/{rel:path}")
    def static(rel: str, request: Request):
        path = safe_join(STATIC, rel)
        return FileResponse(path) if path else missing(request, "no such file")

    @app.get("/files/{rel:path}")
    def run_file(rel: str, request: Request):
        """Download one of the run's own files (tables, run.json); nothing outside the run."""
        path = safe_join(run.path, rel)
        return FileResponse(path) if path else missing(request, "no such file in this run")

    return app


def _lens_app(path: Path):
    """A directory with only a logit lens (no recording): the viewer alone, / leads to it."""
    from fastapi.responses import RedirectResponse

    app = FastAPI(title=f"neuronatlas: {path.name}", docs_url=None, redoc_url=None, openapi_url=None)
    add_lens_routes(app, path, atlas_home=None)

    @app.get("/")
    def home():
        return RedirectResponse("/vlm/lens")

    @app.get("/static/{rel:path}")
    def static(rel: str):
        p = safe_join(STATIC, rel)
        return FileResponse(p) if p else JSONResponse({"error": "no such file"}, status_code=404)

    return app


def _exemplar_owner(index: AtlasIndex, run: Run, image: int) -> str | None:
    """Some unit with `image` among its exemplars (so a plain tile is rendered with a unit)."""
    import numpy as np

    for layer in run.layers:
        for side in ("top", "bottom"):
            hits = np.flatnonzero((np.asarray(run.array(layer, f"{side}_index")) == image).any(1))
            if len(hits):
                return run.unit_id(layer, int(hits[0]))
    return None


def serve(run: Run | str | Path, host: str = "127.0.0.1", port: int = 8765,
          log_level: str = "warning", allow_hosts=()) -> None:
    """Serve the atlas; it answers to loopback names, `host` and the names in `allow_hosts`."""
    import uvicorn

    allowed = allowed_hosts(host, allow_hosts)
    app = create_app(run, allow_hosts=allowed)
    where = getattr(app.state, "run", None)
    print(f"neuronatlas atlas of {where.path if where else run} at http://{host}:{port}/  "
          f"(answers to {', '.join(allowed)}; Ctrl-C stops)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level)
