"""Shared by the fault-injection tests: the real CLI in a subprocess, killed at a named step
(neuronatlas/faults.py), and a file-by-file comparison of two run directories."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

CLI = [sys.executable, "-m", "neuronatlas.cli"]
RESUME_LINE = "rerun the same command to resume"


def cli(*args, fault: str | None = None, signal: str = "KILL", env: dict | None = None,
        timeout: float = 300):
    env = {**os.environ, **(env or {})}
    env.pop("NEURONATLAS_FAULT", None)
    if fault:
        env["NEURONATLAS_FAULT"], env["NEURONATLAS_FAULT_SIGNAL"] = fault, signal
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=timeout)


def assert_killed(result, signal: str) -> None:
    """A SIGKILL ends the process at once (rc -9, nothing printed after); a SIGINT ends it as Ctrl-C
    does: rc 130, the one resume line, no traceback."""
    out = result.stdout + result.stderr
    if signal == "KILL":
        assert result.returncode == -9, (result.returncode, out)
        return
    assert result.returncode == 130, (result.returncode, out)
    lines = result.stderr.strip().splitlines()
    assert lines and RESUME_LINE in lines[-1], result.stderr
    assert "Traceback" not in out, out


def one_line_error(result, *needles, rc: int = 2) -> str:
    assert result.returncode == rc, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


# what legitimately differs between two recordings of the same thing: when they ran
_TIMES = {"created", "finished"}


def _files(root: Path) -> dict[str, Path]:
    return {str(p.relative_to(root)): p for p in sorted(root.rglob("*")) if p.is_file()}


def assert_same_run(a: Path, b: Path) -> None:
    """Every file of run `a` equals the same file of run `b` (no file more, none fewer): arrays and
    tables by value, JSON apart from timestamps, anything else byte for byte."""
    import pandas as pd

    fa, fb = _files(Path(a)), _files(Path(b))
    assert sorted(fa) == sorted(fb), (sorted(set(fa) ^ set(fb)))
    for rel, pa in fa.items():
        pb = fb[rel]
        if rel.endswith(".npy"):
            x, y = np.load(pa), np.load(pb)
            assert x.dtype == y.dtype and x.shape == y.shape, rel
            np.testing.assert_array_equal(x, y, err_msg=rel)
        elif rel.endswith(".npz"):
            with np.load(pa) as x, np.load(pb) as y:
                assert sorted(x.files) == sorted(y.files), rel
                for key in x.files:
                    np.testing.assert_array_equal(x[key], y[key], err_msg=f"{rel}:{key}")
        elif rel.endswith(".parquet"):
            pd.testing.assert_frame_equal(pd.read_parquet(pa), pd.read_parquet(pb), obj=rel)
        elif rel.endswith(".json"):
            ja, jb = json.loads(pa.read_text()), json.loads(pb.read_text())
            for key in _TIMES:
                ja.pop(key, None), jb.pop(key, None)
            assert ja == jb, rel
        else:
            assert pa.read_bytes() == pb.read_bytes(), rel
