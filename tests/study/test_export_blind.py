"""A blind export: nothing in the annotators' folder leads back to a unit."""

import csv
import hashlib
import json
import re
import struct

import numpy as np
import pytest
from PIL import Image

from neuronatlas.errors import UserError
from neuronatlas.study import ExportConfig, export_study, read_mapping
from neuronatlas.study.export import ID_BYTES, _plan, mapping_table

ID_RE = re.compile(r"[0-9a-f]{%d}" % (2 * ID_BYTES))
TILE, GAP, NCOLS = 96, 4, 5  # the fixture exports use tile_px=96


def png_chunks(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, kinds = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kinds.append(data[pos + 4:pos + 8].decode("ascii"))
        pos += 12 + length
    return kinds


def candidate_strings(item):
    """Strings an attacker could hash to guess ids (the reference hashed
    'neuron_{i}_layer_{L}_{extreme}_{strategy}_{hook}')."""
    layer, idx = item.unit.rsplit(":", 1)
    base = [item.unit, layer, idx, f"{item.unit}:{item.extreme}", f"{item.unit}_{item.extreme}"]
    for pooling in ("mean", "max", "avg", "max_cls"):
        base.append(f"neuron_{idx}_layer_{layer}_{item.extreme}_{pooling}_{layer}")
        base.append(f"neuron_{idx}_layer_{layer}_{item.extreme}_{pooling}")
    return base


def test_ids_are_random_unique_and_not_hashes_of_unit_strings(exports):
    a, b = exports["A"], exports["B"]
    ids_a, ids_b = [i.id for i in a["items"]], [i.id for i in b["items"]]
    assert all(ID_RE.fullmatch(i) for i in ids_a + ids_b)
    assert len(set(ids_a)) == len(ids_a) and not set(ids_a) & set(ids_b)
    algos = sorted(h for h in hashlib.algorithms_guaranteed if not h.startswith("shake"))
    for doc in (a, b):
        for item in doc["items"]:
            for s in candidate_strings(item):
                for algo in algos:
                    assert item.id not in hashlib.new(algo, s.encode()).hexdigest(), (algo, s)


def test_seed_fixes_the_units_but_never_the_ids_or_order(study_run):
    cfg = ExportConfig(per_layer=12, controls=0.2)
    p1, p2 = _plan(study_run, cfg, 5), _plan(study_run, cfg, 5)
    real = lambda p: sorted(i.unit for i in p if not i.control)  # noqa: E731
    assert real(p1) == real(p2)  # the seed chooses the units (recorded in the mapping)
    assert not {i.id for i in p1} & {i.id for i in p2}
    assert [i.unit for i in p1] != [i.unit for i in p2]  # presentation order from the OS
    assert real(_plan(study_run, cfg, 6)) != real(p1)


def test_folder_holds_only_id_named_files(exports):
    for doc in exports.values():
        ids = {i.id for i in doc["items"]}
        names = {p.name for p in doc["dir"].iterdir()}
        assert names == {f"{i}.png" for i in ids} | {"sheet.csv", "form.html", "README.txt"}
        assert doc["mapping_path"].parent != doc["dir"]
        assert doc["dir"].resolve() not in doc["mapping_path"].resolve().parents


def test_sheet_and_form_contain_only_ids(exports, study_run):
    texts = {}
    for name, doc in exports.items():
        ids = [i.id for i in doc["items"]]
        with open(doc["dir"] / "sheet.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        assert sorted(r["id"] for r in rows) == sorted(ids)
        for r in rows:
            assert r["image"] == r["id"] + ".png"
            assert all(v == "" for k, v in r.items() if k not in ("id", "image"))
        page = (doc["dir"] / "form.html").read_text()
        assert sorted(set(ID_RE.findall(page))) == sorted(ids)
        texts[name] = [ID_RE.sub("ID", (doc["dir"] / f).read_text())
                       for f in ("sheet.csv", "form.html", "README.txt")]
        for text in texts[name]:
            assert "units:" not in text and not re.search(r"\bunits\b", text)
    # Two exports of different units, with and without heat maps, differ only in their ids:
    # so nothing unit-specific can be in these files. (The sheet lists ids in their random order.)
    assert texts["A"] == texts["B"]


def test_pngs_have_no_metadata_and_no_title_band(exports):
    for doc in exports.values():
        for item in doc["items"]:
            path = doc["dir"] / f"{item.id}.png"
            kinds = png_chunks(path)
            assert kinds[0] == "IHDR" and kinds[-1] == "IEND"
            assert set(kinds) == {"IHDR", "IDAT", "IEND"}, kinds  # no tEXt/iTXt/zTXt/eXIf/pHYs
            with Image.open(path) as im:
                assert im.info == {} and len(im.getexif()) == 0
                n = len(item.tiles)
                rows = (n + NCOLS - 1) // NCOLS
                assert im.size == (NCOLS * TILE + (NCOLS + 1) * GAP, rows * TILE + (rows + 1) * GAP)
                px = np.asarray(im.convert("RGB"))
            # the top and left margins are just the background: no title band anywhere
            assert (px[:GAP] == 255).all() and (px[:, :GAP] == 255).all()
            for r in range(rows):
                y = GAP + r * (TILE + GAP) + TILE
                assert (px[y:y + GAP] == 255).all()


def tile(px, t):
    r, c = divmod(t, NCOLS)
    y, x = GAP + r * (TILE + GAP), GAP + c * (TILE + GAP)
    return px[y:y + TILE, x:x + TILE]


def test_tiles_are_exactly_the_mapped_images_and_values_align(exports, study_run):
    """Every pixel of a plain grid is a mapped probe image (so no text is rendered), tile t is
    image t of the mapping (the reference's titles drifted from their images), and the mapped
    values are the recorded activations of those images."""
    from neuronatlas.recording.replay import probe_for_run, target_for_run

    doc = exports["A"]
    target = target_for_run(study_run)
    probe = probe_for_run(study_run)
    geometry = target.preprocess.geometry()
    acts = study_run.acts("units")
    ids = study_run.images["image_id"].to_numpy()
    for item in doc["items"][:10]:
        with Image.open(doc["dir"] / f"{item.id}.png") as im:
            px = np.asarray(im.convert("RGB"))
        for t, index in enumerate(item.tiles):
            want = geometry(probe.read_image(index).convert("RGB")).resize((TILE, TILE),
                                                                            Image.BICUBIC)
            np.testing.assert_array_equal(tile(px, t), np.asarray(want))
            assert item.image_ids[t] == ids[index]
        if not item.control:
            _, u = study_run.parse_unit(item.unit)
            top = study_run.topk(item.unit)
            assert sorted(item.tiles) == sorted(top["index"])
            np.testing.assert_allclose(item.values, acts[item.tiles, u], rtol=1e-6)


def test_heatmap_grids_are_the_images_plus_a_colormap_only(exports, study_run):
    """With heat maps, every tile pixel is (1 - a) * image + a * (a colour of the colormap): the
    residual lies on the inferno curve, so nothing else (no text, no marks) was drawn."""
    from matplotlib import colormaps

    from neuronatlas.recording.replay import probe_for_run, target_for_run

    alpha = 0.45
    lut = colormaps["inferno"](np.linspace(0, 1, 256))[:, :3] * 255.0
    doc = exports["B"]
    assert doc["config"]["heatmap"] and doc["config"]["tile_px"] == TILE
    geometry = target_for_run(study_run).preprocess.geometry()
    probe = probe_for_run(study_run)
    for item in [i for i in doc["items"] if i.heatmap][:3]:
        with Image.open(doc["dir"] / f"{item.id}.png") as im:
            px = np.asarray(im.convert("RGB")).astype(float)
        spread = []
        for t, index in enumerate(item.tiles):
            plain = np.asarray(geometry(probe.read_image(index).convert("RGB")).resize(
                (TILE, TILE), Image.BICUBIC)).astype(float)
            heat = (tile(px, t) - (1 - alpha) * plain) / alpha
            flat = heat.reshape(-1, 3)
            dist = np.sqrt(((flat[:, None, :] - lut[None]) ** 2).sum(-1)).min(1)
            assert dist.max() < 3.0, (item.id, t, dist.max())
            spread.append(flat.std(0).sum())
        assert max(spread) > 10  # the overlay is a real map, not one flat colour


def test_controls_are_mixed_in_at_the_stated_fraction(exports, study_run):
    doc = exports["A"]
    table = mapping_table(doc)
    assert len(table) == 25 and table["control"].sum() == 5  # 20 units + 20 %
    assert doc["n_controls"] == 5
    for item in (i for i in doc["items"] if i.control):
        assert item.control_kind == "random-images" and item.layer == "units"
        top = set(study_run.topk(item.unit)["index"])
        assert set(item.tiles) != top and len(set(item.tiles)) == len(item.tiles) == 20
    # controls are not grouped: they sit among the real grids
    flags = [i.control for i in doc["items"]]
    assert flags != sorted(flags) and flags != sorted(flags, reverse=True) or len(set(flags)) == 1
    for fraction in (0.1, 0.25, 0.5):
        plan = _plan(study_run, ExportConfig(per_layer=30, controls=fraction), 0)
        n_c = sum(i.control for i in plan)
        assert abs(n_c / len(plan) - fraction) <= 1 / len(plan)


def test_mixed_exemplar_controls_draw_from_the_layers_top_images(study_run):
    plan = _plan(study_run, ExportConfig(per_layer=10, controls=0.5,
                                         control_kind="mixed-exemplars"), 3)
    pool = set(np.asarray(study_run.array("units", "top_index")).ravel()) - {-1}
    controls = [i for i in plan if i.control]
    assert len(controls) == 10
    for item in controls:
        assert set(item.tiles) <= pool and item.extreme == "top"


def test_mapping_must_be_outside_the_folder_and_round_trips(study_run, tmp_path, exports):
    out = tmp_path / "grids"
    for inside in (out / "mapping.json", out / "sub" / "m.json"):
        with pytest.raises(UserError, match="inside"):
            export_study(study_run, out, inside, ExportConfig(units=("units:0",)),
                         show_progress=False)
    assert not out.exists()  # nothing was written
    doc = exports["A"]
    again = read_mapping(doc["mapping_path"])
    assert again["items"] == doc["items"] and again["status"] == "complete"
    raw = json.loads(doc["mapping_path"].read_text())
    assert raw["seed"] == 1 and raw["run"] == str(study_run.path.resolve())
    assert {"id", "unit", "layer", "extreme", "heatmap", "control"} <= set(raw["items"][0])
    with pytest.raises(UserError, match="finished study export"):
        export_study(study_run, doc["dir"], doc["mapping_path"], ExportConfig(per_layer=20, seed=1,
                     heatmap=False), show_progress=False)
    with pytest.raises(UserError, match="not empty"):
        export_study(study_run, doc["dir"], tmp_path / "other.json", ExportConfig(),
                     show_progress=False)


def test_bad_options_are_refused(study_run, tmp_path):
    cases = [(ExportConfig(units=("units:999",)), "out of range"),
             (ExportConfig(units=("units:0",), per_layer=3), "either"),
             (ExportConfig(controls=1.0), "fraction"),
             (ExportConfig(control_kind="noise"), "control kind"),
             (ExportConfig(extremes=("middle",)), "extremes")]
    for n, (cfg, msg) in enumerate(cases):
        with pytest.raises(UserError, match=msg):
            export_study(study_run, tmp_path / f"o{n}", tmp_path / f"m{n}.json", cfg,
                         show_progress=False)
        assert not (tmp_path / f"m{n}.json").exists()


def test_interrupted_export_resumes_without_redrawing(study_run, tmp_path, monkeypatch):
    import neuronatlas.atlas.exemplars as ex

    real_grid, calls = ex.grid_image, []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real_grid(*args, **kwargs)

    monkeypatch.setattr(ex, "grid_image", flaky)
    cfg = ExportConfig(units=("units:0", "units:5", "units:40"), extremes=("top", "bottom"),
                       controls=0.0, k=6)
    out, mapping = tmp_path / "grids", tmp_path / "mapping.json"
    with pytest.raises(KeyboardInterrupt):
        export_study(study_run, out, mapping, cfg, show_progress=False)
    first = read_mapping(mapping)
    assert first["status"] == "rendering"
    done = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")}
    assert len(done) == 3 and not list(out.glob("*.tmp"))
    doc = export_study(study_run, out, mapping, cfg, show_progress=False)
    assert doc["status"] == "complete" and [i.id for i in doc["items"]] == \
        [i.id for i in first["items"]]
    assert len(calls) == 4 + 3  # only the missing grids were drawn
    assert all((out / n).stat().st_mtime_ns == t for n, t in done.items())
    assert sorted((i.unit, i.extreme) for i in doc["items"]) == sorted(
        (u, e) for u in cfg.units for e in ("top", "bottom"))
