"""The static export has images for every unit a person reaches from the unit list's first pages
(whatever --images says, short of none), and any other unit's page says how to get its images."""

import json
from pathlib import Path

from neuronatlas.atlas.export import FIRST_PAGES, export, reachable_units
from neuronatlas.atlas.index import ensure_index
from neuronatlas.atlas.queries import AtlasIndex, UnitQuery


def _details(out: Path) -> dict:
    units = {}
    for f in sorted((out / "data").glob("detail-*.js")):
        text = f.read_text()
        units.update(json.loads(text[text.index(",") + 1:text.rindex(")")]))
    return units


def test_first_pages_have_images_and_the_rest_say_how_to_get_them(atlas_run, tmp_path):
    out = tmp_path / "site"
    export(atlas_run, out, images=2, progress=False)  # only the 2 widest, by the number alone
    details = _details(out)
    index = AtlasIndex(ensure_index(atlas_run)[0])
    # what the unit list shows first: its default order and page size, over all layers
    first = [r["unit"] for p in range(1, FIRST_PAGES + 1)
             for r in index.list_units(UnitQuery(page=p))["rows"]]
    assert len(first) == min(len(atlas_run.units), FIRST_PAGES * UnitQuery.per_page)
    assert set(first) <= set(reachable_units(index))
    for unit in first:
        d = details[unit]
        assert d["images_available"], unit
        for t in d["top"] + d["bottom"]:
            assert (out / t["plain"]).is_file(), (unit, t["plain"])
    widest = atlas_run.units.sort_values("std", ascending=False).unit.head(2)
    assert all(details[u]["images_available"] for u in widest)
    rest = [u for u in details if u not in set(first) | set(widest)]
    assert rest, "the run should have units beyond the first pages"
    for unit in rest:
        d = details[unit]
        assert not d["images_available"]
        assert all(t["plain"] is None for t in d["top"] + d["bottom"])
        note = d["images_note"]
        assert "--images all" in note and str(atlas_run.path) in note and "--serve" in note


def test_images_none_exports_no_images(atlas_run, tmp_path):
    out = tmp_path / "site"
    export(atlas_run, out, images="none", progress=False)
    assert not (out / "img").exists()
    assert not any(d["images_available"] for d in _details(out).values())
