"""Locks of a run directory: one writer at a time for each part of it (a shard, the merge, the set-up).

A lock is a small file holding who took it (PID, host, start time) and an `fcntl.flock` on it. The
kernel drops a flock when its process dies however it dies (SIGKILL included), so a lock left by a
dead process is simply taken over by the next one; nothing has to be cleaned by hand. The file stays
(a lock file that exists is not a held lock). Where the file system has no flock (some network
mounts), the holder's record decides: a live process on this host holds it; a dead one's is taken
over; another host's is honoured.
"""

from __future__ import annotations

import datetime as _dt
import errno
import json
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path

from ..errors import UserError

try:
    import fcntl
except ImportError:  # Windows: only the holder's record
    fcntl = None


class RunLocked(UserError):
    """Another live process is writing this part of the run."""


def _me() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(),
            "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}


def _holder(path: Path, tries: int = 1) -> dict | None:
    for _ in range(tries):  # a holder writes its record just after it takes the lock
        try:
            text = Path(path).read_text()
        except OSError:
            return None
        if text.strip():
            try:
                return json.loads(text)
            except ValueError:
                return None
        time.sleep(0.01)
    return None


def describe_holder(h: dict | None) -> str:
    if not h:
        return "another process"
    return f"PID {h.get('pid')} on {h.get('host')}, started {h.get('started')}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _record_says_held(h: dict | None) -> bool:
    if not h:
        return False
    if h.get("host") != socket.gethostname():
        return True
    return h.get("pid") != os.getpid() and _alive(int(h.get("pid", -1)))


@contextmanager
def run_lock(path: Path | str, what: str, fix: str, wait: float = 0.0):
    """Hold the lock file `path` for the block. If another live process holds it, wait up to `wait`
    seconds, then raise `RunLocked`: '<what> is in use by PID ... on HOST, started ...: <fix>'."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait
        while True:
            held = _try_lock(fd, path)
            if not held:
                break
            if time.monotonic() >= deadline:
                raise RunLocked(f"{what} is in use by {describe_holder(_holder(path, tries=20))}: {fix}")
            time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(_me()).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)  # released: no holder to name any more
    finally:
        os.close(fd)  # closing drops the flock


def _try_lock(fd: int, path: Path) -> bool:
    """Take the lock; True when another process holds it."""
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return False
        except BlockingIOError:
            return True
        except OSError as exc:
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise
    return _record_says_held(_holder(path))


# -- the locks of a run directory --------------------------------------------------------------
RESUME = "wait for that process to end (or stop it), then rerun this command to resume"


def merge_lock(run: Path | str):
    """RUN/locks/merge.lock: held while a process merges the shards into the final run."""
    return run_lock(Path(run) / "locks" / "merge.lock", f"{run} (merging its shards)", RESUME)


def setup_lock(run: Path | str):
    """RUN/locks/setup.lock: held for the moment a process creates run.json and the image listing
    (shards starting together wait for each other, instead of writing the same files at once)."""
    return run_lock(Path(run) / "locks" / "setup.lock", f"{run} (being set up)", RESUME,
                    wait=120.0)
