"""A recorded world-clip run with second-order effects of two MLP layers (tiny: 40 world images),
shared by the application tests (imported by them; not a conftest, so it does not clash with the
lens core tests' fixtures)."""

import numpy as np
import pytest

WORLD = "world:n=40,size=32,seed=3"
LAYERS = ("1", "2")


_CACHE: dict = {}  # each test module imports the fixture (its own copy): compute once for all


@pytest.fixture(scope="session")
def world_clip_lens_run(tmp_path_factory):
    pytest.importorskip("transformers")
    if "run" not in _CACHE:
        _CACHE["run"] = _compute(tmp_path_factory)
    return _CACHE["run"]


def _compute(tmp_path_factory):
    import neuronatlas as na
    from neuronatlas.lens.compute import SecondOrderConfig, compute_second_order

    out = tmp_path_factory.mktemp("wc-lens") / "run"
    results = [compute_second_order("zoo:world-clip", WORLD, out,
                                    SecondOrderConfig(layer=layer, top_k=10, batch_size=20),
                                    show_progress=False) for layer in LAYERS]
    # a recorded run of the same neurons, so describe/evaluate see the lens units as run units
    na.record("zoo:world-clip", WORLD, out, layers=[r.layer for r in results], k=5,
              num_workers=0, save_acts=True)
    return out, results

