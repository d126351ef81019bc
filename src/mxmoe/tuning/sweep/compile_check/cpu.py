"""The --cpu-compile worker of a legality validation: no GPU, no CUDA context. One config is compiled for sm_90 on
the CPU (`sm90.compile_sm90`, the bundled ptxas), its load judged against the H100 opt-in limit, and the launch
wrapper's own checks run on CPU tensors with the kernel launch replaced by a recorder.

Per result: compile_ok; compiler_smem (`metadata.shared`); load_ok = compiler_smem <= the H100 opt-in limit
232448 B, the check `CompiledKernel._init_handles` makes when a GPU loads the binary; n_regs and n_spills from
`cuobjdump --dump-resource-usage` (n_spills = STACK bytes / 4, Triton's unit); wrapper_ok = the real launch
wrapper (`stage1()` / `stage2()`) accepted the config (and its recorded launch must specialize like the compiled
one); launch_ok blank (not run: no GPU). Outcome: compile | load | wrapper | spills | ok, or timeout and
harness_error when there is no evidence about the config.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time

from mxmoe.config import TileConfig
from mxmoe.legality import H100, observed_failure
from mxmoe.shapes import MODELS, MoEShape, Path
from mxmoe.tuning.sweep.compile_check.probe import (
    LAUNCH_EXPERTS,
    LAUNCH_TOKENS,
    CompileTimeout,
    alarm,
    compile_retried,
    launch_input,
    launch_routing,
    run_wrapper,
    stage_buffer,
    stage_call,
    tail,
)
from mxmoe.tuning.sweep.compile_check.sample import Task
from mxmoe.tuning.sweep.compile_check.sm90 import bind, compile_sm90, resource_usage, sass, wgmma_serialized

CPU_DEVICE = "sm_90 (CPU compile, triton {triton}, not launched)"


def init_cpu_worker() -> None:
    """Pool initializer: a real compile (never the interpreter), one torch thread per worker."""
    os.environ.pop("TRITON_INTERPRET", None)
    import torch

    torch.set_num_threads(1)


@functools.cache
def _cpu_weights(shape: MoEShape, e4m3: bool = False):
    """The GPU mode's min(E, 8) experts with the shape's hidden and inter, as uninitialised CPU tensors: only
    their shapes, strides and dtypes reach the compiler (never launched; untouched pages cost no memory). With
    `e4m3` zeros instead, so the e4m3 layouts' rebase reads defined bytes (and takes the affine tables, as
    quantizer-made weights do)."""
    import torch

    from mxmoe.mx import MXFormat, MXTensor
    from mxmoe.weights import MoEWeights

    e, h, i = min(shape.experts, LAUNCH_EXPERTS), shape.hidden, shape.inter

    new = torch.zeros if e4m3 else torch.empty

    def mx(rows: int, k: int) -> MXTensor:
        return MXTensor(new(e, rows, k // 2, dtype=torch.uint8), new(e, rows, k // 32, dtype=torch.uint8),
                        MXFormat.E2M1, axis=2, shape=(e, rows, k))

    b13 = torch.zeros(e, 2 * i) if shape.bias else None
    b2 = torch.zeros(e, h) if shape.bias else None
    return MoEWeights(mx(2 * i, h), mx(h, i), b13, b2, shape.activation, e4m3)


class _LaunchRecorder:
    """Stands in for a kernel inside a launch wrapper: `kernel[grid](*args, **meta)` is recorded, not run."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def __getitem__(self, grid):
        return lambda *args, **meta: self.calls.append((tuple(grid), args, meta))


@contextlib.contextmanager
def _wrappers_record_launches():
    """The real `stage1()` / `stage2()`, with their launch recorded and the CUDA-tensor requirement lifted (the
    only check that needs a GPU); every other check they make runs as on a GPU."""
    import mxmoe.kernels.common as common
    import mxmoe.kernels.stage1 as s1
    import mxmoe.kernels.stage2 as s2
    import mxmoe.kernels.swmoe as sw
    import mxmoe.kernels.swmoe_stage2 as sw2

    targets = ((common, "require_executable"), (s1, "_stage1_kernel"), (s1, "_stage1_finish_kernel"),
               (s2, "_stage2_kernel"), (sw, "_stage1_kernel"), (sw2, "_stage2_kernel"), (sw, "quantize_input"),
               (sw2, "combine_rows"))
    saved = [getattr(m, name) for m, name in targets]
    recorder = _LaunchRecorder()
    common.require_executable = lambda t: None
    s1._stage1_kernel = s1._stage1_finish_kernel = s2._stage2_kernel = sw._stage1_kernel = sw2._stage2_kernel = recorder
    sw.quantize_input = lambda *a, **k: None  # v2 stage 1's deferred rounding pass: not this config's kernel
    sw2.combine_rows = lambda *a, **k: None  # the rows combine's own kernel: not this config's either
    try:
        yield recorder
    finally:
        for (m, name), value in zip(targets, saved, strict=True):
            setattr(m, name, value)


def _wrapper_check(stage: int, x, weights, plan, topk_weights, cfg: TileConfig, t: int, buf):
    """(accepted, error, the recorded launch or None): the launch wrapper's own verdict on this config."""
    with _wrappers_record_launches() as recorder:
        try:
            run_wrapper(stage, x, weights, plan, topk_weights, cfg, t, buf)
        except Exception as exc:  # ValueError refusals are the data; anything else is reported as a refusal too
            return False, tail(exc), None
    return True, "", (recorder.calls[0] if recorder.calls else None)


def run_task_cpu(task: Task, timeout_s: int, launch: bool) -> dict:  # noqa: ARG001 -- run_all's signature
    """Compile one config for sm_90 on the CPU; every failure is returned as data, never raised.

    outcome: ok | compile (the compiler refused) | load (compiler smem > the H100 opt-in limit) | wrapper (the
    launch wrapper refused) | spills (>= HEAVY_SPILL_BYTES of stack per thread) | timeout | harness_error.
    """
    import triton

    shape, path, stage = MODELS[task.shape], Path(task.path), task.stage
    cfg = TileConfig.from_json(task.config)
    out: dict = {"device": CPU_DEVICE.format(triton=triton.__version__), "smem_optin": H100.smem_optin_bytes,
                 "compile_ok": 0, "load_ok": "", "wrapper_ok": "", "launch_ok": ""}
    notes: list[str] = []
    try:
        kernel, args, meta, accepted = _prepare(shape, path, stage, cfg, out, notes)
    except Exception as exc:  # the harness could not build inputs: no evidence about the config (compile_ok blank)
        return out | {"compile_ok": "", "outcome": "harness_error", "error": "inputs: " + tail(exc)}
    if kernel is None:  # a v2 config its wrapper refused: no launch to compile
        return out | {"compile_ok": "", "outcome": "wrapper", "error": "; ".join(notes)}
    usage, failed = _compile(kernel, args, meta, timeout_s, out, notes)
    if failed is not None:
        return failed
    return _judge_outcome(out, usage, accepted, notes)


def _prepare(shape: MoEShape, path: Path, stage: int, cfg: TileConfig, out: dict, notes: list[str]):
    """(kernel, args, meta, accepted): the mirrored kernel call on CPU tensors, after the launch wrapper's own
    verdict on the config (wrapper_ok in `out`; refusals and a launch that specializes differently in `notes`)."""
    weights = _cpu_weights(shape, cfg.mma.e4m3)
    plan, topk_weights = launch_routing(shape, cfg.plan_rows, "cpu")
    x, t = launch_input(shape, path, stage, "cpu", cfg.mma.v2, cfg.mma.e4m3), LAUNCH_TOKENS
    buf = stage_buffer(path, stage, cfg, weights, plan, x, t)
    if cfg.mma.v2:
        return _prepare_v2(stage, cfg, (x, weights, plan, topk_weights, t, buf), out, notes)
    kernel, grid, args, meta = stage_call(stage, x, weights, plan, topk_weights, cfg, buf)
    accepted, refusal, recorded = _wrapper_check(stage, x, weights, plan, topk_weights, cfg, t, buf)
    out["wrapper_ok"] = int(accepted)
    if not accepted:
        notes.append("launch wrapper refused: " + refusal)
    elif recorded is None:
        notes.append("the launch wrapper returned without launching")
    else:  # the compile below must be the variant the wrapper's launch would get
        r_grid, r_args, r_meta = recorded
        if r_grid != tuple(grid) or bind(kernel, r_args, r_meta)[2] != bind(kernel, args, meta)[2]:
            notes.append("the launch wrapper's launch specializes differently from _stage_call: the mirrors "
                         "are out of step with the wrapper")
    return kernel, args, meta, accepted


def _prepare_v2(stage: int, cfg: TileConfig, inputs: tuple, out: dict, notes: list[str]):
    """A v2 config: the launch the real wrapper records is what gets compiled (no hand mirror to keep in step), so a
    config the wrapper refuses has nothing to compile (kernel None, the refusal in `notes`)."""
    import mxmoe.kernels.swmoe as sw
    import mxmoe.kernels.swmoe_stage2 as sw2

    x, weights, plan, topk_weights, t, buf = inputs
    accepted, refusal, recorded = _wrapper_check(stage, x, weights, plan, topk_weights, cfg, t, buf)
    out["wrapper_ok"] = int(accepted)
    if not accepted or recorded is None:
        notes.append("launch wrapper refused: " + refusal if not accepted else "the launch wrapper launched nothing")
        return None, None, None, False
    _, args, meta = recorded
    return (sw._stage1_kernel if stage == 1 else sw2._stage2_kernel), args, meta, accepted


def _compile(kernel, args: tuple, meta: dict, timeout_s: int, out: dict, notes: list[str]):
    """(resource usage, None) with the compile recorded in `out`, or (None, the finished result) when the compile
    failed or timed out."""
    t0 = time.monotonic()
    with alarm(timeout_s):
        try:
            compiled, retried = compile_retried(lambda: compile_sm90(kernel, args, meta))
            if retried:
                notes.append(retried)
            usage = resource_usage(compiled.asm["cubin"])
            if wgmma_serialized(sass(compiled.asm["cubin"])):
                notes.append("ptxas serialized every wgmma (C7515: each waits for completion, none overlaps the "
                             "next K step)")
        except CompileTimeout as exc:
            return None, out | {"compile_ok": "", "outcome": "timeout", "error": "; ".join([*notes, tail(exc)]),
                                "compile_s": round(time.monotonic() - t0, 2)}
        except Exception as exc:  # compiler errors are the data this script collects
            return None, out | {"outcome": "compile", "error": "; ".join([*notes, tail(exc)]),
                                "compile_s": round(time.monotonic() - t0, 2)}
    shared = compiled.metadata.shared
    out.update(compile_ok=1, compiler_smem=shared, load_ok=int(shared <= H100.smem_optin_bytes),
               n_regs=usage["regs"], n_spills=usage["stack"] // 4, compile_s=round(time.monotonic() - t0, 2))
    return usage, None


def _judge_outcome(out: dict, usage: dict[str, int], accepted: bool, notes: list[str]) -> dict:
    """`out` with its outcome (load, then wrapper, then spills) and the notes joined as its error."""
    shared = out["compiler_smem"]
    if not out["load_ok"]:
        notes.append(f"not loadable: metadata.shared {shared} B > {H100.smem_optin_bytes} B opt-in limit "
                     "(_init_handles raises OutOfResources on an H100)")
    elif shared + usage["shared_static"] > H100.smem_optin_bytes:
        notes.append(f"passes the load check, but {shared} B dynamic + {usage['shared_static']} B static shared "
                     f"memory > {H100.smem_optin_bytes} B: the launch may still fail")
    if usage["local"]:
        notes.append(f"cuobjdump LOCAL {usage['local']} B besides STACK {usage['stack']} B")
    failure = observed_failure(True, None, out["n_spills"])
    if not out["load_ok"]:
        failure = "load"
    elif not accepted:
        failure = "wrapper"
    out["outcome"] = failure or "ok"
    out["error"] = "; ".join(notes)
    return out
