"""Export a blind study: exemplar grids under random ids, plus the mapping kept apart from them.

What an annotator receives (DIR) carries nothing that identifies a unit: each grid is `ID.png` where
ID is `secrets.token_hex` (80 bits, drawn from the OS, not derived from the unit, the run or the
seed), the PNG is composed with PIL (no title band, no tile captions, no values) and saved without
any text chunk or EXIF, the items are listed in an order drawn from the OS, and the tiles inside a
grid are shuffled too (so a ranked layout cannot tell real units from controls). The mapping
(id -> run, unit, layer, extreme, heatmap, control, images in tile order) goes to a separate JSON
file that must lie outside DIR.

Controls: `random-images` grids show k probe images drawn uniformly at random (with the heat map of
a random unit of the same layer, so they look like the real grids); they measure how often people
find a "feature" in images that share none (the reference's VLM summaries never said "no common
theme"). `mixed-exemplars` grids draw their images from the pooled top (or bottom) exemplars of all
units of the layer: they also control for top exemplars being unusual images in general.

The export plans everything first and writes the mapping with status "rendering"; grids are then
written one by one (atomically). Rerunning the same command after an interruption renders only the
missing grids.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..run import Run, open_run, write_json

MAPPING_FORMAT = "neuronatlas-study-mapping"
ID_BYTES = 10  # 80 random bits per id
CONTROL_KINDS = ("random-images", "mixed-exemplars")
EXTREMES = ("top", "bottom")


@dataclass(frozen=True)
class ExportConfig:
    units: tuple[str, ...] | None = None  # explicit unit ids; otherwise `per_layer` random units
    per_layer: int | None = None  # default 30 per recorded layer (the reference's choice)
    extremes: tuple[str, ...] = ("top",)
    controls: float = 0.2  # fraction of all exported grids that are controls
    control_kind: str = "random-images"
    seed: int | None = None  # unit selection and control images; None: drawn and recorded
    heatmap: bool = True
    k: int | None = None  # images per grid (default: all the run recorded)
    ncols: int = 5
    tile_px: int = 160

    def to_json(self) -> dict:
        d = asdict(self)
        d["units"] = list(self.units) if self.units is not None else None
        d["extremes"] = list(self.extremes)
        return d

    @classmethod
    def from_json(cls, d: dict) -> "ExportConfig":
        d = dict(d)
        d["units"] = tuple(d["units"]) if d.get("units") is not None else None
        d["extremes"] = tuple(d["extremes"])
        return cls(**d)


@dataclass
class Item:
    id: str
    unit: str  # the real unit; for a control, the unit whose heat map is drawn
    layer: str
    extreme: str | None  # top / bottom; None for random-images controls
    heatmap: bool
    control: bool
    control_kind: str | None
    tiles: list[int] = field(default_factory=list)  # probe indices in tile order
    image_ids: list[str] = field(default_factory=list)
    values: list[float] = field(default_factory=list)  # recorded activations, tile order


# -- checks ---------------------------------------------------------------------------------------
def _check_paths(out: Path, mapping: Path) -> None:
    out_r, map_r = out.resolve(), mapping.resolve()
    if map_r == out_r or out_r in map_r.parents:
        raise UserError(f"--mapping {mapping} is inside the annotators' folder {out}: put it "
                        f"outside (e.g. {out_r.parent / (out_r.name + '-mapping.json')}), or the "
                        f"study is not blind")
    if map_r.suffix.lower() != ".json":
        raise UserError(f"--mapping must be a .json file (got {mapping.name})")


def _check_config(run: Run, cfg: ExportConfig) -> None:
    if cfg.units is not None and cfg.per_layer is not None:
        raise UserError("give either --units or --per-layer, not both")
    if not 0 <= cfg.controls < 1:
        raise UserError(f"--controls is the fraction of control grids, in [0, 1) (got {cfg.controls})")
    if cfg.control_kind not in CONTROL_KINDS:
        raise UserError(f"unknown control kind '{cfg.control_kind}'; use one of "
                        f"{', '.join(CONTROL_KINDS)}")
    bad = [e for e in cfg.extremes if e not in EXTREMES]
    if bad or not cfg.extremes:
        raise UserError(f"--extremes takes top and/or bottom (got {','.join(cfg.extremes)})")
    if cfg.per_layer is not None and cfg.per_layer < 1:
        raise UserError(f"--per-layer must be at least 1 (got {cfg.per_layer})")
    if cfg.k is not None and cfg.k < 1:
        raise UserError(f"--k must be at least 1 (got {cfg.k})")
    if cfg.units is not None:
        if not cfg.units:
            raise UserError("--units is empty: list unit ids like LAYER:INDEX")
        for u in cfg.units:
            run.parse_unit(u)


# -- planning -------------------------------------------------------------------------------------
def _select_units(run: Run, cfg: ExportConfig, rng: np.random.Generator) -> list[str]:
    if cfg.units is not None:
        return list(dict.fromkeys(cfg.units))
    n = cfg.per_layer or 30
    units = []
    for layer, info in run.layers.items():
        picked = np.sort(rng.choice(info["n_units"], min(n, info["n_units"]), replace=False))
        units += [run.unit_id(layer, int(i)) for i in picked]
    return units


def _new_ids(n: int) -> list[str]:
    ids: set[str] = set()
    while len(ids) < n:  # a collision of 80-bit ids is practically impossible; guard anyway
        ids.add(secrets.token_hex(ID_BYTES))
    out = list(ids)
    secrets.SystemRandom().shuffle(out)
    return out


def _plan(run: Run, cfg: ExportConfig, seed: int) -> list[Item]:
    rng = np.random.default_rng(seed)
    osrand = secrets.SystemRandom()  # presentation order: never reproducible from the seed
    real: list[Item] = []
    for unit in _select_units(run, cfg, rng):
        layer, _ = run.parse_unit(unit)
        for extreme in cfg.extremes:
            table = run.topk(unit, cfg.k) if extreme == "top" else run.bottomk(unit, cfg.k)
            if table.empty:
                continue
            order = list(range(len(table)))
            osrand.shuffle(order)
            rows = table.iloc[order]
            real.append(Item("", unit, layer, extreme, cfg.heatmap, False, None,
                             [int(i) for i in rows["index"]], [str(i) for i in rows["image_id"]],
                             [float(v) for v in rows["value"]]))
    if not real:
        raise UserError(f"{run.path} has no recorded exemplars for the chosen units")
    n_controls = int(round(cfg.controls / (1 - cfg.controls) * len(real)))
    # Controls follow the layer / extreme mix of the real grids (drawn from them).
    hosts = rng.choice(len(real), n_controls, replace=n_controls > len(real))
    images = run.images
    usable = np.ones(len(images), bool)
    if "status" in images.columns:
        usable &= (images["status"] == "ok").to_numpy()
    if "duplicate_of" in images.columns:  # a de-duplicated copy would show one image twice
        usable &= (images["duplicate_of"] < 0).to_numpy()
    ok = images["index"].to_numpy()[usable]
    image_ids = run.images["image_id"].to_numpy()
    controls = []
    for h in hosts:
        like = real[int(h)]
        n_layer_units = run.layers[like.layer]["n_units"]
        host = run.unit_id(like.layer, int(rng.integers(n_layer_units)))
        k = len(like.tiles)
        if cfg.control_kind == "random-images":
            pool, extreme = ok, None
        else:
            arr = np.asarray(run.array(like.layer, f"{like.extreme}_index"))
            pool, extreme = np.unique(arr[arr >= 0]), like.extreme
        picked = [int(i) for i in rng.choice(pool, min(k, len(pool)), replace=False)]
        controls.append(Item("", host, like.layer, extreme, cfg.heatmap, True, cfg.control_kind,
                             picked, [str(image_ids[i]) for i in picked], []))
    items = real + controls
    for item, new_id in zip(items, _new_ids(len(items))):
        item.id = new_id
    osrand.shuffle(items)
    return items


# -- the mapping file -----------------------------------------------------------------------------
def _mapping_doc(run: Run, out: Path, cfg: ExportConfig, seed: int, items: list[Item],
                 status: str) -> dict:
    return {"format": MAPPING_FORMAT, "version": 1, "status": status,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "run": str(run.path.resolve()), "model": run.meta["key"]["model"]["spec"],
            "probe_fingerprint": run.meta["key"]["probe"]["fingerprint"],
            "out": str(out.resolve()), "seed": seed, "config": cfg.to_json(),
            "n_items": len(items), "n_controls": sum(i.control for i in items),
            "items": [asdict(i) for i in items]}


def read_mapping(path: str | Path) -> dict:
    """The mapping written by `export_study`, with `items` as `Item` objects."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no study mapping at {path}: pass the --mapping file written by "
                        f"`neuronatlas study export`")
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not valid JSON ({exc}); it should be the study mapping") from None
    if doc.get("format") != MAPPING_FORMAT:
        raise UserError(f"{path} is not a neuronatlas study mapping")
    doc["items"] = [Item(**i) for i in doc["items"]]
    return doc


def mapping_table(doc: dict):
    """One row per grid id: id, unit, layer, extreme, heatmap, control, control_kind, n_images."""
    import pandas as pd

    return pd.DataFrame([{"id": i.id, "unit": i.unit, "layer": i.layer, "extreme": i.extreme,
                          "heatmap": i.heatmap, "control": i.control,
                          "control_kind": i.control_kind, "n_images": len(i.tiles)}
                         for i in doc["items"]])


# -- export ---------------------------------------------------------------------------------------
def export_study(run: Run | str, out: str | Path, mapping: str | Path,
                 config: ExportConfig = ExportConfig(), target=None, probe=None,
                 show_progress: bool = True) -> dict:
    """Write the annotators' folder `out` and the mapping file; returns the mapping document."""
    from ..atlas.exemplars import grid_image
    from ..recording.exemplars import exemplars_at
    from ..recording.replay import probe_for_run, target_for_run
    from ..recording.progress import Progress
    from .form import write_form, write_readme, write_sheet

    run = run if isinstance(run, Run) else open_run(run)
    out, mapping = Path(out), Path(mapping)
    _check_paths(out, mapping)
    doc = _resume_or_plan(run, out, mapping, config)
    cfg = ExportConfig.from_json(doc["config"])
    items = doc["items"]
    target = target_for_run(run, target)
    probe = probe_for_run(run, probe)
    todo = [i for i in items if not (out / f"{i.id}.png").exists()]
    bar = Progress("rendering study grids", len(items), len(items) - len(todo), show_progress)
    try:
        for item in todo:
            tiles = exemplars_at(run, item.unit, item.tiles, target, probe)
            image = grid_image(tiles, heatmap=item.heatmap, ncols=cfg.ncols, tile_px=cfg.tile_px)
            _save_png(image, out / f"{item.id}.png")
            bar.advance(1)
    finally:
        bar.close()
    ids = [i.id for i in items]
    write_sheet(out / "sheet.csv", ids)
    write_form(out / "form.html", ids)
    write_readme(out / "README.txt")
    final = _mapping_doc(run, out, cfg, doc["seed"], items, "complete")
    final["created"] = doc["created"]
    write_json(mapping, final)
    return read_mapping(mapping)


def _resume_or_plan(run: Run, out: Path, mapping: Path, cfg: ExportConfig) -> dict:
    if mapping.exists():
        doc = read_mapping(mapping)
        if doc["status"] == "complete":
            raise UserError(f"{mapping} already holds a finished study export: choose another "
                            f"--mapping path (overwriting it would lose the only key to {doc['out']})")
        if doc["out"] != str(out.resolve()) or doc["run"] != str(run.path.resolve()):
            raise UserError(f"{mapping} belongs to an unfinished export of {doc['run']} into "
                            f"{doc['out']}: rerun that command to finish it, or choose another "
                            f"--mapping")
        if ExportConfig.from_json(doc["config"]) != cfg:
            raise UserError(f"{mapping} is an unfinished export with other options "
                            f"({json.dumps(doc['config'])}): rerun it with the same options")
        return doc
    if out.exists() and any(out.iterdir()):
        raise UserError(f"--out {out} is not empty: export a study into a new, empty folder")
    _check_config(run, cfg)
    seed = cfg.seed if cfg.seed is not None else secrets.randbits(32)
    items = _plan(run, cfg, seed)
    mapping.parent.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    doc = _mapping_doc(run, out, cfg, seed, items, "rendering")
    write_json(mapping, doc)
    return read_mapping(mapping)


def _save_png(image, path: Path) -> None:
    """A PNG with only IHDR/IDAT/IEND: a fresh PIL image saved without pnginfo carries no text
    chunk, EXIF, ICC profile or physical size."""
    from PIL import Image

    clean = Image.frombytes("RGB", image.size, image.convert("RGB").tobytes())
    tmp = path.with_name(path.name + ".tmp")
    clean.save(tmp, format="PNG", compress_level=1)  # fast; grids are photos, zlib gains little
    tmp.replace(path)
