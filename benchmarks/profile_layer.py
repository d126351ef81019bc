"""Where does a layer's time go? Times routing, input quantization, stage 1 and stage 2 apart.

Each piece is timed alone by the harness's own `measure` (CUDA-graph replay, L2 flushed before every
replay, GPU state read), next to the whole layer and the weight-stream floor at the measured copy
bandwidth. Stage 2 is also split into its kernel, the fp32 zero fill before it and the bf16 cast after
it, and timed with the slots combine (plain stores of [P, H], then a sum over the A slots) beside the
atomic one: with inter = 256 the stage-2 GEMM has K = 256, so the combine is a large share of it.
`launch` is one tiny kernel under the same protocol: the floor every launch of the layer pays.
Prints and writes a CSV; never asserts (a benchmark, not a test).
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Callable

import torch

from mxmoe.config import Combine
from mxmoe.heuristic import default_config
from mxmoe.kernels.stage2 import stage2
from mxmoe.layer_plan import layer_plan
from mxmoe.moe import moe
from mxmoe.problem import make_problem
from mxmoe.routing import experts_hit
from mxmoe.shapes import MODELS, Path, parse_tokens
from mxmoe.spec import layer_bytes
from mxmoe.tuning.timing.measure import MeasureSettings, measure


def copy_bandwidth() -> float:
    x = torch.empty(2**30, dtype=torch.uint8, device="cuda")
    y = torch.empty_like(x)
    m = measure(lambda: y.copy_(x), MeasureSettings(mode="graph", min_iters=20, max_time_s=1.0, idle_sample_s=0.1))
    return 2 * x.numel() / (m.timing.median_us * 1e-6)


def _us(fn: Callable[[], object], max_time_s: float) -> float:
    settings = MeasureSettings(mode="graph", max_time_s=max_time_s, min_iters=30, idle_sample_s=0.05)
    return measure(fn, settings).timing.median_us


def profile_point(model: str, path: Path, t: int, routing: str, max_time_s: float,
                  bandwidth: float, device: str = "cuda") -> dict[str, object]:
    """One (model, path, T): every piece's median us (graph replay, L2 flushed) and the layer's floor."""
    shape = MODELS[model]
    p = make_problem(shape, path, t, routing=routing, device=device)
    cfg = default_config(shape, path, t, interpreter=device != "cuda")
    e, hidden = shape.experts, shape.hidden
    lp = layer_plan(shape, path, cfg, t)  # the pieces as moe() launches them; replayed, so no single-use counters
    plan1, plan2 = lp.route(p.topk_ids, counters=False)
    x = lp.quantize(p.hidden)
    h = lp.stage1(x, p.weights, plan1)
    tw = p.topk_weights.float()
    out32 = torch.zeros(t, hidden, dtype=torch.float32, device=device)
    slots_cfg = cfg.stage2.replace(combine=Combine.SLOTS, split_k=1)
    tiny = torch.empty(1, device=device)
    parts: dict[str, Callable[[], object]] = {
        "launch": lambda: tiny.zero_(),
        "route": lambda: lp.route(p.topk_ids),
        "quant": lambda: lp.quantize(p.hidden),
        "stage1": lambda: lp.stage1(x, p.weights, plan1),
        "s2_zero": lambda: out32.zero_(),
        "s2_cast": lambda: out32.to(torch.bfloat16),
        "stage2": lambda: lp.stage2(h, p.weights, plan1, plan2, tw),
        "stage2_slots": lambda: stage2(h, p.weights, plan2, tw, slots_cfg, t),
        "layer": lambda: moe(p.hidden, p.weights, p.topk_ids, p.topk_weights, path, cfg, validate=False),
    }
    if path is Path.A16W4:
        del parts["quant"]
    us = {k: _us(f, max_time_s) for k, f in parts.items()}
    # Each piece timed alone carries the protocol's fixed cost once (about `launch`): stage 2 minus its zero fill
    # and cast took it off twice, so it goes back once.
    us["s2_kernel"] = us["stage2"] - us["s2_zero"] - us["s2_cast"] + us["launch"]  # where the combine has both
    floor = layer_bytes(shape, path, t, experts_hit(p.topk_ids, e)) / bandwidth * 1e6
    return {"model": model, "path": path.value, "tokens": t, "routing": routing,
            "config": cfg.key(), **{k: round(v, 2) for k, v in us.items()},
            "floor_us": round(floor, 2), "floor_frac": round(floor / us["layer"], 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="deepseek-v3-tp8,kimi-k2-tp8")
    ap.add_argument("--paths", default="a16w4,a8w4,a4w4")
    ap.add_argument("--tokens", default="1,16,4096")
    ap.add_argument("--routing", default="uniform")
    ap.add_argument("--max-time-s", type=float, default=0.5, help="timing budget per piece")
    ap.add_argument("--csv", default=None, help="write every row here")
    args = ap.parse_args()
    bandwidth = copy_bandwidth()
    print(f"{torch.cuda.get_device_name()}: copy bandwidth {bandwidth / 1e12:.2f} TB/s", flush=True)
    rows = []
    for model in args.models.split(","):
        for path in [Path(p) for p in args.paths.split(",")]:
            for t in parse_tokens(args.tokens):
                if t < MODELS[model].min_tokens:
                    continue
                row = profile_point(model, path, t, args.routing, args.max_time_s, bandwidth)
                rows.append(row)
                print(" ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    if args.csv and rows:
        with open(args.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
            w.writeheader()
            w.writerows(rows)
        print(f"wrote {len(rows)} rows to {args.csv}", file=sys.stderr)


if __name__ == "__main__":
    main()
