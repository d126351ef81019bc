#!/usr/bin/env bash
# One device call: profile a decode stage-1 launch with ncu (clocks untouched), then scan tiles at decode
# and prefill. Prints only; the numbers feed heuristic.py comments.
set -u
export PYTHONPATH=src PYTHONUNBUFFERED=1
S=benchmarks/scan_tiles.py
timeout 90 ncu --clock-control none -k regex:_stage1 -c 1 --section SpeedOfLight --section WarpStateStats \
  --section MemoryWorkloadAnalysis python3 $S --model deepseek-v3 --tokens 1 --stage 1 --bn 64 --bk 128 --warps 4 \
  --stages 4 --mma dot_scaled 2>&1 | grep -vE "^==PROF==|^\s*$" | head -90
timeout 80 python3 $S --model deepseek-v3 --tokens 1 --stage 1 --bn 32,64,128 --bk 128,256,512 --warps 4,8 --stages 3,5 --mma dot_scaled
timeout 40 python3 $S --model deepseek-v3 --tokens 1 --stage 1 --bn 32,64 --bk 128,256 --warps 4 --stages 4 --mma upcast
timeout 70 python3 $S --model deepseek-v3 --tokens 1 --stage 2 --bn 32,64,128 --bk 128,256 --warps 4,8 --stages 3 --split 1,2,4 --mma dot_scaled
timeout 90 python3 $S --model deepseek-v3 --tokens 8192 --stage 1 --bm 64,128 --bn 64,128,256 --bk 64,128 --warps 4,8 --stages 3,4 --gm 8 --mma dot_scaled,upcast
timeout 50 python3 $S --model deepseek-v3 --tokens 8192 --stage 2 --bm 64,128 --bn 128,256 --bk 64,128 --warps 4,8 --stages 3,4 --gm 8 --mma dot_scaled
