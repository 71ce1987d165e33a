"""A recording killed (SIGKILL) or interrupted (SIGINT) at each named step of the shard loop (issue 19,
point 7): rc -9 / rc 130 with the resume line, and the same command then ends with every file of the
run equal to an undisturbed run's."""

import pytest

from tests.reliability.helpers import assert_killed, assert_same_run

CASES = [  # (shards, which shard is disturbed, step, signal)
    (1, 0, "shard.batch", "KILL"),  # before any checkpoint
    (1, 0, "shard.checkpoint@2", "KILL"),
    (1, 0, "shard.batch@3", "INT"),  # after two checkpoints, mid-way
    (1, 0, "shard.done", "KILL"),  # the shard complete, not merged
    (2, 0, "shard.batch@2", "KILL"),  # the first of two shards
]


@pytest.mark.parametrize("n_shards, shard, step, signal", CASES,
                         ids=[f"{n}shard-{i}-{s}-{g}" for n, i, s, g in CASES])
def test_a_recording_killed_at_a_step_resumes_to_the_same_run(recording, n_shards, shard, step,
                                                              signal):
    out = recording.root / f"record-{n_shards}-{shard}-{step}-{signal}"
    killed = recording.record_shard(out, shard, n_shards, fault=step, signal=signal)
    assert_killed(killed, signal)
    assert not (out / "units.parquet").exists()
    for s in range(n_shards):  # the same command(s) again: the disturbed shard resumes
        r = recording.record_shard(out, s, n_shards)
        assert r.returncode == 0, r.stderr
        assert "Traceback" not in r.stderr
    assert_same_run(out, recording.straight[n_shards])
