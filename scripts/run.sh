#!/usr/bin/env bash
# Set up and run the main job: a baseline sweep, a tuning sweep, the guardrail, the claim gate and the HTML report,
# all on the embedded SQLite ledger (./mxmoe.sqlite; re-running resumes and adds nothing new).
# Without a GPU everything runs on the Triton interpreter for the tiny shape: the pipeline is the real
# one, but its timings come from a fake clock and are not claims (every row says so).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh report,gpu
MX=.venv/bin/mxmoe
LEDGER=${MXMOE_LEDGER:-mxmoe.sqlite}
$MX doctor
if .venv/bin/python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  MODEL=gpt-oss-20b; TOKENS=1,16,128,1024; LIMIT=4; GPU=1
else
  MODEL=tiny; TOKENS=1,17; LIMIT=4; GPU=0
fi
$MX sweep --model $MODEL --path a16w4 --tokens $TOKENS --campaign quick-base --baseline-only --ledger "$LEDGER"
$MX sweep --model $MODEL --path a16w4 --tokens $TOKENS --campaign quick-tune --baseline quick-base \
  --limit $LIMIT --ledger "$LEDGER"
# Every winning config runs inside a real GPT-OSS graph before it may be claimed (on the interpreter no row is
# claimable, so there is nothing to guard).
if [ "$GPU" = 1 ]; then
  $MX guardrail --campaign quick-tune --model gpt-oss --path a16w4 --ledger "$LEDGER" \
    || echo "guardrail: a winner failed (above); the claim below says so"
fi
$MX claim quick-tune --baseline quick-base --ledger "$LEDGER" || echo "claim: not claimable (reasons above)"
$MX report quick-tune --baseline quick-base --ledger "$LEDGER" -o report
