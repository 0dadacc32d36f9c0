#!/usr/bin/env bash
# Set up kdlab in ./.venv (idempotent): a virtual environment with the package, its dev tools and the
# notebook tools (jupyterlab, nbconvert, papermill).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev,notebooks]'
