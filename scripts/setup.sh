#!/usr/bin/env bash
# Create .venv and install mxmoe with its test and report extras. Idempotent.
# On a machine without an NVIDIA GPU it installs the local CPU build of torch first (torch==2.13.0),
# so nothing ever pulls a multi-GB CUDA build; on a GPU machine it reuses the system torch.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
stamp=.venv/.mxmoe-installed
if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ]; then exit 0; fi
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  [ -d .venv ] || "$PY" -m venv --system-site-packages .venv
else
  [ -d .venv ] || "$PY" -m venv .venv
  .venv/bin/python -m pip install -q --disable-pip-version-check torch==2.13.0
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[test,report,gpu,guardrail,ray]"
touch "$stamp"
