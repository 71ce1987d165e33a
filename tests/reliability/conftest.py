"""One small recording set-up shared by the fault-injection tests: a tiny real CNN, ten PNGs, and the
undisturbed runs (one shard and two shards, --save-acts) that every disturbed run must equal."""

import pytest

from tests.conftest import TINY_CNN, make_images
from tests.reliability.helpers import cli


class Recording:
    def __init__(self, root):
        self.root = root
        make_images(root / "imgs", 10, size=24)
        (root / "cnn.py").write_text(TINY_CNN)
        self.base = ["record", f"{root / 'cnn.py'}:build", "--layers", "conv1,fc", "--data",
                     root / "imgs", "--batch-size", "4", "--workers", "0", "--save-acts",
                     "--checkpoint-every", "1", "-q"]
        self.straight = {}
        for n in (1, 2):
            self.straight[n] = root / f"straight-{n}"
            r = self.record(self.straight[n], n)
            assert r.returncode == 0, r.stderr

    def args(self, out, shard=0, n_shards=1):
        return [*self.base, "--out", out, "--shard", f"{shard}/{n_shards}"]

    def record_shard(self, out, shard, n_shards, **kw):
        return cli(*self.args(out, shard, n_shards), **kw)

    def record(self, out, n_shards, fault=None, signal="KILL"):
        """Record every shard in turn; the fault is set for the last one (whose end merges)."""
        result = None
        for s in range(n_shards):
            last = s == n_shards - 1
            result = self.record_shard(out, s, n_shards, fault=fault if last else None,
                                       signal=signal)
            if not last:
                assert result.returncode == 0, result.stderr
        return result


@pytest.fixture(scope="session")
def recording(tmp_path_factory):
    return Recording(tmp_path_factory.mktemp("reliability"))
