#!/usr/bin/env bash
# Set up and run the main job. Without a GPU everything runs on the Triton interpreter for the
# tiny shape: the pipeline is the real one, but timings there are not claims.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/mxmoe doctor
.venv/bin/mxmoe demo --model tiny --tokens 17
