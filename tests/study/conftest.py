"""A small real run for the study tests: zoo:synthetic-units on the procedural world, with acts and
NetDissect labels (so the report can compare people with a real method and with the ground truth)."""

import pytest
import torch

import neuronatlas as na


@pytest.fixture(scope="session")
def study_run(tmp_path_factory):
    from neuronatlas.describe import describe

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("study") / "run"
    run = na.record("zoo:synthetic-units", "world:n=60,size=64,seed=0", out, layers="units",
                    save_acts=True, num_workers=0)
    describe(run, "netdissect", top=3)
    return na.open_run(out)


@pytest.fixture(scope="session")
def exports(study_run, tmp_path_factory):
    """Two exports of the same run: A without heat maps (seed 1), B with them (seed 2)."""
    from neuronatlas.study import ExportConfig, export_study

    root = tmp_path_factory.mktemp("exports")
    docs = {}
    for name, seed, heat in (("A", 1, False), ("B", 2, True)):
        cfg = ExportConfig(per_layer=20, seed=seed, heatmap=heat, controls=0.2, tile_px=96)
        docs[name] = export_study(study_run, root / name / "grids", root / name / "mapping.json",
                                  cfg, show_progress=False)
        docs[name]["dir"] = root / name / "grids"
        docs[name]["mapping_path"] = root / name / "mapping.json"
    return docs
