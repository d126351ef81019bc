#!/usr/bin/env bash
# Second tile survey on the H100: the FMA decode lever, prefill tiles, and the fused align kernel.
set -u
export PYTHONPATH=src:$PYTHONPATH PYTHONUNBUFFERED=1
S=benchmarks/scan_tiles.py
python3 -m pytest -q -x -m gpu tests/kernels/test_align.py -p no:cacheprovider 2>&1 | tail -3
python3 - <<'PY'
import torch, triton
from mxmoe.kernels.align import align
from mxmoe.routing import align_by_expert
for t in (1, 16, 128, 1024, 8192):
    ids = torch.randint(0, 256, (t, 8), device="cuda", dtype=torch.int32)
    a = triton.testing.do_bench_cudagraph(lambda: align(ids, 256, 16, validate=False), rep=30) * 1e3
    b = triton.testing.do_bench_cudagraph(lambda: align_by_expert(ids, 256, 16, validate=False), rep=30) * 1e3
    print(f"align T={t}: triton {a:.1f} us, torch {b:.1f} us", flush=True)
PY
timeout 100 python3 $S --model deepseek-v3 --tokens 1 --stage 1 --bm 1,2 --bn 32,64,128 --bk 128,256,512 --warps 4,8 --stages 2,3 --mma fma --top 6
timeout 60 python3 $S --model deepseek-v3 --tokens 1 --stage 2 --bm 1,2 --bn 32,64,128 --bk 128,256 --warps 4,8 --stages 3 --mma fma --top 6
timeout 60 python3 $S --model deepseek-v3 --tokens 16 --stage 1 --bm 1,2,16 --bn 64 --bk 256 --warps 4 --stages 3 --mma fma,dot_scaled --top 6
timeout 150 python3 $S --model deepseek-v3 --tokens 8192 --stage 1 --bm 128,256 --bn 64,128 --bk 64,128 --warps 8 --stages 3,4 --gm 8 --mma dot_scaled --top 6
timeout 100 python3 $S --model deepseek-v3 --tokens 8192 --stage 2 --bm 128,256 --bn 128,256 --bk 64,128 --warps 8 --stages 3 --gm 8 --mma dot_scaled --top 6
