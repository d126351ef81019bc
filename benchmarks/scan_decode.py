"""Decode levers against the heuristic: the whole layer with other mma levers (fma at BLOCK_M < 16, the swapped
levers) over a small tile grid.

At T = 1 to a few tokens every hit expert holds one or two rows, and the heuristic's BLOCK_M 16 tile makes the
tensor cores multiply 14-15 rows of padding, after the compiler has staged the upcast weights through shared
memory for them. The FMA lever at BLOCK_M 1 or 2 multiplies only the real rows, in registers; the swapped levers
(`dot_scaled_t`, `upcast_t`) make the weight tile the MMA's M side (wgmma from BLOCK_N 64 over 4 warps) and the
16 token rows its N. This scans stage 1
over a small grid (stage 2 at the heuristic's), then stage 2 (stage 1 at the best found), timing the whole layer
with the harness's `measure` (CUDA-graph replay, L2 flushed) and checking each output against the heuristic's.
Prints and writes a CSV; never asserts (a benchmark, not a test).
"""

from __future__ import annotations

import argparse
import csv
import itertools
import sys

import torch

from mxmoe.config import Mma, MoEConfig, TileConfig
from mxmoe.heuristic import decode_split, default_config
from mxmoe.moe import moe
from mxmoe.problem import make_problem
from mxmoe.shapes import MODELS, MoEShape, Path, parse_tokens
from mxmoe.tuning.measure import measure

MAX_REL_ERR = 2e-2  # fma sums f32 products in another order than the MMA: a few bf16 ulps of the output


def ints(s: str) -> list[int]:
    return [int(v) for v in s.split(",")]


def stage_grid(shape: MoEShape, tokens: int, stage: int, args: argparse.Namespace) -> list[TileConfig]:
    """The product of the scan's levers for one stage, split-K as the heuristic would set it for each tile."""
    n, k = (shape.inter, shape.hidden) if stage == 1 else (shape.hidden, shape.inter)
    hit = min(shape.experts, tokens * shape.topk)
    out = []
    for mma, bm, bn, bk, warps in itertools.product([Mma(m) for m in args.mma.split(",")], ints(args.bm),
                                                    ints(args.bn), ints(args.bk), ints(args.warps)):
        if n % bn or bk > max(64, 1 << (k - 1).bit_length()):
            continue
        split = decode_split(hit * n // bn, k, bk)  # as the heuristic sets it for this tile
        out.append(TileConfig(block_m=bm, block_n=bn, block_k=bk, num_warps=warps, num_stages=2, group_m=1,
                              mma=mma, split_k=split))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="deepseek-v3-tp8")
    ap.add_argument("--paths", default="a16w4")
    ap.add_argument("--tokens", default="1")
    ap.add_argument("--mma", default="fma", help="comma list of mma levers to scan")
    ap.add_argument("--bm", default="1", help="comma list of BLOCK_M")
    ap.add_argument("--bn", default="32,64,128")
    ap.add_argument("--bk", default="128,256,512")
    ap.add_argument("--warps", default="2,4")
    ap.add_argument("--max-time-s", type=float, default=0.25)
    ap.add_argument("--csv", default=None)
    args = ap.parse_args()
    rows: list[dict[str, object]] = []

    def time_layer(p, path: Path, cfg: MoEConfig, ref: torch.Tensor | None, label: str) -> float | None:
        try:
            out = moe(p.hidden, p.weights, p.topk_ids, p.topk_weights, path, cfg, validate=False)
            err = 0.0 if ref is None else ((out.float() - ref.float()).abs().max() / ref.float().abs().max()).item()
            if err > MAX_REL_ERR:
                print(f"  WRONG {label} rel err {err:.3g}", flush=True)
                return None
            us = measure(lambda: moe(p.hidden, p.weights, p.topk_ids, p.topk_weights, path, cfg, validate=False),
                         mode="graph", max_time_s=args.max_time_s, min_iters=30, idle_sample_s=0.05).median_us
        except Exception as exc:  # a survey: report and go on
            print(f"  ERR {label}: {str(exc)[:200]}", flush=True)
            return None
        rows.append({"model": p.shape.name, "path": path.value, "tokens": p.tokens, "label": label,
                     "stage1": cfg.stage1.short(), "stage2": cfg.stage2.short(), "us": round(us, 2),
                     "rel_err": f"{err:.2e}"})
        print(f"  {us:8.2f} us  {label:8} s1 {cfg.stage1.short()} | s2 {cfg.stage2.short()}  err {err:.1e}", flush=True)
        return us

    for model, path_s, t in itertools.product(args.models.split(","), args.paths.split(","),
                                              parse_tokens(args.tokens)):
        shape, path = MODELS[model], Path(path_s)
        p = make_problem(shape, path, t, device="cuda")
        base = default_config(shape, path, t)
        ref = moe(p.hidden, p.weights, p.topk_ids, p.topk_weights, path, base, validate=False)
        print(f"== {model} {path.value} T={t}", flush=True)
        base_us = time_layer(p, path, base, None, "base")
        best1, best1_us = base.stage1, base_us
        for c in stage_grid(shape, t, 1, args):
            us = time_layer(p, path, MoEConfig(c, base.stage2), ref, "stage1")
            if us is not None and (best1_us is None or us < best1_us):
                best1, best1_us = c, us
        best, best_us = MoEConfig(best1, base.stage2), best1_us
        for c in stage_grid(shape, t, 2, args):
            us = time_layer(p, path, MoEConfig(best1, c), ref, "stage2")
            if us is not None and (best_us is None or us < best_us):
                best, best_us = MoEConfig(best1, c), us
        print(f"== best {model} {path.value} T={t}: {best_us:.2f} us against {base_us:.2f} (x{base_us / best_us:.2f})"
              f"  s1 {best.stage1.short()} | s2 {best.stage2.short()}", flush=True)
        torch.cuda.empty_cache()
    if args.csv and rows:
        with open(args.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        print(f"wrote {len(rows)} rows to {args.csv}", file=sys.stderr)


if __name__ == "__main__":
    main()
