"""VLM labelling against a local server that answers some requests badly (issue 19, points 6-7):
a malformed reply fails its unit alone, the other units are labelled and written, the failures are
listed, a plain rerun asks nothing again, and --retry-failed asks exactly the failed units, ending
with the labels of an undisturbed run."""

import subprocess
import sys

import pandas as pd
import pytest
import torch

import neuronatlas as na
from neuronatlas.backends.chat import RetryPolicy, load_chat_client
from neuronatlas.describe import describe
from neuronatlas.errors import UserError
from tests.backends.chat_server import ChatServer

UNITS = ["units:9", "units:11", "units:12", "units:14", "units:18", "units:19"]
OPTS = dict(units=UNITS, mode="grid", k=3, concurrency=1, show_progress=False)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    torch.set_num_threads(1)
    path = tmp_path_factory.mktemp("vlm-faults") / "run"
    return na.record("zoo:synthetic-units", "world:n=40,size=48,seed=0", path, layers="units", k=4,
                     batch_size=20, num_workers=0)


def http(server):
    return load_chat_client(f"openai:test-vlm@{server.url}",
                            retry=RetryPolicy(max_retries=1, base_delay=0.001))


def same(df):
    """A labels table without what names the server (its port differs between the two servers)."""
    return df.drop(columns=["method", "summarizer"]).reset_index(drop=True)


def test_a_malformed_reply_fails_its_unit_alone_and_retry_failed_finishes(run, tmp_path):
    with ChatServer() as ref:
        want = describe(run, "vlm", vlm=http(ref), cache=tmp_path / "ref.sqlite", **OPTS)
    cache = tmp_path / "c.sqlite"
    with ChatServer() as s:
        # with one request at a time the units are asked in order: the 2nd and 5th get bad replies
        s.faults = [None, {"choices": []}, None, None, b"\xff\xfe\x00 not utf-8"]
        got = describe(run, "vlm", vlm=http(s), cache=cache, **OPTS)
        assert s.requests == 6
        failed = run.label_config("vlm-grid")["failed"]
        assert list(failed) == [UNITS[1], UNITS[4]]
        assert "choices[0].message.content" in failed[UNITS[1]]
        assert "not UTF-8" in failed[UNITS[4]]
        ok = [u for u in UNITS if u not in failed]
        assert list(got["unit"]) == ok  # the finished units are labelled and written
        pd.testing.assert_frame_equal(same(run.labels("vlm-grid")), same(want[want.unit.isin(ok)]))
        # a plain rerun asks nothing: finished units come from the partial file, failed ones wait
        again = describe(run, "vlm", vlm=http(s), cache=cache, **OPTS)
        assert s.requests == 6 and list(again["unit"]) == ok
        # --retry-failed asks exactly the two failed units, and ends as the undisturbed run
        fixed = describe(run, "vlm", vlm=http(s), cache=cache, retry_failed=True, **OPTS)
        assert s.requests == 8
    pd.testing.assert_frame_equal(same(fixed), same(want))
    assert run.label_config("vlm-grid")["failed"] == {}
    assert not list((run.path / "labels" / ".partial").glob("*.jsonl"))


def test_when_every_unit_fails_it_is_one_error_and_nothing_is_lost(run, tmp_path):
    with ChatServer() as s:
        s.rule = lambda body: {"choices": []}
        with pytest.raises(UserError, match="no unit could be labelled: all 6 failed"):
            describe(run, "vlm", vlm=http(s), cache=tmp_path / "c.sqlite", **OPTS)
        s.rule = None
        got = describe(run, "vlm", vlm=http(s), cache=tmp_path / "c.sqlite", retry_failed=True,
                       **OPTS)
        assert list(got["unit"]) == UNITS


def test_the_command_lists_failures_and_takes_timeout_and_retries(run, tmp_path):
    cli = [sys.executable, "-m", "neuronatlas.cli", "describe", str(run.path), "--method", "vlm",
           "--mode", "grid", "--layers", "units", "--k", "2", "--concurrency", "1",
           "--timeout", "20", "--max-retries", "0"]
    with ChatServer() as s:
        s.faults = [None, {"choices": [{"message": {"content": 3}}]}]
        r = subprocess.run([*cli, "--vlm", f"openai:m@{s.url}"], capture_output=True, text=True,
                           timeout=600)
        assert r.returncode == 0, r.stderr
        assert "Traceback" not in r.stderr
        warn = [l for l in r.stderr.splitlines() if l.startswith("warning: ")]
        assert len(warn) == 1 and "1 units failed" in warn[0] and "--retry-failed" in warn[0]
        (unit,) = run.label_config("vlm-grid")["failed"]
        assert unit not in set(run.labels("vlm-grid")["unit"])
        n = s.requests
        r = subprocess.run([*cli, "--vlm", f"openai:m@{s.url}", "--retry-failed"],
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr
        # at most that one request again (none when another unit's grid was the same image)
        assert s.requests <= n + 1 and "warning" not in r.stderr
        assert unit in set(run.labels("vlm-grid")["unit"])
        r = subprocess.run([*cli, "--vlm", f"openai:m@{s.url}", "--timeout", "-1"],
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 2 and "--timeout must be more than 0" in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
