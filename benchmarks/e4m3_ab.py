"""a8w4 stage 1 on e4m3 wgmma (Mma.WGMMA_E4M3) against the bf16-carrier wgmma, with a16w4 on the same weights as
the yardstick, at prefill points (issue 23).

    PYTHONPATH=src python3 benchmarks/e4m3_ab.py deepseek-v3:4096 deepseek-v3:16384 --csv e4m3_ab.csv

Each point: the heuristic's a8w4 config, then the same with stage 1 on e4m3 (weights built with e4m3=True), and
a16w4's default, timed in `--rounds` rounds of A B C order (CUDA-graph replay, L2 flushed before each replay, median
of 15); the e4m3 output is checked against the a8w4 one (max relative difference over the tensor max; the two
differ only in the accumulation order of the MMA). Prints us and ratios; never asserts. Needs a GPU.
"""

from __future__ import annotations

import argparse
import statistics
import sys

import torch
from scan_v2 import FLUSH_BYTES, graph_median_us, write_csv

from mxmoe.config import Mma, MoEConfig
from mxmoe.heuristic import default_config
from mxmoe.moe import moe
from mxmoe.problem import make_problem
from mxmoe.shapes import MODELS, Path


def _point(spec: str, rounds: int, flush: torch.Tensor) -> dict:
    model, t = spec.split(":")
    t = int(t)
    p = make_problem(MODELS[model], Path.A8W4, t, seed=t, device="cuda")
    w = p.weights.with_e4m3()
    base = default_config(p.shape, Path.A8W4, t)
    e4 = MoEConfig(base.stage1.replace(mma=Mma.WGMMA_E4M3), base.stage2)
    a16 = default_config(p.shape, Path.A16W4, t)
    calls = {
        "a8w4": lambda: moe(p.hidden, w, p.topk_ids, p.topk_weights, Path.A8W4, base, validate=False),
        "a8w4_e4m3": lambda: moe(p.hidden, w, p.topk_ids, p.topk_weights, Path.A8W4, e4, validate=False),
        "a16w4": lambda: moe(p.hidden, w, p.topk_ids, p.topk_weights, Path.A16W4, a16, validate=False),
    }
    ref, got = calls["a8w4"]().float(), calls["a8w4_e4m3"]().float()
    diff = ((got - ref).abs().max() / ref.abs().max().clamp_min(1e-30)).item()
    times: dict[str, list[float]] = {k: [] for k in calls}
    for _ in range(rounds):
        for k, fn in calls.items():
            times[k].append(graph_median_us(fn, flush))
    us = {k: statistics.median(v) for k, v in times.items()}
    row = {"point": spec, "config": e4.stage1.short(), "max_rel_diff": f"{diff:.2e}"}
    row.update({f"{k}_us": f"{v:.1f}" for k, v in us.items()})
    row["e4m3_speedup"] = f"{us['a8w4'] / us['a8w4_e4m3']:.3f}"
    row["e4m3_vs_a16w4"] = f"{us['a16w4'] / us['a8w4_e4m3']:.3f}"
    return row


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("points", nargs="+", help="model:T (a8w4)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--csv", default=None)
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("e4m3_ab.py times CUDA graphs: it needs a GPU")
    flush = torch.empty(FLUSH_BYTES // 4, dtype=torch.float32, device="cuda")
    rows = []
    for spec in args.points:
        row = _point(spec, args.rounds, flush)
        print("  ".join(f"{k}={v}" for k, v in row.items()), flush=True)
        rows.append(row)
    write_csv(args.csv, rows)


if __name__ == "__main__":
    main(sys.argv[1:])
