"""A small real run for the atlas tests: synthetic units over world scenes, described by NetDissect
and CLIP-Dissect (world-clip scorer, world concepts) and evaluated. Built once per session."""

import shutil
import socket
import threading
import time

import pytest
import torch

import neuronatlas as na


@pytest.fixture(scope="session")
def atlas_run(tmp_path_factory):
    from neuronatlas.describe import describe
    from neuronatlas.evaluate import evaluate

    torch.set_num_threads(1)
    path = tmp_path_factory.mktemp("atlas") / "run"
    run = na.record("zoo:synthetic-units", "world:n=60,size=64,seed=0", path, layers="units",
                    save_acts=True, show_progress=False, num_workers=0)
    describe(run, "netdissect")
    describe(run, "clip-dissect", scorer="zoo:world-clip", concepts="world")
    evaluate(run, scorer="zoo:world-clip")
    return na.open_run(path)


@pytest.fixture
def run_copy(atlas_run, tmp_path):
    """A private copy of the run, for tests that change it."""
    dst = tmp_path / "run"
    shutil.copytree(atlas_run.path, dst, ignore=shutil.ignore_patterns("atlas"))
    return na.open_run(dst)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """uvicorn serving an app on a free loopback port in a thread (a real HTTP server)."""

    def __init__(self, app):
        import uvicorn

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                    log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self):
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="session")
def atlas_app(atlas_run):
    from neuronatlas.atlas.server import create_app

    return create_app(atlas_run)


@pytest.fixture(scope="session")
def live_server(atlas_app):
    with LiveServer(atlas_app) as server:
        yield server
