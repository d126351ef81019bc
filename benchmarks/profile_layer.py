"""Where does a layer's time go? Times routing, input quantization, stage 1 and stage 2 apart.

Each piece is timed alone with CUDA-graph replay (triton.testing.do_bench_cudagraph), next to the
whole layer, and the weight-stream floor at the measured copy bandwidth. Prints; never asserts.
"""

from __future__ import annotations

import argparse

import torch
import triton

from mxmoe.config import Mma, MoEConfig
from mxmoe.heuristic import default_config
from mxmoe.kernels.align import align
from mxmoe.kernels.quant import quantize_input
from mxmoe.kernels.stage1 import stage1
from mxmoe.kernels.stage2 import stage2
from mxmoe.moe import moe
from mxmoe.problem import make_problem
from mxmoe.routing import experts_hit
from mxmoe.shapes import MODELS, Path, parse_tokens
from mxmoe.spec import layer_bytes


def copy_bandwidth() -> float:
    x = torch.empty(2**30, dtype=torch.uint8, device="cuda")
    y = torch.empty_like(x)
    ms = triton.testing.do_bench(lambda: y.copy_(x), rep=200)
    return 2 * x.numel() / (ms * 1e-3)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="gpt-oss-120b,deepseek-v3")
    ap.add_argument("--paths", default="a16w4")
    ap.add_argument("--tokens", default="1,16,1024")
    ap.add_argument("--mma", default="dot_scaled")
    ap.add_argument("--set", default="", help="overrides for both stages, e.g. block_n=128,num_warps=8")
    args = ap.parse_args()
    bw = copy_bandwidth()
    print(f"copy bandwidth {bw / 1e12:.2f} TB/s")
    over = {k: int(v) for k, v in (kv.split("=") for kv in args.set.split(",") if kv)}
    for model in args.models.split(","):
        shape = MODELS[model]
        for path in [Path(p) for p in args.paths.split(",")]:
            for t in parse_tokens(args.tokens):
                p = make_problem(shape, path, t, device="cuda")
                base = default_config(shape, path, t)
                cfg = MoEConfig(base.stage1.replace(mma=Mma(args.mma), **over),
                                base.stage2.replace(mma=Mma(args.mma), **over))
                e = shape.experts
                plan = align(p.topk_ids, e, cfg.stage1.block_m, validate=False)
                x = quantize_input(p.hidden, path)
                h = stage1(x, p.weights, plan, cfg.stage1)
                tw = p.topk_weights.float()
                parts = {
                    "route": lambda: align(p.topk_ids, e, cfg.stage1.block_m, validate=False),  # noqa: B023
                    "quant": lambda: quantize_input(p.hidden, path),  # noqa: B023
                    "stage1": lambda: stage1(x, p.weights, plan, cfg.stage1),  # noqa: B023
                    "stage2": lambda: stage2(h, p.weights, plan, tw, cfg.stage2, t),  # noqa: B023
                    "layer": lambda: moe(p.hidden, p.weights, p.topk_ids, p.topk_weights, path, cfg,  # noqa: B023
                                         validate=False),
                }
                us = {k: triton.testing.do_bench_cudagraph(f, rep=40) * 1e3 for k, f in parts.items()}
                floor = layer_bytes(shape, path, t, experts_hit(p.topk_ids, e)) / bw * 1e6
                row = " ".join(f"{k}={v:8.1f}" for k, v in us.items())
                print(f"{model:16} {path.value} T={t:<6} {row}  floor={floor:7.1f}us  frac={floor / us['layer']:.2f}",
                      flush=True)
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
