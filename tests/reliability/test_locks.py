"""One writer per part of a run (issue 19, point 3), with real processes: a recording held stopped at a
named step (SIGSTOP, neuronatlas/faults.py) keeps its lock while a second process tries the same
run; the second is refused at once with one line naming the holder; other shards still record at the
same time; a lock left by a killed process is taken over; and the runs still equal undisturbed ones."""

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from neuronatlas import run as rundir
from tests.reliability.helpers import CLI, assert_same_run, cli, one_line_error


def start_stopped(args, step):
    """Start the CLI and wait until it has stopped itself at `step` (state T in /proc)."""
    env = {**os.environ, "NEURONATLAS_FAULT": step, "NEURONATLAS_FAULT_SIGNAL": "STOP"}
    proc = subprocess.Popen([*CLI, *map(str, args)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()
        state = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state == "T":
            return proc
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"the process never reached {step}")


def resume(proc):
    os.kill(proc.pid, signal.SIGCONT)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err
    return out


def test_a_second_writer_of_the_same_run_is_refused_naming_the_holder(recording):
    out = recording.root / "locked"
    holder = start_stopped(recording.args(out), "shard.batch@2")
    try:
        r = cli(*recording.args(out))
        line = one_line_error(r, f"PID {holder.pid}", socket.gethostname(), "started",
                              "rerun this command to resume")
        assert "shard 0/1" in line
    finally:
        resume(holder)
    assert_same_run(out, recording.straight[1])


def test_a_merge_while_another_merges_is_refused(recording):
    out = recording.root / "merge-locked"
    holder = start_stopped(recording.args(out), "merge.units")
    try:
        one_line_error(cli("merge", out), f"PID {holder.pid}", "merging")
    finally:
        resume(holder)
    assert_same_run(out, recording.straight[1])


def test_other_shards_record_while_one_is_held(recording):
    out = recording.root / "two-writers"
    holder = start_stopped(recording.args(out, 0, 2), "shard.batch")
    try:
        other = recording.record_shard(out, 1, 2)
        assert other.returncode == 0, other.stderr
        assert "shard 1/2 done" in other.stdout
        one_line_error(recording.record_shard(out, 0, 2), f"PID {holder.pid}", "shard 0/2")
    finally:
        resume(holder)  # the held shard finishes last and merges
    assert_same_run(out, recording.straight[2])


def test_a_lock_left_by_a_killed_process_is_taken_over(recording):
    out = recording.root / "stale"
    holder = start_stopped(recording.args(out), "shard.checkpoint")
    lock = rundir.partial_dir(out, 0, 1) / "lock"
    assert json.loads(lock.read_text())["pid"] == holder.pid  # the holder's record
    holder.kill()
    holder.wait()
    r = cli(*recording.args(out))
    assert r.returncode == 0, r.stderr
    assert_same_run(out, recording.straight[1])


def test_recording_into_a_file_is_one_line(recording, tmp_path):
    (tmp_path / "afile").write_text("not a run")
    one_line_error(cli(*recording.args(tmp_path / "afile")), "is a file, not a run directory")
