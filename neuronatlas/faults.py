"""Named fault-injection points, so that tests can kill a real process at an exact step.

Long-running stages call `fault_point("merge.acts")` at each step where a crash must be survivable.
Nothing happens unless the environment names that step:

    NEURONATLAS_FAULT=merge.acts          the process kills itself the first time it reaches the step
    NEURONATLAS_FAULT=shard.batch@3      ... the third time
    NEURONATLAS_FAULT_SIGNAL=INT          with SIGINT (Ctrl-C) instead of the default SIGKILL
    NEURONATLAS_FAULT_SIGNAL=STOP         stops there (holding whatever it holds) until SIGCONT

The tests in tests/reliability/ run the real CLI in a subprocess with these set, then check that
rerunning the same command ends with the result of an undisturbed run. The steps are listed in
docs/reliability.md.
"""

from __future__ import annotations

import os
import signal
import time

_counts: dict[str, int] = {}


def _target() -> tuple[str, int] | None:
    spec = os.environ.get("NEURONATLAS_FAULT")
    if not spec:
        return None
    step, _, nth = spec.partition("@")
    return step.strip(), int(nth) if nth.strip() else 1


def fault_point(step: str) -> None:
    """Kill this process here if NEURONATLAS_FAULT names `step` (and this is its n-th visit)."""
    target = _target()
    if target is None or target[0] != step:
        return
    _counts[step] = _counts.get(step, 0) + 1
    if _counts[step] != target[1]:
        return
    name = os.environ.get("NEURONATLAS_FAULT_SIGNAL", "KILL").upper().removeprefix("SIG")
    os.kill(os.getpid(), getattr(signal, f"SIG{name}"))
    if name in ("INT", "TERM"):
        # A caught signal raises at Python's next signal check: sleeping is one, so the
        # KeyboardInterrupt leaves from this step and not from a later one.
        time.sleep(5)
