"""The GPU worker of a legality validation: compile, load and launch one config in a spawn process that owns one
CUDA context, and return what happened as data (never raised).

compile  `kernel.warmup(...)` with the exact arguments the launch wrapper passes (Triton 3.6 compiles without
         launching); records `metadata.shared`, then loads the binary as the first launch would, which is where an
         over-large shared-memory request fails (OutOfResources); records n_regs, n_spills
launch   the real wrapper (`stage1()` / `stage2()`: its checks, then one launch) on the tiny problem of `probe`,
         then a synchronize
A launch that leaves the CUDA context unusable poisons the worker: its later tasks answer "retry" and the pool
(`pool.run_all`) resubmits them in a fresh process.
"""

from __future__ import annotations

import os
import time

from mxmoe.config import TileConfig
from mxmoe.legality import observed_failure
from mxmoe.shapes import MODELS, Path
from mxmoe.tuning.sweep.compile_check.probe import (
    CompileTimeout,
    alarm,
    compile_retried,
    launch_problem,
    run_wrapper,
    stage_buffer,
    stage_call,
    tail,
)
from mxmoe.tuning.sweep.compile_check.sample import Task

_POISONED: list[str] = []  # per worker process: set once a launch leaves the CUDA context unusable


def init_worker() -> None:
    """Pool initializer: a real compile (never the interpreter) and this process's CUDA context."""
    os.environ.pop("TRITON_INTERPRET", None)
    import torch

    torch.cuda.init()


def _device_fields() -> dict:
    import torch

    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    return {"device": props.name, "smem_optin": getattr(props, "shared_memory_per_block_optin", "")}


def _cache_size(kernel) -> int | None:
    """Compiled variants the kernel holds for this device (Triton 3.6 internals; None if they moved)."""
    try:
        import torch

        return len(kernel.device_caches[torch.cuda.current_device()][0])
    except (AttributeError, KeyError, IndexError, TypeError):
        return None


def run_task(task: Task, timeout_s: int, launch: bool) -> dict:
    """Compile (and launch) one config; every failure is returned as data, never raised.

    outcome: ok | compile (compiler or loader refused) | launch | spills (heavy) | timeout | harness_error;
    "retry" when this worker's CUDA context was lost by an earlier task.
    """
    if _POISONED:  # a sticky CUDA error earlier: the driver drains this pool and resubmits in a fresh one
        return {"outcome": "retry", "error": f"CUDA context lost after {_POISONED[0]}"}
    shape, path, stage = MODELS[task.shape], Path(task.path), task.stage
    cfg = TileConfig.from_json(task.config)
    out: dict = _device_fields() | {"compile_ok": 0, "launch_ok": ""}
    try:
        weights, plan, x, topk_weights, t = launch_problem(shape, path, stage, cfg.plan_rows)
        buf = stage_buffer(path, stage, cfg, weights, plan, x, t)
        kernel, grid, args, meta = stage_call(stage, x, weights, plan, topk_weights, cfg, buf)
    except Exception as exc:  # the harness could not build inputs: no evidence about the config (compile_ok blank)
        return out | {"compile_ok": "", "outcome": "harness_error", "error": "inputs: " + tail(exc)}

    failed = _compile_and_load(kernel, grid, args, meta, timeout_s, out)
    if failed is not None:
        return failed
    if launch:
        _launch(task.config, kernel, stage, cfg, (x, weights, plan, topk_weights, t, buf), out)
    failure = observed_failure(bool(out["compile_ok"]), None if out["launch_ok"] == "" else bool(out["launch_ok"]),
                               out.get("n_spills"))
    out["outcome"] = failure or "ok"
    return out


def _compile_and_load(kernel, grid, args: tuple, meta: dict, timeout_s: int, out: dict) -> dict | None:
    """Compile and load into `out`; the finished result instead when the compile failed or timed out."""
    t0 = time.monotonic()
    with alarm(timeout_s):
        try:
            compiled, retried = compile_retried(lambda: kernel.warmup(*args, grid=grid, **meta))
            if retried:
                out["error"] = retried
            out["compiler_smem"] = compiled.metadata.shared
            compiled._init_handles()  # what the first launch does: loads the binary, checks shared memory vs device
            out.update(compile_ok=1, n_regs=compiled.n_regs, n_spills=compiled.n_spills)
        except CompileTimeout as exc:
            return out | {"compile_ok": "", "outcome": "timeout", "error": tail(exc),
                          "compile_s": round(time.monotonic() - t0, 2)}
        except Exception as exc:  # compile errors and OutOfResources are the data this script collects
            return out | {"outcome": "compile", "error": tail(exc), "compile_s": round(time.monotonic() - t0, 2)}
    out["compile_s"] = round(time.monotonic() - t0, 2)
    return None


def _launch(config: str, kernel, stage: int, cfg: TileConfig, inputs: tuple, out: dict) -> None:
    """One launch through the real wrapper and a synchronize, recorded in `out` (launch_ok, error)."""
    import torch

    x, weights, plan, topk_weights, t, buf = inputs
    before = _cache_size(kernel)
    try:
        run_wrapper(stage, x, weights, plan, topk_weights, cfg, t, buf)
        torch.cuda.synchronize()
        out["launch_ok"] = 1
    except Exception as exc:  # wrapper refusals (ValueError) and launch errors are data too
        out.update(launch_ok=0, error=tail(exc))
        try:
            torch.cuda.synchronize()
        except Exception:  # sticky error: this context is gone; later tasks answer "retry" (see pool.run_all)
            _POISONED.append(config)
    after = _cache_size(kernel)
    if before is not None and after is not None and after > before:
        out["error"] = (out.get("error", "") + " | the launch compiled another variant: _stage_call mirrors "
                        "are out of step with the launch wrapper").strip(" |")
