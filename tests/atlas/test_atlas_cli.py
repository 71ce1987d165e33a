"""`neuronatlas atlas RUN --serve | --export DIR` as a user runs it."""

import subprocess
import sys
import time
import urllib.request

import pytest

from tests.atlas.conftest import free_port


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "neuronatlas.cli", *args], capture_output=True,
                          text=True, timeout=300)


def test_export_command(atlas_run, tmp_path):
    out = tmp_path / "site"
    r = run_cli("atlas", str(atlas_run.path), "--export", str(out), "--images", "2")
    assert r.returncode == 0, r.stderr
    assert f"file://{(out / 'index.html').resolve()}" in r.stdout
    assert (out / "data" / "overview.js").read_text().startswith('NA.put("overview",')
    assert len(list((out / "img").rglob("*.png"))) > 40
    # a second export into the same folder replaces it; a foreign folder is refused
    assert run_cli("atlas", str(atlas_run.path), "--export", str(out), "--images", "none")\
        .returncode == 0
    assert not (out / "img").exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    r = run_cli("atlas", str(atlas_run.path), "--export", str(tmp_path / "mine"))
    assert r.returncode == 2 and "is not an atlas export" in r.stderr and "Traceback" not in r.stderr
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_bad_invocations_are_one_line_errors(atlas_run, tmp_path):
    r = run_cli("atlas", str(atlas_run.path))
    assert r.returncode == 2 and "choose one of --serve or --export" in r.stderr
    r = run_cli("atlas", str(tmp_path / "nothing"), "--serve")
    assert r.returncode == 2 and "is not a neuronatlas run" in r.stderr
    assert "Traceback" not in r.stderr


def test_serve_command_binds_loopback(atlas_run):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "neuronatlas.cli", "atlas", str(atlas_run.path),
                             "--serve", "--port", str(port)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline, body = time.time() + 120, None
        while time.time() < deadline and body is None:
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/api/overview",
                                              timeout=5).read()
            except OSError:
                if proc.poll() is not None:
                    pytest.fail(proc.stderr.read())
                time.sleep(0.3)
        assert body and b"zoo:synthetic-units" in body
        import psutil

        listening = [c.laddr for c in psutil.Process(proc.pid).net_connections("tcp")
                     if c.status == psutil.CONN_LISTEN]
        assert listening and all(a.ip == "127.0.0.1" and a.port == port for a in listening)
    finally:
        proc.terminate()
        proc.wait(20)

