"""A/B of the kernels' rule constants (`mxmoe.kernels.rules`) on the whole layer, in one process.

    PYTHONPATH=src python3 benchmarks/rule_ab.py deepseek-v3:16 gpt-oss-20b:64:a8w4 \\
        --variant now: --variant no_atomic_finish:ATOMIC_FINISH_MIN_K_STEPS=1000000 --csv ab.csv

Each variant sets the named constants (integers) before the calls and restores them after; the default config
of each point runs under every variant, in `--rounds` rounds of A B C ... order (CUDA-graph replay, L2 flushed
before every replay, median), and each variant's output is checked against the first's. Prints a table of us
per variant and the ratio to the first; never asserts. Needs a GPU.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys

import torch
from scan_v2 import FLUSH_BYTES, graph_median_us, layer_call, point_problem, write_csv

from mxmoe.heuristic import default_config
from mxmoe.kernels import rules
from mxmoe.layer_plan import layer_plan


def _parse_variant(spec: str) -> tuple[str, dict[str, int]]:
    name, _, body = spec.partition(":")
    sets = {}
    for item in filter(None, body.split(",")):
        key, _, value = item.partition("=")
        if not hasattr(rules, key):
            raise SystemExit(f"--variant {spec!r}: rules has no constant {key!r}")
        sets[key] = int(value)
    return name, sets


@contextlib.contextmanager
def _constants(sets: dict[str, int]):
    old = {k: getattr(rules, k) for k in sets}
    try:
        for k, v in sets.items():
            setattr(rules, k, v)
        layer_plan.cache_clear()
        yield
    finally:
        for k, v in old.items():
            setattr(rules, k, v)
        layer_plan.cache_clear()


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("points", nargs="+", help="model:T[:path]")
    ap.add_argument("--variant", action="append", required=True, help="name:CONST=int,CONST=int (empty: as is)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--csv", default=None)
    args = ap.parse_args(argv)
    variants = [_parse_variant(v) for v in args.variant]
    flush = torch.empty(FLUSH_BYTES, dtype=torch.uint8, device="cuda")
    rows = []
    for spec in args.points:
        model, t, path, p = point_problem(spec)
        cfg = default_config(p.shape, path, t)
        fn = layer_call(p, path, cfg)
        times: dict[str, list[float]] = {name: [] for name, _ in variants}
        ref, errs = None, {}
        for _ in range(args.rounds):
            for name, sets in variants:
                with _constants(sets):
                    out = fn().float()
                    ref = out if ref is None else ref
                    errs[name] = (out - ref).abs().max().item() / max(ref.abs().max().item(), 1e-6)
                    times[name].append(graph_median_us(fn, flush))
        base = statistics.median(times[variants[0][0]])
        for name, _ in variants:
            us = statistics.median(times[name])
            print(f"{model:16s} {path.value} T={t:<6d} {name:10s} {us:10.1f} us  {base / us:6.3f}x  "
                  f"rounds {';'.join(f'{x:.1f}' for x in times[name])}  rel_err {errs[name]:.1e}", flush=True)
            rows.append({"model": model, "path": path.value, "T": t, "variant": name, "us": round(us, 2),
                         "speedup_vs_first": round(base / us, 4), "rel_err": errs[name],
                         "config": f"{cfg.stage1.short()}|{cfg.stage2.short()}"})
        p = ref = None
        torch.cuda.empty_cache()
    write_csv(args.csv, rows)


if __name__ == "__main__":
    main(sys.argv[1:])
