"""Host cost of one `mxmoe.moe()` call: the Python work before the first kernel launch.

Issue 22's goal: at most 10 us per call. Measured three ways, each as the median over `--repeats` batches of
`--calls` calls (per-call microseconds, after a warm-up call that resolves the table and fills the caches):

  choose_config   dispatch alone for config=None (override, resolution lookup, bisect or cached heuristic)
  moe(None)       the whole moe() call with config=None, the launches (layer_plan's quantize_input, align, stage1,
                  stage2, direct_stage1, direct_stage2) replaced by no-ops, so what is left is the host work a real
                  call pays before its first launch: argument checks, shape key, dispatch, the layer plan lookup,
                  the bf16 cast / contiguity (and at a direct-layer point its routing plan: the ids flattened,
                  stage 2's counters allocated)
  moe(config)     the same with an explicit MoEConfig (its legality verdict cached after the first call)

each with and without a tuned table (written into a temporary MXMOE_CONFIG_DIR for the running device, the
heuristic's configs at the grid points, under the running versions). Tensors live on `--device` (cpu: the
device is named `interpreter`, TRITON_INTERPRET=1 is set before import). The shape does not change the host work.

    TRITON_INTERPRET=1 python benchmarks/host_cost.py            # CPU
    python benchmarks/host_cost.py --device cuda                 # on a GPU host
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path as FsPath


def _cpu_model() -> str:
    try:
        for line in FsPath("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def per_call_us(fn, calls: int, repeats: int) -> float:
    """Median over `repeats` batches of the mean per-call time of `calls` calls, in microseconds."""
    fn()
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        for _ in range(calls):
            fn()
        samples.append((time.perf_counter_ns() - t0) / calls / 1e3)
    return statistics.median(samples)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", help="cpu (interpreter) or cuda")
    ap.add_argument("--tokens", type=int, default=4, help="T of the call (host work does not depend on it)")
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=25)
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = ap.parse_args(argv)
    if args.device == "cpu":
        os.environ["TRITON_INTERPRET"] = "1"

    import torch

    import mxmoe.moe as _  # noqa: F401  (loads the submodule; mxmoe.moe stays the function)
    from mxmoe import dispatch
    from mxmoe.heuristic import default_config
    from mxmoe.shapes import MODELS, TOKEN_GRID, Path
    from mxmoe.weights import MoEWeights

    moe_module = sys.modules["mxmoe.moe"]
    shape, path, t = MODELS["tiny"], Path.A16W4, args.tokens
    device = torch.device(args.device)
    torch.manual_seed(0)
    weights = MoEWeights.from_float(torch.randn(shape.experts, 2 * shape.inter, shape.hidden),
                                    torch.randn(shape.experts, shape.hidden, shape.inter)).to(device)
    x = torch.randn(t, shape.hidden, dtype=torch.bfloat16, device=device)
    w, ids = torch.topk(torch.rand(t, shape.experts, device=device), shape.topk)
    explicit = default_config(shape, path, t)

    out = torch.empty(t, shape.hidden, dtype=torch.bfloat16, device=device)
    plan_module = sys.modules["mxmoe.layer_plan"]  # the launches live in the layer plan (moe() calls plan.run)
    stubs = {"quantize_input": lambda h, p, **k: h, "align": lambda *a, **k: None,
             "stage1": lambda *a, **k: None, "stage2": lambda *a, **k: out,
             "direct_stage1": lambda *a, **k: None, "direct_stage2": lambda *a, **k: out}
    real = {name: getattr(plan_module, name) for name in stubs}

    def run_all() -> dict[str, float]:
        dispatch.clear_cache()
        res = {"choose_config": per_call_us(lambda: dispatch.choose_config(moe_module.shape_of(weights, shape.topk),
                                                                          path, t), args.calls, args.repeats)}
        for name, fn in stubs.items():
            setattr(plan_module, name, fn)
        try:
            res["moe(None)"] = per_call_us(lambda: moe_module.moe(x, weights, ids, w, path), args.calls,
                                           args.repeats)
            res["moe(None, validate=False)"] = per_call_us(
                lambda: moe_module.moe(x, weights, ids, w, path, validate=False), args.calls, args.repeats)
            res["moe(config)"] = per_call_us(lambda: moe_module.moe(x, weights, ids, w, path, explicit),
                                             args.calls, args.repeats)
        finally:
            for name, fn in real.items():
                setattr(plan_module, name, fn)
        return res

    results = {"heuristic": run_all()}
    running = dispatch.running_device()
    with tempfile.TemporaryDirectory() as tmp:
        triton_version, kernel_hash = dispatch.running_versions()
        table = {"_metadata": {"schema": dispatch.TABLE_SCHEMA_VERSION, "triton_version": triton_version,
                               "kernel_source_hash": kernel_hash}}
        table |= {str(g): default_config(shape, path, g).to_dict() for g in TOKEN_GRID}
        (FsPath(tmp) / dispatch.table_filename(shape, path, running)).write_text(json.dumps(table))
        os.environ[dispatch.CONFIG_DIR_ENV] = tmp
        try:
            dispatch.clear_cache()
            assert dispatch.tuned_config(shape, path, t) is not None, "the temporary table was not used"
            results["tuned table"] = run_all()
        finally:
            del os.environ[dispatch.CONFIG_DIR_ENV]
            dispatch.clear_cache()

    info = {"cpu": _cpu_model(), "python": platform.python_version(), "torch": torch.__version__,
            "device": args.device, "dispatch_device": running, "tokens": t, "calls": args.calls,
            "repeats": args.repeats, "median_us": results}
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    print(f"host cost of one moe() call, median us per call ({info['cpu']}, Python {info['python']}, "
          f"torch {info['torch']}, tensors on {args.device}, dispatch device {running}, T={t})")
    names = list(results["heuristic"])
    print(f"{'':14}" + "".join(f"{n:>28}" for n in names))
    for source, row in results.items():
        print(f"{source:14}" + "".join(f"{row[n]:>28.2f}" for n in names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
