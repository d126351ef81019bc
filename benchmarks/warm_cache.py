"""Fill Triton's on-disk cache with the heuristic's kernels, in parallel, before a timed run.

A bench or sweep process compiles each (shape, path, config) it meets serially, seconds apiece; on a
device lease that time is scarce. Here one spawn process per (model, path) launches moe() once per T
with the config the real shape would get (`choose_config`) on a copy of the shape cut to a few experts:
the kernels specialise on constexprs (tile, path, activation, top-k, bias) and on argument
divisibility, not on the expert count, so the compiled binaries are the ones the timed run loads.
No timing, no assertions: a failure prints and the timed run compiles that kernel itself.

    python benchmarks/warm_cache.py --model gpt-oss-20b,deepseek-v3 --path a16w4 --tokens grid --jobs 8
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import dataclasses
import multiprocessing as mp
import time


def _warm(model: str, path: str, tokens: str) -> str:
    import torch

    from mxmoe.dispatch import choose_config
    from mxmoe.moe import moe
    from mxmoe.problem import make_problem
    from mxmoe.shapes import get_shape, model_tokens, parse_tokens

    shape = get_shape(model)
    small = dataclasses.replace(shape, experts=min(shape.experts, max(8, shape.topk)))
    start, done = time.monotonic(), []
    for t in model_tokens(shape, parse_tokens(tokens)):
        cfg = choose_config(shape, path, t)
        p = make_problem(small, path, min(t, 4096), seed=t, device="cuda")
        moe(p.hidden, p.weights, p.topk_ids, p.topk_weights, path, cfg)
        torch.cuda.synchronize()
        done.append(t)
    return f"{model}/{path}: {len(done)} T warmed in {time.monotonic() - start:.0f} s"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="comma list")
    ap.add_argument("--path", default="a16w4", help="comma list")
    ap.add_argument("--tokens", default="grid")
    ap.add_argument("--jobs", type=int, default=8)
    args = ap.parse_args()
    jobs = [(m, p) for m in args.model.split(",") for p in args.path.split(",")]
    with cf.ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn")) as pool:
        futs = {pool.submit(_warm, m, p, args.tokens): (m, p) for m, p in jobs}
        for f in cf.as_completed(futs):
            try:
                print(f.result(), flush=True)
            except Exception as exc:  # noqa: BLE001 - report and let the timed run compile it
                print(f"{futs[f]}: warm-up failed: {type(exc).__name__}: {exc}", flush=True)


if __name__ == "__main__":
    main()
