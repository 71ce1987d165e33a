"""The CLI's error discipline, through the real command in a subprocess: usage errors and Ctrl-C each
end with their own exit code and a short message, never a traceback (issue 19, point 1)."""

import os
import subprocess
import sys

import pytest

from tests.conftest import TINY_CNN, make_images

CLI = [sys.executable, "-m", "neuronatlas.cli"]


def cli(*args, env=None):
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)


@pytest.mark.parametrize("args, message", [
    (["bogus-command"], "No such command"),
    (["record"], "Missing argument"),
    (["--bogus"], "No such option"),
    (["info", "--bogus", "x"], "No such option"),
])
def test_usage_errors_are_short_and_exit_2(args, message):
    r = cli(*args)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr
    assert "Traceback" not in r.stderr + r.stdout


# a model whose first forward pass delivers a real SIGINT to its own process: Ctrl-C at a known step
CTRL_C_AT_FIRST_BATCH = TINY_CNN.replace(
    "    def forward(self, x):\n",
    "    def forward(self, x):\n"
    "        import os, signal\n"
    "        os.kill(os.getpid(), signal.SIGINT)\n")


def test_ctrl_c_exits_130_with_the_resume_line(tmp_path):
    make_images(tmp_path / "imgs", 6)
    model = tmp_path / "ctrlc.py"
    model.write_text(CTRL_C_AT_FIRST_BATCH)
    r = cli("record", f"{model}:build", "--layers", "conv1", "--data", tmp_path / "imgs",
            "--out", tmp_path / "run", "--workers", "0", "--quiet")
    assert r.returncode == 130, (r.returncode, r.stderr)
    assert "rerun the same command to resume" in r.stderr
    assert "Traceback" not in r.stderr


def test_user_errors_give_one_line_and_debug_gives_the_traceback(tmp_path):
    r = cli("info", tmp_path / "no-such-run")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    d = cli("info", tmp_path / "no-such-run", env={"NEURONATLAS_DEBUG": "1"})
    assert d.returncode != 0 and "Traceback" in d.stderr
