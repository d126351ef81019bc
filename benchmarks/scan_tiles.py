"""Time one stage over a small grid of tile configs for one (model, path, T): a hand-driven look
before the real sweep. CUDA-graph replay via triton.testing.do_bench_cudagraph; prints the fastest.
Never asserts; a config that fails to compile or launch is printed with its error.
"""

from __future__ import annotations

import argparse
import itertools

import torch
import triton

from mxmoe.config import Mma, TileConfig
from mxmoe.heuristic import default_config
from mxmoe.kernels.quant import quantize_input
from mxmoe.kernels.stage1 import stage1
from mxmoe.kernels.stage2 import stage2
from mxmoe.problem import make_problem
from mxmoe.routing import align_by_expert
from mxmoe.shapes import MODELS, Path


def ints(s: str) -> list[int]:
    return [int(x) for x in s.split(",")]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="deepseek-v3")
    ap.add_argument("--path", default="a16w4")
    ap.add_argument("--tokens", type=int, default=1)
    ap.add_argument("--stage", type=int, default=1)
    ap.add_argument("--bm", default="16")
    ap.add_argument("--bn", default="32,64,128")
    ap.add_argument("--bk", default="128,256")
    ap.add_argument("--warps", default="4")
    ap.add_argument("--stages", default="3,4")
    ap.add_argument("--gm", default="1")
    ap.add_argument("--mma", default="dot_scaled,upcast")
    ap.add_argument("--split", default="1")
    ap.add_argument("--top", type=int, default=8)
    args = ap.parse_args()
    shape, path, t = MODELS[args.model], Path(args.path), args.tokens
    p = make_problem(shape, path, t, device="cuda")
    base = default_config(shape, path, t)
    x = quantize_input(p.hidden, path)
    results = []
    grid = itertools.product(ints(args.bm), ints(args.bn), ints(args.bk), ints(args.warps), ints(args.stages),
                             ints(args.gm), args.mma.split(","), ints(args.split))
    for bm, bn, bk, w, s, gm, mma, sk in grid:
        cfg = TileConfig(block_m=bm, block_n=bn, block_k=bk, num_warps=w, num_stages=s, group_m=gm, mma=Mma(mma),
                         split_k=sk)
        try:
            plan = align_by_expert(p.topk_ids, shape.experts, bm, validate=False)
            if args.stage == 1:
                fn = lambda: stage1(x, p.weights, plan, cfg)  # noqa: B023
            else:
                h = stage1(x, p.weights, plan, base.stage1.replace(block_m=bm))
                tw = p.topk_weights.float()
                fn = lambda: stage2(h, p.weights, plan, tw, cfg, t)  # noqa: B023
            fn()
            us = triton.testing.do_bench_cudagraph(fn, rep=30) * 1e3
            results.append((us, cfg.short()))
            print(f"  {us:9.1f} us  {cfg.short()}", flush=True)
        except Exception as exc:  # a survey: report and go on
            print(f"ERR {cfg.short()}: {str(exc)[:160]}")
    results.sort()
    print(f"== {args.model} {path.value} T={t} stage{args.stage}: {len(results)} configs; fastest:")
    for us, name in results[: args.top]:
        print(f"  {us:9.1f} us  {name}")
    torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
