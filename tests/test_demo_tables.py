"""The demo's tables in an 80-column terminal (COLUMNS=80): short unit ids with a legend, every line
within 80 characters, no cell wrapped onto a second line. On a real world-clip run (long layer
names) labelled by two methods."""

import io

import pytest
from rich.console import Console

import neuronatlas as na
from neuronatlas import demo
from neuronatlas.describe import describe


@pytest.fixture(scope="module")
def world_clip_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo-tables") / "world-clip"
    run = na.record("zoo:world-clip", "world:n=12,size=64,seed=1", out, layers=demo.WORLD_CLIP_LAYERS,
                    save_acts=True, num_workers=0, show_progress=False)
    describe(run, "clip-dissect", scorer="zoo:world-clip", concepts="world")
    describe(run, "clip-dissect", scorer="zoo:world-clip", concepts="world", similarity="cos_cubed")
    return na.open_run(out)


def render(fn, *args, monkeypatch) -> list[str]:
    monkeypatch.setenv("COLUMNS", "80")
    buf = io.StringIO()
    console = Console(file=buf)
    assert console.width == 80
    fn(console, *args)
    return buf.getvalue().splitlines()


def test_unit_table_fits_80_columns(world_clip_run, monkeypatch):
    lines = render(demo._print_units, world_clip_run, "world-clip", monkeypatch=monkeypatch)
    assert max(len(l) for l in lines) <= 80, max(lines, key=len)
    body = [l for l in lines if l.startswith("│")]
    assert len(body) == 2 * len(world_clip_run.layers)  # one line per unit: nothing wrapped
    ids = [l.split("│")[1].strip() for l in body]
    assert all(i.startswith(("L0:", "L1:")) for i in ids), ids
    legend = [l.strip() for l in lines if " = vision_model" in l]
    assert legend == [f"L{i} = {layer}" for i, layer in enumerate(world_clip_run.layers)]
    # each shown label is the unit's top label (cut to its column, never wrapped)
    labels = world_clip_run.labels("clip-dissect")
    top = labels[labels["rank"] == 0].set_index("unit")["label"]
    short, _ = demo.short_unit_ids(list(world_clip_run.layers))
    back = {f"{short[l]}:{u.rsplit(':', 1)[1]}": u for l in world_clip_run.layers
            for u in world_clip_run.units[world_clip_run.units.layer == l].unit}
    for line, uid in zip(body, ids):
        cells = [c.strip() for c in line.split("│")[1:-1]]
        label = top[back[uid]]
        assert cells[3] == label or (cells[3].endswith("...") and label.startswith(cells[3][:-3]))


def test_long_layer_names_are_shortened_with_a_legend():
    names, legend = demo.short_unit_ids(["units", "vision_model.encoder.layers.3.mlp.fc1", "_fc"])
    assert names == {"units": "units", "vision_model.encoder.layers.3.mlp.fc1": "L1", "_fc": "_fc"}
    assert legend == ["L1 = vision_model.encoder.layers.3.mlp.fc1"]
