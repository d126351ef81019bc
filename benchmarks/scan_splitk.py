"""Split-K at decode: the heuristic's config against the same config with stage-1 split_k 2/4/8, stage-2
split_k 2/4/8, and both stages split, per (model, path, T), to decide the split-K defaults on the GPU.

Per config: the stage it changes alone (the baseline: both stages) and the whole layer, each a CUDA-graph replay
with an L2 flush (`mxmoe.tuning.timing.bench`'s timer, as `mxmoe bench`), and the layer output against the baseline's
(`mxmoe.tolerance`, the path's layer tolerance; FAIL beside the row when out of it). A variant that
`mxmoe.legality.check` rejects is skipped with its reason, except DEGENERATE (it runs, only wastefully: more
splits than K blocks, which only toy shapes reach at decode), which is timed and says so. Prints one line
per config and appends it with device, versions and git sha to --csv. Never asserts. Without a GPU it runs on
the Triton interpreter with a fake clock (a smoke test: the timings mean nothing).

    python benchmarks/scan_splitk.py --csv results/h100/splitk_a16w4.csv
    python benchmarks/scan_splitk.py --model gpt-oss-20b --path a8w4,a4w4 --tokens 1,16 --csv out.csv
    TRITON_INTERPRET=1 python benchmarks/scan_splitk.py --model tiny --tokens 1,3   # smoke test
"""

from __future__ import annotations

import argparse
import csv
import os
from dataclasses import asdict, dataclass, fields

STAGE1_SPLITS = (2, 4, 8)
STAGE2_SPLITS = (2, 4, 8)
BOTH_SPLITS = ((4, 4), (8, 4), (8, 8))  # (stage 1, stage 2): the layer only


@dataclass(frozen=True, slots=True)
class ScanRow:
    """One config at one (model, path, T); times are medians in microseconds, None where not timed."""

    model: str
    path: str
    tokens: int
    variant: str  # "baseline", "s1-sk<n>", "s2-sk<n>" or "both-sk<n1>-<n2>"
    config: str
    verdict: str  # "legal", or the legality reason of a config timed anyway
    stage1_us: float | None
    stage2_us: float | None
    layer_us: float | None
    layer_p95_us: float | None
    layer_speedup: float | None  # baseline layer median / this one
    max_rel: float | None  # vs the baseline's layer output
    rms_rel: float | None
    ok: bool | None
    error: str
    claimable: bool | None
    device: str
    torch_version: str | None
    triton_version: str | None
    mxmoe_version: str | None
    git_commit: str | None
    git_dirty: bool | None


def variants(base):
    """(name, MoEConfig) pairs: the baseline, then one stage's split_k changed, then both."""
    yield "baseline", base
    for sk in STAGE1_SPLITS:
        yield f"s1-sk{sk}", type(base)(base.stage1.replace(split_k=sk), base.stage2)
    for sk in STAGE2_SPLITS:
        yield f"s2-sk{sk}", type(base)(base.stage1, base.stage2.replace(split_k=sk))
    for sk1, sk2 in BOTH_SPLITS:
        yield f"both-sk{sk1}-{sk2}", type(base)(base.stage1.replace(split_k=sk1), base.stage2.replace(split_k=sk2))


def runnable(v) -> bool:
    """Legal, or DEGENERATE (it runs, only wastefully), so the scan times it and says so."""
    from mxmoe import legality

    return isinstance(v, legality.Legal) or v.reason is legality.Reason.DEGENERATE


def verdict(shape, path, tokens, cfg, limits):
    """The layer's verdict: either stage's rejection, DEGENERATE last, else Legal."""
    from mxmoe import legality

    found = [legality.check(shape, path, stage, tile, limits, tokens=tokens)
             for stage, tile in ((1, cfg.stage1), (2, cfg.stage2))]
    bad = sorted((v for v in found if isinstance(v, legality.Illegal)),
                 key=lambda v: v.reason is legality.Reason.DEGENERATE)
    return bad[0] if bad else found[0]


@dataclass(frozen=True, slots=True)
class Timed:
    """What one config gave: Measurements (None where not timed) and the layer output."""

    stage1: object | None
    stage2: object | None
    layer: object
    out: object


def time_config(name: str, cfg, p, time_it) -> Timed:
    """Times the stage the variant changes alone (the baseline: both; a both-stage variant: neither), then the
    layer, whose output it keeps."""
    from mxmoe.layer_plan import layer_plan
    from mxmoe.moe import moe

    t, key = p.tokens, cfg.key()
    lp = layer_plan(p.shape, p.path, cfg, t)  # each stage as moe() launches it; replayed, so no single-use counters
    x, (plan1, plan2) = lp.quantize(p.hidden), lp.route(p.topk_ids, counters=False)
    s1 = s2 = None
    if name == "baseline" or name.startswith("s1"):
        s1 = time_it(lambda: lp.stage1(x, p.weights, plan1), key, t, 0.6)
    if name == "baseline" or name.startswith("s2"):
        h = lp.stage1(x, p.weights, plan1)
        s2 = time_it(lambda: lp.stage2(h, p.weights, plan1, plan2, p.topk_weights), key, t, 0.35)
    run = lambda: moe(p.hidden, p.weights, p.topk_ids, p.topk_weights, p.path, cfg, validate=False)  # noqa: E731
    out = run().float()
    return Timed(s1, s2, time_it(run, key, t, 1.0), out)


def scan_point(p, *, limits, interpreter: bool, time_it, stamp: dict):
    """ScanRows of every variant of the heuristic's config at one (model, path, T); skipped ones are printed."""
    from mxmoe import legality
    from mxmoe.heuristic import default_config
    from mxmoe.tolerance import compare, lookup

    base_cfg = default_config(p.shape, p.path, p.tokens, interpreter=interpreter)
    base = None
    for name, cfg in variants(base_cfg):
        v = verdict(p.shape, p.path, p.tokens, cfg, limits)
        if not runnable(v):
            print(f"{p.shape.name:12} {p.path.value:6} {p.tokens:>3} {name:9} skipped: {v.reason.value}: {v.detail}")
            continue
        timed, rep, err = None, None, ""
        try:
            timed = time_config(name, cfg, p, time_it)
        except Exception as exc:  # a survey: report the config and go on
            err = f"{type(exc).__name__}: {exc}"[:300]
        if name == "baseline":
            base = timed
        if timed is not None and base is not None:
            rep = compare(timed.out, base.out, lookup(p.path, "layer"))
        yield ScanRow(
            model=p.shape.name, path=p.path.value, tokens=p.tokens, variant=name,
            config=f"{cfg.stage1.short()}|{cfg.stage2.short()}",
            verdict="legal" if isinstance(v, legality.Legal) else v.reason.value,
            stage1_us=timed.stage1.timing.median_us if timed and timed.stage1 else None,
            stage2_us=timed.stage2.timing.median_us if timed and timed.stage2 else None,
            layer_us=timed.layer.timing.median_us if timed else None,
            layer_p95_us=timed.layer.timing.p95_us if timed else None,
            layer_speedup=base.layer.timing.median_us / timed.layer.timing.median_us if timed and base else None,
            max_rel=rep.max_rel if rep else None, rms_rel=rep.rms_rel if rep else None, ok=rep.ok if rep else None,
            error=err, claimable=timed.layer.claimable if timed else None, **stamp,
        )


def write_row(row: ScanRow, dest: str) -> None:
    new = not os.path.exists(dest)
    with open(dest, "a", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=[f.name for f in fields(ScanRow)])
        if new:
            writer.writeheader()
        writer.writerow(asdict(row))


def show(r: ScanRow) -> None:
    def num(v: float | None, fmt: str) -> str:
        return format(v, fmt) if v is not None else f"{'-':>{fmt.split('.')[0]}}"

    head = f"{r.model:12} {r.path:6} {r.tokens:>3} {r.variant:9}"
    if r.error:
        print(f"{head} ERR {r.error}  {r.config}", flush=True)
        return
    flag = "" if r.ok in (True, None) else "  FAIL (out of tolerance vs the baseline)"
    note = "" if r.verdict == "legal" else f"  [{r.verdict}: timed anyway]"
    print(f"{head} {num(r.stage1_us, '9.1f')} {num(r.stage2_us, '9.1f')} {num(r.layer_us, '9.1f')} "
          f"{num(r.layer_speedup, '6.3f')} {num(r.max_rel, '9.2e')}  {r.config}{note}{flag}", flush=True)


def for_each_problem(args, interpreter: bool, fn) -> None:
    """fn(problem) for every (model, path, T) the arguments name, one problem alive at a time (its GPU memory is
    released before the next is built)."""
    import torch

    from mxmoe.problem import make_problem
    from mxmoe.shapes import get_shape, parse_tokens

    for model in args.model.split(","):
        shape = get_shape(model)
        for path in args.path.split(","):
            for t in parse_tokens(args.tokens):
                p = make_problem(shape, path, t, device="cpu" if interpreter else "cuda")
                fn(p)
                del p
                if not interpreter:
                    torch.cuda.empty_cache()


def warm_point(p, *, limits, interpreter: bool) -> None:
    """Compile every runnable variant of one point: one untimed moe() each (both stages, split-K's finish
    kernel)."""
    from mxmoe.heuristic import default_config
    from mxmoe.moe import moe

    point = f"{p.shape.name} {p.path.value} T={p.tokens}"
    for name, cfg in variants(default_config(p.shape, p.path, p.tokens, interpreter=interpreter)):
        if runnable(verdict(p.shape, p.path, p.tokens, cfg, limits)):
            try:
                moe(p.hidden, p.weights, p.topk_ids, p.topk_weights, p.path, cfg, validate=False)
            except Exception as exc:  # the timed scan reports it; warming goes on
                print(f"warm {point} {name}: {type(exc).__name__}: {exc}"[:300])
    print(f"warmed {point}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="gpt-oss-20b,deepseek-v3,kimi-k2", help="comma list of models")
    ap.add_argument("--path", default="a16w4", help="one path or a comma list")
    ap.add_argument("--tokens", default="1,2,4,8,16", help="comma list of T")
    ap.add_argument("--csv", default=None)
    ap.add_argument("--max-time-s", type=float, default=None, help="cap per measurement (default: measure's)")
    ap.add_argument("--min-iters", type=int, default=None, help="samples before the stop rule may stop")
    ap.add_argument("--warm-only", action="store_true",
                    help="run every legal variant once, untimed: fills the Triton cache (run one per model in "
                         "parallel before the timed scan, whose compiles are otherwise serial)")
    args = ap.parse_args()

    import torch

    interpreter = not torch.cuda.is_available()
    if interpreter:
        os.environ["TRITON_INTERPRET"] = "1"  # before any kernel module is imported
        print("Triton interpreter: timings are from a fake clock and are not claims")
    from mxmoe.dispatch import device_limits, running_device
    from mxmoe.tuning.timing.bench import layer_timer, run_versions
    from mxmoe.tuning.timing.measure import idle_before

    if args.warm_only:
        limits = device_limits(running_device())
        for_each_problem(args, interpreter, lambda p: warm_point(p, limits=limits, interpreter=interpreter))
        return
    overrides = {k: v for k, v in (("max_time_s", args.max_time_s), ("min_iters", args.min_iters)) if v is not None}
    idle = None if interpreter else idle_before()  # before this process loads the GPU
    time_it, device = layer_timer(interpreter, overrides, idle), running_device()
    limits = device_limits(device)
    stamp = {"device": "interpreter" if interpreter else device, **run_versions()}
    print(f"{'model':12} {'path':6} {'T':>3} {'variant':9} {'stage1':>9} {'stage2':>9} {'layer':>9} {'x':>6} "
          f"{'max_rel':>9}  config (us; x = baseline layer / this layer; max_rel vs the baseline's output)")
    def scan(p) -> None:
        for row in scan_point(p, limits=limits, interpreter=interpreter, time_it=time_it, stamp=stamp):
            show(row)
            if args.csv:
                write_row(row, args.csv)

    for_each_problem(args, interpreter, scan)


if __name__ == "__main__":
    main()
