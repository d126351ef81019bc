"""Compile and check every path x MMA lever on the GPU, with a rough graph-replay time per point.

A quick first look (triton.testing.do_bench_cudagraph, weights not rotated): bench_moe.py makes the
numbers that count. Prints one row per point; never asserts.
"""

from __future__ import annotations

import argparse
import time
import traceback

import torch
import triton

from mxmoe.config import Combine, Mma, MoEConfig
from mxmoe.heuristic import default_config
from mxmoe.moe import moe
from mxmoe.problem import make_problem
from mxmoe.shapes import MODELS, Path, parse_tokens
from mxmoe.tolerance import compare, lookup


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="gpt-oss-120b,deepseek-v3,deepseek-v3-tp8")
    ap.add_argument("--paths", default="a16w4,a8w4,a4w4")
    ap.add_argument("--tokens", default="1,16,128,1024")
    ap.add_argument("--mma", default="dot_scaled,upcast")
    ap.add_argument("--combine", default="atomic")
    args = ap.parse_args()
    print(f"{'model':16} {'path':6} {'T':>6} {'mma':10} {'comb':6} {'ok':3} {'max_rel':>9} {'rms_rel':>9} {'us':>9}")
    for model in args.models.split(","):
        shape = MODELS[model]
        for t in parse_tokens(args.tokens):
            for path in [Path(p) for p in args.paths.split(",")]:
                prob = make_problem(shape, path, t, device="cuda")
                ref = prob.reference() if t <= 4096 else None
                for mma in args.mma.split(","):
                    for comb in args.combine.split(","):
                        base = default_config(shape, path, t)
                        cfg = MoEConfig(base.stage1.replace(mma=Mma(mma)),
                                        base.stage2.replace(mma=Mma(mma), combine=Combine(comb)))
                        fn = lambda: moe(prob.hidden, prob.weights, prob.topk_ids, prob.topk_weights,  # noqa: B023
                                         path, cfg, validate=False)  # noqa: B023
                        try:
                            t0 = time.time()
                            out = fn()
                            torch.cuda.synchronize()
                            ctime = time.time() - t0
                            if ref is not None:
                                rep = compare(out.float(), ref, lookup(path, "layer"))
                                ok, mx, rms = rep.ok, rep.max_rel, rep.rms_rel
                            else:
                                ok, mx, rms = "-", float("nan"), float("nan")
                            us = triton.testing.do_bench_cudagraph(fn, rep=50) * 1e3
                            print(f"{model:16} {path.value:6} {t:>6} {mma:10} {comb:6} {ok!s:3} {mx:9.2e} "
                                  f"{rms:9.2e} {us:9.1f}  (first call {ctime:.1f}s)", flush=True)
                        except Exception as exc:  # report and go on: this is a survey, not a test
                            print(f"{model:16} {path.value:6} {t:>6} {mma:10} {comb:6} ERR {exc!r:.300}", flush=True)
                            traceback.print_exc()
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
