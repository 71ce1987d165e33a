"""The logit-lens viewer (atlas/lens_view.py, static/lens.js): its JSON equals the run's Parquet rows;
in a real browser (served app and static export from file://) the index searches and pages, and on
an image page hovering a cell at any layer highlights that token's patch, a click locks it, a second
click releases it. A recorded run with a lens gets the viewer next to its atlas."""

from __future__ import annotations

import json

import pytest
import torch

from neuronatlas.atlas.export import export
from neuronatlas.atlas.lens_view import lens_image, lens_index
from neuronatlas.atlas.server import create_app
from neuronatlas.run.vlm import LensStore, read_logit_lens
from neuronatlas.vlm.lens_run import run_logit_lens
from neuronatlas.vlm.logit_lens import LensConfig
from tests.atlas.conftest import LiveServer
from tests.atlas.test_atlas_browser import browser, not_blank, page  # noqa: F401 (fixtures)
from tests.vlm.tiny import tiny_subject

N = 53  # more than one page of 50


@pytest.fixture(scope="module")
def lens_run(tmp_path_factory):
    torch.set_num_threads(1)
    path = tmp_path_factory.mktemp("lens") / "run"
    run_logit_lens(tiny_subject("llava-1.5"), f"world:n={N},size=30,seed=1", path,
                   LensConfig(top_k=3, batch_size=16, prompt="ab"), show_progress=False)
    return path


def test_image_json_is_the_parquet_rows(lens_run):
    store = LensStore(lens_run)
    ix = lens_index(store)
    assert len(ix["images"]) == N and ix["n_layers"] == 4
    d = lens_image(store, 7, "x.png")
    df = read_logit_lens(lens_run)
    rows = df[df["index"] == 7]
    assert d["image_id"] == rows.image_id.iloc[0] and len(d["tokens"]) == rows.position.nunique()
    labels = [t["label"] for t in d["tokens"]]
    assert labels[1] == "<IMG001>" and labels[25] == "<IMG025>" and labels[0] == "t1"
    assert [t["patch"] for t in d["tokens"] if t["kind"] == "image"] == list(range(25))
    for r in rows.sample(40, random_state=0).itertuples():
        cell = d["cells"][r.layer][r.position]
        assert d["vocab"][cell[0][r.rank]] == r.token
        assert abs(cell[1][r.rank] - r.prob) < 1e-4
    assert lens_image(store, N + 5, "x.png") is None


def test_served_routes(lens_run):
    from fastapi.testclient import TestClient

    client = TestClient(create_app(lens_run), base_url="http://127.0.0.1")
    assert client.get("/", follow_redirects=False).headers["location"] == "/vlm/lens"
    assert len(client.get("/api/vlm/lens").json()["images"]) == N
    assert client.get("/api/vlm/lens/3").json()["index"] == 3
    assert client.get("/api/vlm/lens/999").status_code == 404
    assert client.get("/vlm/lens-image/3.png").headers["content-type"] == "image/png"
    assert client.get("/vlm/lens-image/..%2Flens.json").status_code == 404
    assert client.get("/vlm/lens/3").status_code == 200 and client.get("/vlm/lens/999").status_code == 404


def exercise(page, index_url, open_image):
    """Search + paging on the index, then the hover / lock behaviour on one image page."""
    page.goto(index_url)
    page.wait_for_selector("#app[data-ready=index]", state="attached", timeout=60000)
    assert page.inner_text("#lens-count") == f"{N} images"
    assert page.locator("#lens-rows .row").count() == 50
    page.click("#lens-next")
    page.wait_for_selector("#lens-page:text-is('2')", timeout=30000)
    assert page.locator("#lens-rows .row").count() == N - 50
    page.fill("#lens-q", "/17")
    page.press("#lens-q", "Enter")
    page.wait_for_selector("#lens-count:text-is('1 images')", timeout=30000)
    open_image(page)
    page.wait_for_selector("#app[data-ready=image]", state="attached", timeout=60000)
    page.wait_for_function("document.getElementById('lens-img').naturalWidth > 0", timeout=30000)
    assert page.locator("#lens-table tbody tr").count() == 1 + 25 + 2
    # hover layer 2 of the token at position 8 (image token 8 = patch 7): patch 7 lights up
    page.hover("#lens-table tr[data-p='8'] td[data-l='2']")
    assert page.get_attribute("#imgbox", "data-patch") == "7"
    assert page.locator(".patch.hl").count() == 1
    assert page.get_attribute(".patch.hl", "data-patch") == "7"
    assert "layer 2" in page.inner_text("#lens-info")
    page.hover("#lens-table tr[data-p='20'] td[data-l='3']")
    assert page.get_attribute("#imgbox", "data-patch") == "19"
    page.hover("#lens-table tr[data-p='0'] td[data-l='1']")  # a text token: no patch
    assert page.locator(".patch.hl").count() == 0
    # click locks: hovering elsewhere keeps the locked patch; a second click releases
    page.click("#lens-table tr[data-p='13'] td[data-l='0']")
    page.hover("#lens-table tr[data-p='5'] td[data-l='1']")
    assert page.get_attribute("#imgbox", "data-patch") == "12"
    page.click("#lens-table tr[data-p='13'] td[data-l='0']")
    page.hover("#lens-table tr[data-p='5'] td[data-l='1']")
    assert page.get_attribute("#imgbox", "data-patch") == "4"
    assert not_blank(page.screenshot()) > 100.0
    assert not page.errors, page.errors


def test_viewer_served_in_chromium(page, lens_run):  # noqa: F811
    with LiveServer(create_app(lens_run)) as server:
        exercise(page, server.url + "/", lambda pg: pg.click("a.img-link"))
        assert page.url.endswith("/vlm/lens/17")


def test_viewer_exported_opens_from_file(page, lens_run, tmp_path):  # noqa: F811
    index_html = export(lens_run, tmp_path / "site", progress=False)
    assert index_html == tmp_path / "site" / "vlm" / "index.html"
    exercise(page, index_html.as_uri(), lambda pg: pg.click("a.img-link"))
    assert page.url.endswith("#/17")


def test_recorded_run_gets_the_viewer_beside_its_atlas(run_copy, lens_run, tmp_path):
    import shutil

    from fastapi.testclient import TestClient

    shutil.copytree(LensStore(lens_run).dir, LensStore(run_copy.path).dir)
    client = TestClient(create_app(run_copy), base_url="http://127.0.0.1")
    assert '"lens": "/vlm/lens"' in client.get("/").text
    assert len(client.get("/api/vlm/lens").json()["images"]) == N
    page_ = export(run_copy, tmp_path / "site", images="none", progress=False)
    assert (page_.parent / "vlm" / "index.html").exists()
    assert json.loads('"vlm/index.html"') in page_.read_text()


@pytest.fixture(scope="module")
def experiments_run(tmp_path_factory):
    """A directory with only an ablation and a knockout of world-llava (no lens, no recording)."""
    from neuronatlas.vlm.ablation_run import AblationConfig, run_ablation
    from neuronatlas.vlm.knockout_run import KnockoutConfig, run_knockout
    from neuronatlas.vlm.subject import load_subject

    torch.set_num_threads(1)
    path = tmp_path_factory.mktemp("exp") / "run"
    s = load_subject("zoo:world-llava")
    data = "world:n=3,size=64,seed=100"
    run_ablation(s, data, path, AblationConfig(settings=("polling",), token_sets=("object", "random"),
                                               buffers=(0,), ks=(5,), mean_images=3), show_progress=False)
    run_knockout(s, data, path, KnockoutConfig(sources=("object",), destinations=("last",), buffers=(0,),
                                               windows="a=0-0,b=1-1"), show_progress=False)
    return path


def test_experiments_are_shown_served_and_exported(experiments_run, page, tmp_path):  # noqa: F811
    import pandas as pd
    from fastapi.testclient import TestClient

    from neuronatlas.run.vlm import ExperimentStore

    client = TestClient(create_app(experiments_run), base_url="http://127.0.0.1")  # Host check
    ix = client.get("/api/vlm/lens").json()
    assert ix["images"] == [] and ix["status"] == "none"
    assert [(e["kind"], e["name"]) for e in ix["experiments"]] == [("ablation", "default"),
                                                                   ("knockout", "default")]
    curves = ExperimentStore(experiments_run, "ablation", "default").table("curves")
    got = pd.DataFrame(ix["experiments"][0]["rows"])[list(curves.columns)]
    pd.testing.assert_frame_equal(got, curves, check_dtype=False)
    png = client.get(ix["experiments"][1]["plot"])
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert client.get("/vlm/experiment-plot/ablation/nope.png").status_code == 404
    index_html = export(experiments_run, tmp_path / "site", progress=False)
    page.goto(index_html.as_uri())
    page.wait_for_selector("#app[data-ready=index]", state="attached", timeout=60000)
    assert "no logit lens in this run" in page.inner_text("#lens-rows")
    assert page.locator(".exp").count() == 2
    page.wait_for_function("[...document.querySelectorAll('.exp-plot')].every(i => i.complete && "
                           "i.naturalWidth > 0)", timeout=30000)
    assert page.locator(".exp[data-kind=knockout] tbody tr").count() == 2  # windows a and b
    assert not page.errors, page.errors
