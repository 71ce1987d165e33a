#!/usr/bin/env bash
# Set up everything neuronatlas needs into .venv at the repository root. Idempotent: a second run
# only checks. Works offline where pip's index is reachable (no model hub needed).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
VPY=.venv/bin/python
# Every pip install below (install-zoo.sh's too) gets the exact versions the suite passed with;
# pyproject.toml keeps the ranges. Refresh the pins with scripts/refresh-constraints.sh.
export PIP_CONSTRAINT=constraints.txt
pip_install() { "$VPY" -m pip install --disable-pip-version-check -q "$@"; }
# torch first, pinned: timm and open_clip import torchvision, which must match torch exactly.
if ! "$VPY" -c "import torch, torchvision; assert torch.__version__.startswith('2.14.1')" 2>/dev/null; then
  pip_install torch==2.14.1 torchvision==0.29.1
fi
pip_install -e ".[all,dev]"
if [ -f scripts/install-zoo.sh ]; then
  PY="$VPY" bash scripts/install-zoo.sh
fi
# The atlas's browser tests drive a real Chromium (Playwright + Debian's package). Installed here when
# this is a Debian-like machine and we are root; elsewhere those tests skip (and fail under CI=1).
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  { DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
    || echo "could not install chromium: the browser tests will skip" >&2
fi
echo "neuronatlas is set up in .venv ($("$VPY" -c 'import torch; print("torch", torch.__version__)'))" >&2
