"""A/B of the v2 heuristic against the v1 rule on the GPU: the whole layer, CUDA-graph replay, L2 flushed before each
replay, median of the replays, two rounds; each v2 output checked against the fp32 reference up to T = 1024.

    PYTHONPATH=src python3 benchmarks/ab_v1_v2.py deepseek-v3-tp8:a16w4:1,16,128 gpt-oss-120b:a4w4:1,1024

Made results/h100/2026-12-06_v2_vs_v1_dce7fba.log. Prints; never asserts. Needs a GPU.
"""

from __future__ import annotations

import statistics
import sys

import torch
from scan_v2 import FLUSH_BYTES, graph_median_us  # benchmarks/ is on sys.path when run as a script

from mxmoe.heuristic import default_config
from mxmoe.moe import moe
from mxmoe.problem import make_problem
from mxmoe.shapes import MODELS, Path
from mxmoe.tolerance import compare, lookup


def main(argv: list[str]) -> None:
    flush = torch.empty(FLUSH_BYTES, dtype=torch.uint8, device="cuda")
    for arg in argv:
        model, path, ts = arg.split(":")
        for t in (int(x) for x in ts.split(",")):
            p = make_problem(MODELS[model], Path(path), t, seed=t, device="cuda")
            c2, c1 = default_config(p.shape, path, t), default_config(p.shape, path, t, kernels="v1")
            f2 = lambda p=p, c=c2: moe(p.hidden, p.weights, p.topk_ids, p.topk_weights, p.path, c, validate=False)
            f1 = lambda p=p, c=c1: moe(p.hidden, p.weights, p.topk_ids, p.topk_weights, p.path, c, validate=False)
            ok = compare(f2().float(), p.reference(), lookup(Path(path), "layer")).ok if t <= 1024 else None
            rounds = [(graph_median_us(f1, flush, 25), graph_median_us(f2, flush, 25)) for _ in range(2)]
            v1 = statistics.median(r[0] for r in rounds)
            v2 = statistics.median(r[1] for r in rounds)
            print(f"{model} {path} T={t}: v1 {v1:9.1f} us  v2 {v2:9.1f} us  v1/v2 {v1 / v2:5.2f}x  "
                  f"{c2.stage1.short()} | {c2.stage2.short()}  check={ok}", flush=True)
            p = None
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main(sys.argv[1:])
