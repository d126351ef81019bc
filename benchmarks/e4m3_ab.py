"""a8w4 stage 1 on e4m3 wgmma (Mma.WGMMA_E4M3) against the bf16-carrier wgmma, with a16w4 on the same weights as
the yardstick, at prefill points (issue 23).

    PYTHONPATH=src python3 benchmarks/e4m3_ab.py deepseek-v3:4096 deepseek-v3:16384 --csv e4m3_ab.csv

Each point: the heuristic's a8w4 config, then stage 1 on e4m3 (weights built with e4m3=True; `heuristic.on_e4m3`
fits the tile to the two accumulator chains), both stages on e4m3, stage 1 on e4m3 with each `--tile` change to
the heuristic's tile, both stages with each `--tile2` change to stage 2's, and a16w4's default, timed in
`--rounds` rounds in that order (CUDA-graph replay, L2 flushed before each replay, median of 15). Each e4m3 output
is checked against the a8w4 one (max relative difference over the tensor max; they differ in the MMA's
accumulation order, and with stage 2 on e4m3 in h's rounding to e4m3 per token). Prints us and ratios; never
asserts. Needs a GPU.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys

import torch
from scan_v2 import FLUSH_BYTES, graph_median_us, write_csv

from mxmoe.config import Mma, MoEConfig
from mxmoe.heuristic import default_config, on_e4m3
from mxmoe.moe import moe
from mxmoe.problem import make_problem
from mxmoe.shapes import MODELS, Path


def _point(spec: str, rounds: int, flush: torch.Tensor, tiles: list[str], tiles2: list[str]) -> dict:
    model, t = spec.split(":")
    t = int(t)
    p = make_problem(MODELS[model], Path.A8W4, t, seed=t, device="cuda")
    w = p.weights.with_e4m3()
    base = default_config(p.shape, Path.A8W4, t)
    e4 = MoEConfig(on_e4m3(p.shape, 1, base.stage1), base.stage2)
    configs = {"a8w4": base, "a8w4_e4m3": e4, "a8w4_e4m3_12": MoEConfig(e4.stage1, on_e4m3(p.shape, 2, base.stage2))}
    for tile in tiles:
        configs[f"a8w4_e4m3_{tile}"] = MoEConfig(base.stage1.replace(mma=Mma.WGMMA_E4M3, **_tile(tile)), base.stage2)
    for tile in tiles2:
        configs[f"a8w4_e4m3_12_{tile}"] = MoEConfig(e4.stage1, base.stage2.replace(mma=Mma.WGMMA_E4M3, **_tile(tile)))
    a16 = default_config(p.shape, Path.A16W4, t)

    def call(path: Path, cfg: MoEConfig):
        return lambda: moe(p.hidden, w, p.topk_ids, p.topk_weights, path, cfg, validate=False)

    calls = {k: call(Path.A8W4, c) for k, c in configs.items()}
    calls["a16w4"] = call(Path.A16W4, a16)
    ref = calls["a8w4"]().float()
    scale = ref.abs().max().clamp_min(1e-30)
    diffs = {}
    for k in list(configs)[1:]:
        try:
            diffs[k] = ((calls[k]().float() - ref).abs().max() / scale).item()
        except Exception as e:  # a --tile that check_launch or the compiler refuses: say so, time the rest
            print(f"{spec} {k} {configs[k].key()}: {type(e).__name__}: {e}", flush=True)
            del calls[k]
    times: dict[str, list[float]] = {k: [] for k in calls}
    for _ in range(rounds):
        for k, fn in calls.items():
            times[k].append(graph_median_us(fn, flush))
    us = {k: statistics.median(v) for k, v in times.items()}
    row = {"point": spec, "config": e4.stage1.short(), "stage2": configs["a8w4_e4m3_12"].stage2.short()}
    row.update({f"{k}_us": f"{v:.1f}" for k, v in us.items()})
    for k in diffs:
        row[f"{k}_speedup"] = f"{us['a8w4'] / us[k]:.3f}"
        row[f"{k}_vs_a16w4"] = f"{us['a16w4'] / us[k]:.3f}"
        row[f"{k}_max_rel_diff"] = f"{diffs[k]:.2e}"
    return row


def _tile(spec: str) -> dict:
    """'M128N128K64w8s4' -> TileConfig fields (any subset of M, N, K, w, s)."""
    names = {"M": "block_m", "N": "block_n", "K": "block_k", "w": "num_warps", "s": "num_stages", "G": "group_m"}
    fields = {names[k]: int(v) for k, v in re.findall(r"([MNKwsG])(\d+)", spec)}
    if not fields:
        raise SystemExit(f"--tile {spec!r}: expected e.g. M128N128K64w8s4")
    return fields


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("points", nargs="+", help="model:T (a8w4)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--tile", action="append", default=[],
                    help="also time stage 1 e4m3 with these tile fields changed, e.g. M128N128K64w8s4 (repeatable)")
    ap.add_argument("--tile2", action="append", default=[],
                    help="also time both stages on e4m3, stage 2 with these tile fields changed (repeatable)")
    ap.add_argument("--csv", default=None)
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("e4m3_ab.py times CUDA graphs: it needs a GPU")
    flush = torch.empty(FLUSH_BYTES // 4, dtype=torch.float32, device="cuda")
    rows = []
    for spec in args.points:
        row = _point(spec, args.rounds, flush, args.tile, args.tile2)
        print("  ".join(f"{k}={v}" for k, v in row.items()), flush=True)
        rows.append(row)
    write_csv(args.csv, rows)


if __name__ == "__main__":
    main(sys.argv[1:])
