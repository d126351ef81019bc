"""Roofline bench of the MoE layer: `mxmoe bench` as a script (the logic lives in mxmoe.tuning.bench).

Per T: the whole layer (CUDA-graph replay, L2 flushed), stage 1 and stage 2 alone, the routing
alone, the memory and compute floors measured in this run (1 GiB copy, 8192^3 bf16 matmul), the
roofline fraction and TFLOP/s. Appends rows with device, versions and git sha to --csv. Prints;
never asserts. Without a GPU it runs the tiny shape on the Triton interpreter with a fake clock.

    python benchmarks/bench_moe.py --model deepseek-v3 --path a16w4 --tokens 1,16,128,1024 --csv results/bench.csv
"""

from __future__ import annotations

import argparse
import os


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--path", default="a16w4")
    ap.add_argument("--tokens", default="1,16,128,1024")
    ap.add_argument("--routing", default="uniform")
    ap.add_argument("--csv", default=None)
    args = ap.parse_args()

    import torch

    interpreter = not torch.cuda.is_available()
    if interpreter:
        os.environ["TRITON_INTERPRET"] = "1"  # before any kernel module is imported
        print("Triton interpreter: timings are from a fake clock and are not claims")
    from mxmoe.shapes import get_shape, parse_tokens
    from mxmoe.tuning.bench import run_bench, write_csv

    def show(r) -> None:
        print(f"{r.model} {r.path} T={r.tokens:>6}: layer {r.layer_us:9.1f} us (p95 {r.layer_p95_us:.1f}) | "
              f"stage1 {r.stage1_us:8.1f} | stage2 {r.stage2_us:8.1f} | routing {r.routing_us:6.1f} | "
              f"floors mem {r.memory_floor_us:8.2f} comp {r.compute_floor_us:8.2f} | roofline "
              f"{r.roofline_fraction:6.1%} | {r.tflops:7.1f} TFLOP/s | {r.config}")

    rows = run_bench(get_shape(args.model), args.path, parse_tokens(args.tokens), interpreter=interpreter,
                     routing=args.routing, on_row=show)
    if rows:
        r = rows[0]
        print(f"floors: {r.bandwidth / 1e12:.2f} TB/s, {r.rate / 1e12:.0f} TFLOP/s ({r.floors_source})")
    if args.csv:
        write_csv(rows, args.csv)
        print(f"appended {len(rows)} rows to {args.csv}")


if __name__ == "__main__":
    main()
