"""Scan v2 tile variants around the heuristic at a few points: whole layer, CUDA-graph replay, L2 flushed.

    PYTHONPATH=src python3 benchmarks/scan_v2.py gpt-oss-20b:4096 deepseek-v3:64 --csv out.csv

Each stage is varied alone (the other kept at the heuristic's): warps, BLOCK_N, BLOCK_K, stages, BLOCK_M, tail_m,
group_m (or with `--levers finish` split_k and the stage-2 combine; `--levers none` times the heuristic alone). Each
variant's output is checked against the heuristic's (same numerics up to fp32 summation order). Prints the ranking
per point; never asserts. Needs a GPU.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import statistics
import sys

import torch

from mxmoe.config import Combine, MoEConfig, TileConfig
from mxmoe.heuristic import default_config
from mxmoe.legality import H100, Legal, check
from mxmoe.moe import moe
from mxmoe.problem import make_problem
from mxmoe.shapes import MODELS, Path

FLUSH_BYTES = 256 << 20


def graph_median_us(fn, flush: torch.Tensor, reps: int = 15) -> float:
    """Median us of `reps` CUDA-graph replays of `fn`, each after `flush` is zeroed (L2 flush, outside the events):
    the harness clock's capture (warm-up on a side stream) and per-replay event pairs."""
    from mxmoe.tuning.timing.clocks import CudaEventClock

    clock = CudaEventClock()
    replay = clock.capture([fn])[0]
    return statistics.median(clock.time_batch(lambda i: replay(), range(reps), before=lambda i: flush.zero_()))


def point_problem(spec: str):
    """"model:T[:path[:e4m3|nmajor]]" -> (model, T, path, its problem on the GPU, seeded by T); `e4m3` (a8w4) builds
    the weights' e4m3 layout too, so the default config takes the e4m3 stage where the heuristic does; `nmajor` W13's
    N-major copy, which the direct stage 1 reads while rules.DIRECT1_N_MAJOR."""
    model, t, *rest = spec.split(":")
    t, path = int(t), Path(rest[0] if rest else "a16w4")
    p = make_problem(MODELS[model], path, t, seed=t, device="cuda")
    if rest[1:] == ["e4m3"]:
        p = dataclasses.replace(p, weights=p.weights.with_e4m3())
    elif rest[1:] == ["nmajor"]:
        p = dataclasses.replace(p, weights=p.weights.with_decode_layout())
    elif rest[1:]:
        raise SystemExit(f"point {spec!r}: expected model:T[:path[:e4m3|nmajor]]")
    return model, t, path, p


def layer_call(p, path: Path, cfg: MoEConfig):
    """The layer as moe() runs it for problem `p` under `cfg`, as a no-argument callable to time."""
    return lambda: moe(p.hidden, p.weights, p.topk_ids, p.topk_weights, path, cfg, validate=False)


def write_csv(path: str | None, rows: list[dict]) -> None:
    """The rows (dicts of one shape) as a CSV at `path`; nothing when either is empty."""
    if path and rows:
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)


def _variants(c: TileConfig, stage: int, levers: str) -> list[TileConfig]:
    if levers == "none":
        return []
    if levers == "finish":  # the decode finishes: split-K and the top-k combine
        combines = (Combine.ATOMIC, Combine.SLOTS) if stage == 2 else (Combine.ATOMIC,)
        near = (c.split_k // 2, c.split_k - 1, c.split_k + 1, c.split_k * 3 // 2, c.split_k * 2)  # around the rule's
        out = [c.replace(split_k=k, combine=m) for k in sorted({1, 2, 4, 8, *near} - {0}) for m in combines]
        return list(dict.fromkeys(v for v in out if v != c))
    out = []
    for w in (4, 8):
        for bn in (64, 128, 256):
            if bn % (16 * w) == 0:
                out.append(c.replace(num_warps=w, block_n=bn))
    out += [c.replace(num_stages=s) for s in (2, 3, 4, 5)]
    out += [c.replace(block_k=k) for k in (64, 128, 256)]
    out += [c.replace(block_m=m, tail_m=c.tail_m if c.tail_m < m else 0) for m in (16, 32, 64, 128) if m != c.block_m]
    out += [c.replace(tail_m=t) for t in (0, 32, 64) if t < c.block_m]  # tail tiles (TileConfig.tail_m)
    # GROUP_M counts plan blocks, which tails make BLOCK_M / tail_m times as many: the same grouping of tiles
    # takes group_m scaled by that (is the stage-1 loss with tails at BLOCK_M 128 the halved grouping?)
    out += [c.replace(tail_m=t, group_m=c.group_m * (c.block_m // t)) for t in (32, 64) if t < c.block_m]
    out += [c.replace(group_m=g) for g in (1, 4, 8, 16)]
    return list(dict.fromkeys(v for v in out if v != c))


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("points", nargs="+", help="model:T[:path]")
    ap.add_argument("--csv", default=None)
    ap.add_argument("--levers", choices=("tiles", "finish", "none"), default="tiles",
                    help="tiles: warps, BLOCK_N/K/M, stages, tail_m; finish: split_k and combine; none: the base alone")
    ap.add_argument("--stage", type=int, choices=(1, 2), default=None, help="vary only this stage")
    args = ap.parse_args(argv)
    flush = torch.empty(FLUSH_BYTES, dtype=torch.uint8, device="cuda")
    rows = []
    for spec in args.points:
        model, t, path, p = point_problem(spec)
        base = default_config(p.shape, path, t, e4m3=p.weights.e4m3)
        ref = moe(p.hidden, p.weights, p.topk_ids, p.topk_weights, path, base).float()
        cands = [("base", base)]
        if args.stage in (None, 1):
            cands += [(f"s1 {v.short()}", MoEConfig(v, base.stage2)) for v in _variants(base.stage1, 1, args.levers)]
        if args.stage in (None, 2):
            cands += [(f"s2 {v.short()}", MoEConfig(base.stage1, v)) for v in _variants(base.stage2, 2, args.levers)]
        res = []
        for name, cfg in cands:
            if not all(isinstance(check(p.shape, path, s, c, H100, tokens=t), Legal)
                       for s, c in ((1, cfg.stage1), (2, cfg.stage2))):
                continue
            fn = layer_call(p, path, cfg)
            try:
                err = (fn().float() - ref).abs().max().item() / max(ref.abs().max().item(), 1e-6)
                us = graph_median_us(fn, flush)
            except Exception as exc:  # a variant that fails to compile or launch is reported, not fatal
                print(f"{model} T={t} {name}: {type(exc).__name__}: {str(exc)[:120]}", flush=True)
                continue
            res.append((us, name, err))
            print(f"{model} {path.value} T={t} {name:45s} {us:10.1f} us  rel_err {err:.2e}", flush=True)
        res.sort()
        b = next(us for us, n, _ in res if n == "base")
        print(f"== {model} T={t}: best {res[0][1]} {res[0][0]:.1f} us vs base {b:.1f} us ({b / res[0][0]:.3f}x)")
        rows += [{"model": model, "path": path.value, "T": t, "variant": n, "us": round(us, 2), "rel_err": e}
                 for us, n, e in res]
        p = ref = None  # free the weights before the next point
        torch.cuda.empty_cache()
    write_csv(args.csv, rows)


if __name__ == "__main__":
    main(sys.argv[1:])
