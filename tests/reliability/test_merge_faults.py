"""A --save-acts run killed at every step of its final merge (issue 19, point 2): the killed command
leaves the run resumable, and rerunning it (or `neuronatlas merge`) ends with every file equal to
an undisturbed run's. The kill is a named fault point (neuronatlas/faults.py), not timing luck."""

import pytest

from tests.reliability.helpers import assert_killed, assert_same_run, cli

CASES = [  # (shards, step, signal, how to finish): each step once, both ways of finishing
    (1, "merge.start", "KILL", "record"),
    (1, "merge.layer_arrays@2", "KILL", "merge"),
    (1, "merge.acts", "INT", "merge"),
    (1, "merge.units", "KILL", "record"),
    (1, "merge.complete", "KILL", "merge"),  # complete, but the shard's rows not yet deleted
    (2, "merge.acts_shard@2", "KILL", "merge"),  # the final matrix half assembled
    (2, "merge.images", "INT", "record"),
]


@pytest.mark.parametrize("n_shards, step, signal, finish", CASES,
                         ids=[f"{n}shard-{s}-{g}-{f}" for n, s, g, f in CASES])
def test_a_merge_killed_at_a_step_is_finished_by_the_rerun(recording, n_shards, step, signal,
                                                           finish):
    out = recording.root / f"merge-{n_shards}-{step}-{signal}"
    killed = recording.record(out, n_shards, fault=step, signal=signal)
    assert_killed(killed, signal)
    if step != "merge.complete":
        assert '"complete"' not in (out / "run.json").read_text()
    if finish == "merge":
        done = cli("merge", out)
    else:
        done = recording.record_shard(out, n_shards - 1, n_shards)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert_same_run(out, recording.straight[n_shards])
    if step == "merge.complete":  # and merging a complete run again changes nothing
        again = cli("merge", out)
        assert again.returncode == 0, again.stderr
        assert_same_run(out, recording.straight[n_shards])
