"""A/B of rule constants (`mxmoe.kernels.rules`, or `heuristic.NAME`, `quant.NAME`) on the whole layer, in one process.

    PYTHONPATH=src python3 benchmarks/rule_ab.py deepseek-v3:16 gpt-oss-20b:64:a8w4 \\
        --variant now: --variant no_atomic_finish:ATOMIC_FINISH_MIN_K_STEPS=1000000 --csv ab.csv

Each variant sets the named constants (integers) before the calls and restores them after. Every point runs its
default config, chosen under each variant's constants (a `heuristic.` constant changes it), in `--rounds` rounds
of A B C ... order (CUDA-graph replay, L2 flushed before every replay, median), and each variant's output is
checked against the first's; an untimed series of the first variant warms the clocks up first. Prints a table
of us per variant and the ratio to the first; never asserts. Needs a GPU.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys

import torch
from scan_v2 import FLUSH_BYTES, graph_median_us, layer_call, point_problem, write_csv

from mxmoe import heuristic
from mxmoe.heuristic import default_config
from mxmoe.kernels import quant, rules
from mxmoe.layer_plan import clear_plans


def _parse_variant(spec: str) -> tuple[str, dict[str, int]]:
    name, _, body = spec.partition(":")
    sets = {}
    for item in filter(None, body.split(",")):
        key, _, value = item.partition("=")
        module, _, const = key.rpartition(".")
        if module not in _MODULES or not hasattr(_MODULES[module], const):
            raise SystemExit(f"--variant {spec!r}: no constant {key!r} in rules, heuristic or quant")
        sets[key] = int(value)
    return name, sets


_MODULES = {"": rules, "heuristic": heuristic, "quant": quant}


@contextlib.contextmanager
def _constants(sets: dict[str, int]):
    targets = {k: (_MODULES[k.rpartition(".")[0]], k.rpartition(".")[2]) for k in sets}
    old = {k: getattr(m, n) for k, (m, n) in targets.items()}
    try:
        for k, v in sets.items():
            setattr(*targets[k], v)
        clear_plans()
        yield
    finally:
        for k, v in old.items():
            setattr(*targets[k], v)
        clear_plans()


def _time_point(p, path, t: int, variants, rounds: int, flush):
    """Per variant: graph-replay us of each round, max relative difference to the first variant's output, and the
    config it ran (the default config chosen under its constants)."""
    times: dict[str, list[float]] = {name: [] for name, _ in variants}
    ref, errs, cfgs = None, {}, {}
    # One untimed replay series of the first variant: the first timing of a process ran 2-7% slow on the H100
    # (clocks ramping up from idle; results/h100/2026-12-06_decode_levers_ab_9ffc544.log, "warm" against "base").
    with _constants(variants[0][1]):
        graph_median_us(layer_call(p, path, default_config(p.shape, path, t, e4m3=p.weights.e4m3)), flush)
    for _ in range(rounds):
        for name, sets in variants:
            with _constants(sets):
                cfg = default_config(p.shape, path, t, e4m3=p.weights.e4m3)
                fn = layer_call(p, path, cfg)
                out = fn().float()
                ref = out if ref is None else ref
                errs[name] = (out - ref).abs().max().item() / max(ref.abs().max().item(), 1e-6)
                cfgs[name] = f"{cfg.stage1.short()}|{cfg.stage2.short()}"
                times[name].append(graph_median_us(fn, flush))
    return times, errs, cfgs


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("points", nargs="+", help="model:T[:path[:e4m3|nmajor]] (e4m3: a8w4 weights with their e4m3 "
                    "layout; nmajor: with W13's N-major copy)")
    ap.add_argument("--variant", action="append", required=True, help="name:CONST=int,CONST=int (empty: as is)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--csv", default=None)
    args = ap.parse_args(argv)
    variants = [_parse_variant(v) for v in args.variant]
    flush = torch.empty(FLUSH_BYTES, dtype=torch.uint8, device="cuda")
    rows = []
    for spec in args.points:
        model, t, path, p = point_problem(spec)
        times, errs, cfgs = _time_point(p, path, t, variants, args.rounds, flush)
        base = statistics.median(times[variants[0][0]])
        for name, _ in variants:
            us = statistics.median(times[name])
            print(f"{model:16s} {path.value} T={t:<6d} {name:10s} {us:10.1f} us  {base / us:6.3f}x  "
                  f"rounds {';'.join(f'{x:.1f}' for x in times[name])}  rel_err {errs[name]:.1e}  {cfgs[name]}",
                  flush=True)
            rows.append({"model": model, "path": path.value, "T": t, "variant": name, "us": round(us, 2),
                         "speedup_vs_first": round(base / us, 4), "rel_err": errs[name], "config": cfgs[name]})
        p = None
        torch.cuda.empty_cache()
    write_csv(args.csv, rows)


if __name__ == "__main__":
    main(sys.argv[1:])
