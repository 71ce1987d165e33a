"""The served atlas: JSON API (search, filters, paging), 404 pages, read-only routes, and the guard
that keeps every URL inside the run (checked over real HTTP with raw, unnormalised paths)."""

import http.client
import os

import pytest
from fastapi.testclient import TestClient

from neuronatlas.atlas.index import ensure_index
from neuronatlas.atlas.queries import AtlasIndex, UnitQuery


@pytest.fixture(scope="module")
def client(atlas_app):
    return TestClient(atlas_app, base_url="http://127.0.0.1", raise_server_exceptions=False)


def test_search_filters_and_paging(client, atlas_run):
    index = AtlasIndex(ensure_index(atlas_run)[0])
    res = client.get("/api/units", params={"q": "circle", "per_page": 5}).json()
    want = index.list_units(UnitQuery(q="circle", per_page=500))
    assert res["total"] == want["total"] > 5 and res["pages"] == -(-want["total"] // 5)
    assert [r["unit"] for r in res["rows"]] == [r["unit"] for r in want["rows"][:5]]
    got = []
    for page in range(1, res["pages"] + 1):
        got += [r["unit"] for r in client.get("/api/units", params={
            "q": "circle", "per_page": 5, "page": page}).json()["rows"]]
    assert got == [r["unit"] for r in want["rows"]]
    for u in got[:4]:  # each hit has a method whose labels contain the word
        methods = client.get(f"/api/unit/{u}").json()["methods"].values()
        assert any("circle" in " ".join(x["label"] for x in m["labels"]) for m in methods)
    res = client.get("/api/units", params={"method": "netdissect", "metric": "pearson",
                                           "min": 0.5, "sort": "pearson", "order": "desc"}).json()
    values = [r["labels"]["netdissect"]["pearson"] for r in res["rows"]]
    assert values and min(values) >= 0.5 and values == sorted(values, reverse=True)
    res = client.get("/api/units", params={"layer": "units", "sort": "std", "order": "desc",
                                           "per_page": 3}).json()
    assert [r["unit"] for r in res["rows"]] == list(
        atlas_run.units.sort_values("std", ascending=False).unit[:3])


def test_bad_query_is_a_400_with_one_line(client):
    r = client.get("/api/units", params={"min": 0.2})
    assert r.status_code == 400 and r.json() == {
        "error": "filtering or sorting by a score needs a method: choose one"}
    r = client.get("/api/units", params={"per_page": 100000})
    assert r.status_code == 400 and "per_page" in r.json()["error"]


def test_unit_page_data_and_404(client, atlas_run):
    d = client.get("/api/unit/units:3").json()
    assert d["unit"] == "units:3" and d["has_heat"]
    top = atlas_run.topk("units:3")
    assert [t["index"] for t in d["top"]] == list(top["index"])
    assert sum(d["histogram"]["counts"]) == 60
    assert set(d["methods"]) == {"netdissect", "clip-dissect"}
    for bad in ("units:999", "nolayer:1", "units", "units:-1", "units:3%2F..%2F..%2Fx"):
        r = client.get(f"/api/unit/{bad}")
        assert r.status_code == 404 and "not in this run" in r.json()["error"]
        page = client.get(f"/unit/{bad}")
        assert page.status_code == 404 and "text/html" in page.headers["content-type"]
        assert "not in this run" in page.text and "Traceback" not in page.text
    assert client.get("/unit/units:3").status_code == 200
    r = client.get("/no/such/page")
    assert r.status_code == 404 and "<h1>404</h1>" in r.text


def test_tiles_render_lazily_and_are_pngs(client, atlas_run):
    d = client.get("/api/unit/units:12").json()
    t = d["top"][0]
    heat = client.get(t["heat"])
    plain = client.get(t["plain"])
    assert heat.status_code == plain.status_code == 200
    assert heat.content[:8] == plain.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert heat.content != plain.content
    not_mine = next(i for i in range(60) if i not in {x["index"] for x in d["top"] + d["bottom"]})
    assert client.get(f"/tiles/heat/{not_mine}/units:12").status_code == 404
    assert client.get("/tiles/heat/0/units:999").status_code == 404
    assert client.get("/tiles/plain/99999.png").status_code == 404
    assert client.get("/tiles/plain/..%2f..%2frun.json").status_code == 404


def test_read_only(client):
    for method in ("post", "put", "delete", "patch"):
        assert getattr(client, method)("/api/units").status_code == 405
        assert getattr(client, method)("/files/run.json").status_code == 405


def raw_get(server, path: str):
    """GET `path` exactly as written (no client-side normalisation of ../ or %2e)."""
    con = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    con.putrequest("GET", path, skip_accept_encoding=True)
    con.endheaders()
    r = con.getresponse()
    body = r.read()
    con.close()
    return r.status, body


TRAVERSALS = [
    "/files/../../../../etc/passwd",
    "/files/..%2f..%2f..%2f..%2fetc%2fpasswd",
    "/files/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/files/%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "/files/%252e%252e%252f%252e%252e%252fetc%252fpasswd",
    "/files//etc/passwd",
    "/files/%2fetc%2fpasswd",
    "/files/labels/../../../../../etc/passwd",
    "/files/..\\..\\..\\etc\\passwd",
    "/files/run.json%00.png",
    "/static/../../../../../etc/passwd",
    "/static/..%2f..%2fetc%2fpasswd",
    "/static/..%2fserver.py",
    "/static/%2e%2e/index.py",
    "/files/atlas/../../run/../../etc/passwd",
    "/tiles/plain/..%2f..%2f..%2fetc%2fpasswd",
    "/tiles/heat/0/..%2f..%2f..%2fetc%2fpasswd",
    "/api/unit/..%2f..%2f..%2fetc%2fpasswd",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_traversal_is_refused(live_server, path):
    status, body = raw_get(live_server, path)
    assert status in (400, 404), (path, status)
    assert b"root:" not in body and b"def create_app" not in body and b"import" not in body


def test_run_files_are_served_and_links_out_are_not(live_server, atlas_run):
    status, body = raw_get(live_server, "/files/run.json")
    assert status == 200 and b'"neuronatlas-run"' in body
    status, body = raw_get(live_server, "/files/labels/netdissect.json")
    assert status == 200
    status, _ = raw_get(live_server, "/static/app.js")
    assert status == 200
    link, dlink = atlas_run.path / "leak", atlas_run.path / "leakdir"
    inside = atlas_run.path / "labels" / "inside.json"
    try:
        os.symlink("/etc/passwd", link)
        os.symlink("/etc", dlink, target_is_directory=True)
        os.symlink(atlas_run.path / "run.json", inside)  # a link that stays in the run is fine
        for path in ("/files/leak", "/files/leakdir/passwd", "/files/leakdir/../leak"):
            status, body = raw_get(live_server, path)
            assert status == 404 and b"root:" not in body, path
        assert raw_get(live_server, "/files/labels/inside.json")[0] == 200
        assert raw_get(live_server, "/files/labels")[0] == 404  # directories are not listed
    finally:
        for p in (link, dlink, inside):
            p.unlink(missing_ok=True)


def test_run_from_an_in_memory_model_serves_without_images(tmp_path):
    """No way to rebuild the model: every page still works and says why there are no images."""
    import neuronatlas as na
    from neuronatlas.atlas.server import create_app
    from tests.conftest import tiny_hf_clip_target

    run = na.record(tiny_hf_clip_target(), "world:n=12,size=32,seed=0", tmp_path / "run",
                    layers="vision_model.encoder.layers.0.mlp.fc1", k=3, show_progress=False,
                    num_workers=0)
    client = TestClient(create_app(run), base_url="http://127.0.0.1", raise_server_exceptions=False)
    assert "in-memory model" in client.get("/api/overview").json()["tiles_error"]
    unit = run.units.unit.iloc[0]
    d = client.get(f"/api/unit/{unit}").json()
    assert d["images_available"] is False and "in-memory model" in d["images_note"]
    assert d["top"][0]["plain"] is None and d["top"][0]["heat"] is None
    r = client.get(f"/tiles/plain/{d['top'][0]['index']}.png")
    assert r.status_code == 404 and "in-memory model" in r.json()["error"]
    assert client.get("/api/units").json()["total"] == len(run.units)


def test_index_falls_back_to_a_user_cache_when_the_run_is_read_only(run_copy, tmp_path,
                                                                    monkeypatch):
    from neuronatlas.atlas.index import ensure_index

    (run_copy.path / "atlas").write_text("not a directory")  # RUN/atlas cannot be created
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path, rebuilt = ensure_index(run_copy)
    assert rebuilt and path.is_relative_to(tmp_path / "cache" / "neuronatlas" / "atlas")
    assert ensure_index(run_copy) == (path, False)


def get_with_host(server, path: str, host: str | None):
    con = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    con.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
    if host is not None:
        con.putheader("Host", host)
    con.endheaders()
    r = con.getresponse()
    body = r.read()
    con.close()
    return r.status, body


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8765", "127.0.0.1.evil.example",
                                  "localhost.evil.example", "10.0.0.5", "[fe80::1]:8765", "",
                                  None])
def test_a_foreign_host_header_is_refused_dns_rebinding(live_server, host):
    """A page that rebinds its own name to 127.0.0.1 sends Host: its name; every path is refused,
    the run's files (cache/chat.sqlite among them) included."""
    for path in ("/files/run.json", "/api/units", "/", "/static/app.js"):
        status, body = get_with_host(live_server, path, host)
        assert status == 400, (host, path, status)
        assert b"neuronatlas-run" not in body
        if host is not None:  # (without any Host, HTTP/1.1 itself refuses the request)
            assert b"--allow-host" in body, body


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.1:8765", "localhost:8765", "LOCALHOST",
                                  "[::1]:8765", "127.0.0.2", "app.localhost:1"])
def test_loopback_names_are_answered(live_server, host):
    status, body = get_with_host(live_server, "/files/run.json", host)
    assert status == 200 and b'"neuronatlas-run"' in body


def test_allow_host_adds_names(atlas_run):
    from neuronatlas.atlas.hosts import allowed_hosts
    from neuronatlas.atlas.server import create_app
    from tests.atlas.conftest import LiveServer

    allowed = allowed_hosts("0.0.0.0", ["atlas.lab.example", "*.corp.example,box"])
    assert "0.0.0.0" not in allowed  # a wildcard bind is no name
    assert allowed_hosts("192.168.1.7")[-1] == "192.168.1.7"  # the bound address is one
    with LiveServer(create_app(atlas_run, allow_hosts=allowed)) as server:
        for host in ("atlas.lab.example:8765", "x.corp.example", "BOX", "localhost"):
            assert get_with_host(server, "/files/run.json", host)[0] == 200, host
        for host in ("corp.example", "lab.example", "evil.example"):
            assert get_with_host(server, "/files/run.json", host)[0] == 400, host
