"""Shared inputs of the fidelity tests: a real torchvision ResNet-18 (random weights) recorded over the
procedural world through the public `record`."""

import pytest
import torch

import neuronatlas as na
from tests.fidelity.common import PROBE


@pytest.fixture(scope="session")
def resnet18():
    from neuronatlas.models import load_target

    torch.manual_seed(0)
    return load_target("torchvision:resnet18", random_weights=True)


@pytest.fixture(scope="session")
def resnet18_run(tmp_path_factory, resnet18):
    """layer4 (a 4-D conv output: spatially averaged) and fc (2-D), with the pooled matrix saved."""
    out = tmp_path_factory.mktemp("fidelity") / "resnet18"
    return na.record(resnet18, PROBE, out, layers="layer4,fc", save_acts=True, batch_size=50,
                     num_workers=0)


