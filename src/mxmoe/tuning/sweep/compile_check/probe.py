"""What both worker modes of a legality validation share: the tiny launch problem, the kernel calls mirrored from
the launch wrappers, and the per-compile timeout and error text.

The launch problem has the shape's hidden and inter (so the same strides and EVEN_K as the real layer) but
min(E, LAUNCH_EXPERTS) experts and LAUNCH_TOKENS tokens, built once per worker process (functools.cache). The
mirrors `stage1_call` / `stage2_call` return the kernel, grid and arguments that `kernels.stage1.stage1` /
`kernels.stage2.stage2` launch with; they are kept in step with the wrappers by hand, and both workers check that
the wrapper's own launch specializes the same way. torch and triton are imported inside functions only.
"""

from __future__ import annotations

import contextlib
import functools
import signal
import traceback

from mxmoe.config import TileConfig
from mxmoe.shapes import MoEShape, Path

LAUNCH_EXPERTS = 8  # tiny launch problem: min(E, 8) experts ...
LAUNCH_TOKENS = 16  # ... and 16 tokens, with the shape's own hidden and inter (same strides and EVEN_K)
ERROR_TAIL = 400  # characters of an error message kept in the CSV


class CompileTimeout(Exception):
    """Raised by the SIGALRM handler when one compile outlasts the per-config timeout."""


def on_alarm(signum, frame):  # noqa: ARG001 -- signal handler signature
    raise CompileTimeout("compile exceeded the per-config timeout")


@contextlib.contextmanager
def alarm(timeout_s: int):
    """SIGALRM after `timeout_s` seconds (`on_alarm` raises CompileTimeout) inside the block, disarmed on leaving."""
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(timeout_s)
    try:
        yield
    finally:
        signal.alarm(0)


def tail(exc: BaseException) -> str:
    """The exception as one line, its last ERROR_TAIL characters (what the CSV's error column keeps)."""
    text = "".join(traceback.format_exception_only(type(exc), exc)).strip().replace("\n", " | ")
    return text[-ERROR_TAIL:]


def compile_retried(compile_fn):
    """(compile_fn(), None), or after one failure that is not the alarm, (compile_fn() again, a note saying so):
    concurrent cold-cache compiles failed transiently in calibration. A second failure propagates."""
    try:
        return compile_fn(), None
    except CompileTimeout:
        raise
    except Exception as first:
        return compile_fn(), "first compile failed, retry passed: " + tail(first)


@functools.cache
def launch_weights(shape: MoEShape, device: str):
    """min(E, 8) experts of random MXFP4 weights at the shape's hidden and inter (one copy per worker and shape:
    ~180 MB for deepseek-v3, so 16 workers stay far from the GPU's memory)."""
    from mxmoe.weights import MoEWeights

    e = min(shape.experts, LAUNCH_EXPERTS)
    small = MoEShape(f"{shape.name}-launch", e, min(shape.topk, e), shape.hidden, shape.inter, shape.activation,
                     bias=shape.bias)
    return MoEWeights.random(small, seed=0, device=device)


@functools.cache
def launch_routing(shape: MoEShape, block_m: int, device: str):
    """16 tokens, each on min(topk, E') distinct experts; the plan aligned to block_m; uniform routing weights."""
    import torch

    from mxmoe.routing import align_by_expert

    e = min(shape.experts, LAUNCH_EXPERTS)
    t, a = LAUNCH_TOKENS, min(shape.topk, e)
    ids = ((torch.arange(t)[:, None] + torch.arange(a)[None, :]) % e).to(torch.int32).to(device)  # [T, A]
    return align_by_expert(ids, e, block_m), torch.full((t, a), 1.0 / a, device=device)


@functools.cache
def launch_input(shape: MoEShape, path: Path, stage: int, device: str, v2: bool = False, e4m3: bool = False):
    """The stage's activation at the path's width: x [T, H] (stage 1) or h [T*A, I] (stage 2); with `v2` every path
    is carried as bf16 (the v2 kernels' carriers: the MX values are exact in bf16); with `e4m3` as e4m3 bytes and
    one f32 scale per row (Mma.WGMMA_E4M3's input)."""
    import torch

    from mxmoe.kernels.common import KernelInput

    t, a = LAUNCH_TOKENS, min(shape.topk, shape.experts, LAUNCH_EXPERTS)
    rows, cols = (t, shape.hidden) if stage == 1 else (t * a, shape.inter)
    if e4m3:
        codes = torch.randint(0, 0x70, (rows, cols), device=device, dtype=torch.uint8)  # no e4m3 NaN codes
        return KernelInput(codes, torch.ones(rows, device=device), path)
    if v2:
        return KernelInput((torch.randn(rows, cols, device=device) * 0.1).to(torch.bfloat16), None, path)
    x = KernelInput.empty(path, rows, cols, torch.device(device))
    if path is Path.A16W4:
        x.data.copy_(torch.randn(rows, cols, device=device) * 0.1)
    else:
        x.data.copy_(torch.randint(0, 0x70, x.data.shape, device=device, dtype=torch.uint8))  # no e4m3 NaN codes
        x.scales.fill_(127)  # e8m0 1.0
    return x


def launch_problem(shape: MoEShape, path: Path, stage: int, block_m: int, device: str = "cuda"):
    """(weights, plan, x, topk_weights, T) of the tiny launch problem, from per-worker caches."""
    plan, topk_weights = launch_routing(shape, block_m, device)
    return launch_weights(shape, device), plan, launch_input(shape, path, stage, device), topk_weights, \
        LAUNCH_TOKENS


def stage1_call(x, weights, plan, cfg: TileConfig, out):
    """The main kernel, grid and arguments `kernels.stage1.stage1` launches with (mirrored; kept in step by hand).
    With split_k > 1 the wrapper also launches the small epilogue kernel, which is not compiled here. v1 kernels
    only: a v2 config's launch is recorded from the real wrapper (`cpu.py`), never mirrored."""
    if cfg.mma.v2:
        raise NotImplementedError("v2 (mma=wgmma) configs are validated by --cpu-compile, which compiles the launch "
                                  "the real wrapper records; the GPU worker mirrors the v1 kernels only")
    import torch
    import triton

    from mxmoe.kernels.common import ACT_CODES, MMA_CODES, PATH_CODES, interpreting
    from mxmoe.kernels.stage1 import _stage1_kernel

    i, h = weights.inter, weights.hidden
    ws = weights.w13
    b = weights.b13 if weights.b13 is not None else ws.scales
    part = torch.zeros(plan.num_pairs, 2 * i, dtype=torch.float32, device=x.data.device) if cfg.split_k > 1 \
        else out.data
    grid = (plan.max_blocks * triton.cdiv(i, cfg.block_n), cfg.split_k)
    args = (
        x.data, x.scales_or(x.data), ws.data, ws.scales, b, out.data, out.scales_or(out.data), part,
        plan.sorted_ids, plan.block_expert, plan.num_padded,
        plan.num_pairs, h, i, plan.max_blocks,
        x.data.stride(0), x.scales_or(x.data).stride(0), ws.data.stride(0), ws.data.stride(1),
        ws.scales.stride(0), ws.scales.stride(1), b.stride(0),
        out.data.stride(0), out.scales_or(out.data).stride(0), part.stride(0),
    )
    meta = dict(
        TOPK=plan.topk, PATH=PATH_CODES[x.path], ACT=ACT_CODES[weights.activation],
        HAS_BIAS=weights.b13 is not None, MMA=MMA_CODES[cfg.mma],
        EVEN_K=h % cfg.block_k == 0, INTERP=interpreting(), SPLIT_K=cfg.split_k,
        BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k, GROUP_M=cfg.group_m,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )
    return _stage1_kernel, grid, args, meta


def stage2_call(h, weights, plan, topk_weights, cfg: TileConfig, out):
    """The kernel, grid and arguments `kernels.stage2.stage2` launches with (mirrored; kept in step by hand; v1
    kernels only, as `stage1_call`)."""
    if cfg.mma.v2:
        raise NotImplementedError("v2 (mma=wgmma) configs are validated by --cpu-compile, which compiles the launch "
                                  "the real wrapper records; the GPU worker mirrors the v1 kernels only")
    import torch
    import triton

    from mxmoe.config import Combine
    from mxmoe.kernels.common import MMA_CODES, PATH_CODES, interpreting
    from mxmoe.kernels.stage2 import _stage2_kernel

    ws = weights.w2
    hidden, inter = weights.hidden, weights.inter
    rw = topk_weights.to(torch.float32).contiguous().view(-1)
    b = weights.b2 if weights.b2 is not None else rw
    grid = (plan.max_blocks * triton.cdiv(hidden, cfg.block_n), cfg.split_k)
    args = (
        h.data, h.scales_or(h.data), ws.data, ws.scales, b, rw, out,
        plan.sorted_ids, plan.block_expert, plan.num_padded,
        plan.num_pairs, hidden, inter, plan.max_blocks,
        h.data.stride(0), h.scales_or(h.data).stride(0), ws.data.stride(0), ws.data.stride(1),
        ws.scales.stride(0), ws.scales.stride(1), b.stride(0), out.stride(0),
    )
    meta = dict(
        TOPK=plan.topk, PATH=PATH_CODES[h.path], HAS_BIAS=weights.b2 is not None,
        MMA=MMA_CODES[cfg.mma], SLOTS=cfg.combine is Combine.SLOTS, SPLIT_K=cfg.split_k,
        EVEN_K=inter % cfg.block_k == 0, INTERP=interpreting(),
        BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k, GROUP_M=cfg.group_m,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )
    return _stage2_kernel, grid, args, meta


def stage_call(stage: int, x, weights, plan, topk_weights, cfg: TileConfig, buf):
    """`stage1_call` or `stage2_call` for `stage` (buf: stage 1's KernelInput, stage 2's output tensor)."""
    if stage == 1:
        return stage1_call(x, weights, plan, cfg, buf)
    return stage2_call(x, weights, plan, topk_weights, cfg, buf)


def run_wrapper(stage: int, x, weights, plan, topk_weights, cfg: TileConfig, t: int, buf) -> None:
    """The real launch wrapper of `stage` (`stage1()` / `stage2()`: its checks, then its launch) on these inputs."""
    if stage == 1:
        from mxmoe.kernels.stage1 import stage1

        stage1(x, weights, plan, cfg, out=buf)
    else:
        from mxmoe.kernels.stage2 import stage2

        stage2(x, weights, plan, topk_weights, cfg, t, out=buf)


def stage_buffer(path: Path, stage: int, cfg: TileConfig, weights, plan, x, t: int):
    """What the stage writes: stage 1's h [P, I] at the path's width, stage 2's fp32 rows (slots: P rows, else T;
    rows: bf16 [P, H])."""
    import torch

    from mxmoe.kernels.common import KernelInput

    if stage == 1:
        if cfg.mma.v2:
            return KernelInput(torch.empty(plan.num_pairs, weights.inter, dtype=torch.bfloat16, device=x.data.device),
                               None, path)
        return KernelInput.empty(path, plan.num_pairs, weights.inter, x.data.device)
    rows = plan.num_pairs if cfg.combine.value in ("slots", "rows") else t
    if cfg.combine.value == "rows":  # v2 only: one bf16 row per pair
        return torch.empty(rows, weights.hidden, dtype=torch.bfloat16, device=x.data.device)
    v2_slots = cfg.mma.v2 and cfg.combine.value == "slots"  # the v2 slots combine stores per split
    return torch.zeros((cfg.split_k, rows, weights.hidden) if v2_slots else (rows, weights.hidden), dtype=torch.float32,
                       device=x.data.device)
