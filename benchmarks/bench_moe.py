"""Roofline bench of the MoE layer: `mxmoe bench` as a script (the logic lives in mxmoe.tuning.timing.bench).

Per T: the whole layer (CUDA-graph replay, L2 flushed), stage 1 and stage 2 alone, the routing
alone, the memory and compute floors measured in this run (1 GiB copy, 8192^3 bf16 matmul), the
roofline fraction and TFLOP/s. Appends each row, as it is measured, with device, versions and git
sha to --csv (a run cut off by a time limit keeps what it measured). Prints; never asserts. Without
a GPU it runs the tiny shape on the Triton interpreter with a fake clock.

    python benchmarks/bench_moe.py --model deepseek-v3 --path a16w4 --tokens 1,16,128,1024 --csv results/bench.csv
    python benchmarks/bench_moe.py --model gpt-oss-20b,kimi-k2 --path a16w4,a8w4 --tokens grid \
        --max-time-s 0.6 --deadline-s 300 --csv out.csv      # the full grid inside one device call

`--max-time-s` / `--min-iters` cap each measurement (a 30 ms prefill layer cannot reach 100 samples in
the default 5 s); the row still carries its bootstrap interval, so a capped point shows its spread.
`--deadline-s` stops before starting a point past that many seconds, and says which were not run.
"""

from __future__ import annotations

import argparse
import os
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny", help="one model or a comma list")
    ap.add_argument("--path", default="a16w4", help="one path or a comma list")
    ap.add_argument("--tokens", default="1,16,128,1024", help="1,16,128 | grid | decode | prefill")
    ap.add_argument("--routing", default="uniform")
    ap.add_argument("--csv", default=None)
    ap.add_argument("--max-time-s", type=float, default=None, help="cap per measurement (default: measure's)")
    ap.add_argument("--min-iters", type=int, default=None, help="samples before the stop rule may stop")
    ap.add_argument("--deadline-s", type=float, default=None, help="start no point after this many seconds")
    args = ap.parse_args()

    import torch

    interpreter = not torch.cuda.is_available()
    if interpreter:
        os.environ["TRITON_INTERPRET"] = "1"  # before any kernel module is imported
        print("Triton interpreter: timings are from a fake clock and are not claims")
    from mxmoe.shapes import get_shape, model_tokens, parse_tokens
    from mxmoe.tuning.timing.bench import run_bench, write_csv

    overrides = {k: v for k, v in (("max_time_s", args.max_time_s), ("min_iters", args.min_iters)) if v is not None}
    start = time.monotonic()
    skipped: list[str] = []

    def show(r) -> None:
        print(f"{r.model} {r.path} T={r.tokens:>6}: layer {r.layer_us:9.1f} us (p95 {r.layer_p95_us:.1f}) | "
              f"stage1 {r.stage1_us:8.1f} | stage2 {r.stage2_us:8.1f} | routing {r.routing_us:6.1f} | "
              f"floors mem {r.memory_floor_us:8.2f} comp {r.compute_floor_us:8.2f} | roofline "
              f"{r.roofline_fraction:6.1%} | {r.tflops:7.1f} TFLOP/s | {r.config}", flush=True)
        if args.csv:
            write_csv([r], args.csv)

    def within_deadline(model: str, path: str, tokens):
        for t in tokens:
            if args.deadline_s is not None and time.monotonic() - start > args.deadline_s:
                skipped.append(f"{model}/{path}/T={t}")
                continue
            yield t

    for model in args.model.split(","):
        shape = get_shape(model)
        for path in args.path.split(","):
            todo = within_deadline(model, path, model_tokens(shape, parse_tokens(args.tokens)))
            rows = run_bench(shape, path, todo, interpreter=interpreter, routing=args.routing,
                             overrides=overrides, on_row=show)
            if rows:
                r = rows[0]
                print(f"floors: {r.bandwidth / 1e12:.2f} TB/s, {r.rate / 1e12:.0f} TFLOP/s ({r.floors_source})")
    if skipped:
        print(f"deadline: {len(skipped)} points not run: {', '.join(skipped)}")


if __name__ == "__main__":
    main()
