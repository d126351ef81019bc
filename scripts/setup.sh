#!/usr/bin/env bash
# Create .venv and install mxmoe with the extras named in $1 (default: everything the tests use). Idempotent.
#   bash scripts/setup.sh                  # test,report,gpu,guardrail,ray: what scripts/test.sh and CI need
#   bash scripts/setup.sh report,gpu       # what the main job (scripts/run.sh) needs
# Versions come from constraints.txt, so a fresh machine gets what CI got. On a machine without an NVIDIA GPU it
# installs the local CPU build of torch first (torch==2.13.0), so nothing ever pulls a multi-GB CUDA build; on a
# GPU machine it reuses the system torch.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
EXTRAS=${1:-test,report,gpu,guardrail,ray}
stamp=".venv/.mxmoe-installed-${EXTRAS//,/-}"
if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ] && [ "$stamp" -nt constraints.txt ]; then exit 0; fi
step() { echo "[setup] $*"; }
# pip's own lines, filtered to one per package; its exit code, not grep's, decides
pip_quiet() { set +o pipefail; "$@" 2>&1 | tee .venv/pip.log | grep --line-buffered -E "^(Collecting|Successfully|ERROR)";
              local rc=${PIPESTATUS[0]}; set -o pipefail
              [ "$rc" -eq 0 ] || { echo "[setup] pip failed (exit $rc); its log: .venv/pip.log"; exit "$rc"; }; }
PIP=(.venv/bin/python -m pip install --disable-pip-version-check --progress-bar off -c constraints.txt)
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  [ -d .venv ] || { step "creating .venv (with the system's CUDA torch)"; "$PY" -m venv --system-site-packages .venv; }
else
  if [ ! -d .venv ]; then step "creating .venv"; "$PY" -m venv .venv; fi
  if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    step "installing the CPU build of torch (torch==2.13.0; about a minute)"
    pip_quiet .venv/bin/python -m pip install --disable-pip-version-check --progress-bar off torch==2.13.0
  fi
fi
step "installing mxmoe[$EXTRAS] from constraints.txt"
pip_quiet "${PIP[@]}" -e ".[$EXTRAS]"
.venv/bin/python -c "import mxmoe" || { echo "[setup] failed: mxmoe does not import"; exit 1; }
step "done"
touch "$stamp"
