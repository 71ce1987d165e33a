"""A --save-acts run killed at every step of its final merge (issue 19, point 2): the killed command
leaves the run resumable, and rerunning it (or `neuronatlas merge`) ends with every file equal to
an undisturbed run's. The kill is a named fault point (neuronatlas/faults.py), not timing luck."""

import pytest

from tests.conftest import TINY_CNN, make_images
from tests.reliability.helpers import assert_killed, assert_same_run, cli


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("merge-faults")
    make_images(root / "imgs", 10, size=24)
    (root / "cnn.py").write_text(TINY_CNN)
    base = ["record", f"{root / 'cnn.py'}:build", "--layers", "conv1,fc", "--data", root / "imgs",
            "--batch-size", "4", "--workers", "0", "--save-acts", "-q"]

    def record(out, n_shards, fault=None, signal="KILL", last_only=True):
        """Record every shard; the fault is set for the last one (whose end runs the merge)."""
        result = None
        for s in range(n_shards):
            last = s == n_shards - 1
            result = cli(*base, "--out", out, "--shard", f"{s}/{n_shards}",
                         fault=fault if (last or not last_only) else None, signal=signal)
            if not last:
                assert result.returncode == 0, result.stderr
        return result

    straight = {}
    for n in (1, 2):
        straight[n] = root / f"straight-{n}"
        r = record(straight[n], n)
        assert r.returncode == 0, r.stderr
    return root, base, record, straight


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
def test_a_merge_killed_at_a_step_is_finished_by_the_rerun(setup, n_shards, step, signal, finish):
    root, base, record, straight = setup
    out = root / f"{n_shards}-{step}-{signal}"
    killed = record(out, n_shards, fault=step, signal=signal)
    assert_killed(killed, signal)
    if step != "merge.complete":
        assert '"complete"' not in (out / "run.json").read_text()
    if finish == "merge":
        done = cli("merge", out)
    else:
        done = cli(*base, "--out", out, "--shard", f"{n_shards - 1}/{n_shards}")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert_same_run(out, straight[n_shards])
    if step == "merge.complete":  # and merging a complete run again changes nothing
        again = cli("merge", out)
        assert again.returncode == 0, again.stderr
        assert_same_run(out, straight[n_shards])
