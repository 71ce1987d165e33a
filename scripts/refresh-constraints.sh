#!/usr/bin/env bash
# Refresh constraints.txt: the exact versions of every package the test suite passed with.
# scripts/setup.sh installs with `-c constraints.txt`, so a fresh machine gets what was tested;
# pyproject.toml keeps ranges (what neuronatlas works with), this file pins one tested point in them.
#
# It builds a scratch venv (.venv-refresh), installs the newest versions pyproject allows (no
# constraints), runs the whole suite there, and writes constraints.txt only if the suite passes.
# Usage: bash scripts/refresh-constraints.sh           (takes as long as setup + the suite)
#        KEEP_VENV=1 bash scripts/refresh-constraints.sh   keeps .venv-refresh for a look
set -euo pipefail
cd "$(dirname "$0")/.."
unset PIP_CONSTRAINT  # the newest versions pyproject allows, not the old pins
PY="${PYTHON:-python3}"
VENV=.venv-refresh
rm -rf "$VENV"
"$PY" -m venv "$VENV"
VPY="$VENV/bin/python"
pip_install() { "$VPY" -m pip install --disable-pip-version-check -q "$@"; }
# torch as setup.sh pins it (torchvision must match it exactly); everything else at its newest
pip_install torch==2.14.1 torchvision==0.29.1
pip_install -e ".[all,dev]"
PY="$VPY" bash scripts/install-zoo.sh
"$VPY" -m pytest -q -p no:cacheprovider
{
  echo "# The exact versions the whole test suite passed with ($("$VPY" -c 'import platform; print("Python", platform.python_version(), platform.system(), platform.machine())'), $(date -u +%Y-%m-%d))."
  echo "# Written by scripts/refresh-constraints.sh; scripts/setup.sh installs with -c constraints.txt."
  echo "# Edit pyproject.toml's ranges, not this file. Pins of packages a platform does not install"
  echo "# (nvidia-* off Linux) are ignored there."
  # --all: setuptools too (some packages import it at run time); pip itself is not pinned
  "$VPY" -m pip freeze --all --exclude-editable --disable-pip-version-check | grep -v '^pip==' \
    | LC_ALL=C sort -f
} > constraints.txt.tmp
mv constraints.txt.tmp constraints.txt
[ -n "${KEEP_VENV:-}" ] || rm -rf "$VENV"
echo "constraints.txt refreshed: $(grep -vc '^#' constraints.txt) packages" >&2
