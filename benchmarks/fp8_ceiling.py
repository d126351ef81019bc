"""FP8 grouped-GEMM ceiling of a MoE layer's expert work (issue 23): what e4m3 tensor cores reach on it.

Per (shape, T): the routing the layer gets (`mxmoe.problem.make_routing`, same seed), and both expert GEMMs of every
hit expert as `torch._scaled_grouped_mm` calls: e4m3 operands, fp32 row-wise scales (one per token row, one per
weight output row), bf16 out. Each expert's rows are padded to a multiple of GROUP_ALIGN (the grouped GEMM's row
alignment), the padding counted as work done (at most 15 rows an expert). Nothing between the GEMMs and no combine:
a ceiling of the GEMM work, not a layer. The TFLOP/s use the layer's FLOPs (`mxmoe.spec.flops`), so they compare
with the dense bf16 rate `measure_floors` reports in the same run (printed beside them). Method as vs_peer.py: one
CUDA graph of both GEMMs, 256 MiB L2 flush before every replay, median.

    PYTHONPATH=src python3 benchmarks/fp8_ceiling.py --model deepseek-v3 --tokens 4096,16384,32768 --csv out.csv

Needs a GPU with FP8 grouped GEMMs (sm_90); `expert_groups`, the routing-to-groups step, is tested on the CPU
(tests/test_fp8_ceiling.py). Operand values are random (speed does not depend on them); never asserts.
"""

from __future__ import annotations

import argparse
import csv
import sys

import torch

GROUP_ALIGN = 16
E4M3_MAX = 448.0


def expert_groups(topk_ids: torch.Tensor, experts: int, align: int = GROUP_ALIGN) -> tuple[torch.Tensor, torch.Tensor]:
    """(the hit experts in id order, int32 end offsets of their padded row groups): expert hit[g] owns rows
    [offs[g-1], offs[g]) of the grouped operand, its count of (token, slot) pairs rounded up to `align`."""
    if topk_ids.dim() != 2:
        raise ValueError(f"topk_ids must be [T, topk], got {tuple(topk_ids.shape)}")
    counts = torch.bincount(topk_ids.flatten().long(), minlength=experts)
    if counts.numel() > experts:
        raise ValueError(f"an expert id is out of range [0, {experts})")
    hit = counts.nonzero().flatten()
    padded = (counts[hit] + align - 1) // align * align
    return hit, torch.cumsum(padded, 0).to(torch.int32)


def _e4m3(*shape: int, device: str) -> torch.Tensor:
    """Random e4m3 values, drawn one leading slice at a time: deepseek-v3's W13 drawn whole in f32 asked the H100
    for 28 GiB (7de9e8b)."""
    out = torch.empty(*shape, dtype=torch.float8_e4m3fn, device=device)
    for part in out.view(shape[0], -1).split(max(1, (1 << 28) // max(1, out[0].numel()))):
        part.copy_(torch.randn(part.shape, device=device) * (E4M3_MAX / 8))
    return out


def grouped_gemms(shape, topk_ids: torch.Tensor, device: str = "cuda"):
    """A no-argument callable running the two grouped GEMMs of (shape, routing), and its padded row count."""
    hit, offs = expert_groups(topk_ids, shape.experts)
    offs = offs.to(device)
    rows, e, h, i = int(offs[-1]), hit.numel(), shape.hidden, shape.inter
    x1, x2 = _e4m3(rows, h, device=device), _e4m3(rows, i, device=device)
    w13 = _e4m3(e, 2 * i, h, device=device).transpose(-2, -1)  # [E, H, 2I], K-major: column-major per expert
    w2 = _e4m3(e, h, i, device=device).transpose(-2, -1)  # [E, I, H]
    sx1 = torch.ones(rows, device=device)
    sx2 = torch.ones(rows, device=device)
    sw13 = torch.ones(e, 2 * i, device=device)
    sw2 = torch.ones(e, h, device=device)

    def run():
        y1 = torch._scaled_grouped_mm(x1, w13, sx1, sw13, offs=offs, out_dtype=torch.bfloat16)
        y2 = torch._scaled_grouped_mm(x2, w2, sx2, sw2, offs=offs, out_dtype=torch.bfloat16)
        return y1, y2

    return run, rows


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="deepseek-v3", help="comma list of mxmoe.shapes.MODELS names")
    ap.add_argument("--tokens", default="4096,16384,32768", help="comma list or a mxmoe.shapes grid name")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--csv", default=None)
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("fp8_ceiling needs a GPU with FP8 grouped GEMMs (sm_90); nothing to time here")
    from scan_v2 import FLUSH_BYTES, graph_median_us  # the benchmarks' graph clock (benchmarks/ is on sys.path)

    from mxmoe.problem import make_routing
    from mxmoe.shapes import get_shape, parse_tokens
    from mxmoe.spec import flops
    from mxmoe.tuning.timing.bench import measure_floors

    flush = torch.empty(FLUSH_BYTES, dtype=torch.uint8, device="cuda")
    floors = measure_floors(interpreter=False)
    print(f"dense bf16 rate (measured now): {floors.rate / 1e12:.0f} TFLOP/s", flush=True)
    rows = []
    for name in (m.strip() for m in args.model.split(",")):
        shape = get_shape(name)
        for t in parse_tokens(args.tokens):
            ids, _ = make_routing(shape, t, seed=args.seed, device="cuda")
            try:
                run, padded = grouped_gemms(shape, ids)
                us = graph_median_us(run, flush, args.reps)
            except Exception as exc:  # an unsupported size or torch build: say so, go on
                print(f"{name} T={t}: {type(exc).__name__}: {str(exc)[:200]}", flush=True)
                continue
            tflops = flops(shape, t) / (us * 1e-6) / 1e12
            rows.append({"shape": name, "T": t, "fp8_grouped_us": round(us, 2), "padded_rows": padded,
                         "tflops": round(tflops, 1), "vs_dense_bf16": round(tflops * 1e12 / floors.rate, 3),
                         "dense_bf16_tflops": round(floors.rate / 1e12, 1), "device": torch.cuda.get_device_name(),
                         "torch": torch.__version__})
            print(f"{name} T={t}: {us:.1f} us, {tflops:.0f} TFLOP/s = {rows[-1]['vs_dense_bf16']:.2f}x dense bf16 "
                  f"({padded} padded rows)", flush=True)
            torch.cuda.empty_cache()
    if args.csv and rows:
        with open(args.csv, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
