"""Stage 1: gathered tokens x W13 (MXFP4 along H) + bias, fused activation, optional MX epilogue.

Axis legend: T tokens, A topk, P = T*A (token, slot) pairs, E experts, H hidden (K of this
stage), I inter; N tiles run over I and each program holds a gate tile and an up tile.

Inputs (RoutingPlan from mxmoe.routing): sorted_ids [P_max] pair ids grouped by expert and padded
with the sentinel P; block_expert [P_max // BLOCK_M]; num_padded [1] on the device.
Output rows are indexed by pair id p = t*A + a, so stage 2 gathers them with the same plan.
  a16w4: x [T, H] bf16                      -> h [P, I] bf16
  a8w4:  x [T, H] e4m3 + scales [T, H//32]  -> h [P, I] e4m3 + scales [P, I//32]
  a4w4:  x [T, H//2] e2m1 + scales          -> h [P, I//2] e2m1 + scales [P, I//32]
"""

from __future__ import annotations

import triton
import triton.language as tl

from mxmoe.config import TileConfig
from mxmoe.kernels.common import (
    ACT_CODES,
    MMA_CODES,
    PATH_CODES,
    KernelInput,
    check_launch,
    grid_swizzle,
    interpreting,
    load_act_tile,
    mma_tile,
    to_bf16_rne,
)
from mxmoe.kernels.mx_tile import quantize_tile_mxfp4, quantize_tile_mxfp8


@triton.jit
def _stage1_kernel(
    # pointers
    x_ptr, xs_ptr, w_ptr, ws_ptr, b_ptr, out_ptr, outs_ptr,
    sorted_ids_ptr, block_expert_ptr, num_padded_ptr,
    # sizes
    num_pairs, H, I, max_blocks,
    # strides
    stride_xt, stride_xst, stride_we, stride_wn, stride_wse, stride_wsn, stride_be,
    stride_op, stride_osp,
    # meta-parameters
    TOPK: tl.constexpr, PATH: tl.constexpr, ACT: tl.constexpr, HAS_BIAS: tl.constexpr, MMA: tl.constexpr,
    EVEN_K: tl.constexpr, INTERP: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    num_n = tl.cdiv(I, BLOCK_N)
    pid_m, pid_n = grid_swizzle(tl.program_id(0), max_blocks, num_n, GROUP_M)
    if pid_m * BLOCK_M >= tl.load(num_padded_ptr):
        return
    expert = tl.load(block_expert_ptr + pid_m).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    pair = tl.load(sorted_ids_ptr + offs_m)
    row_ok = pair < num_pairs
    token = (pair // TOPK).to(tl.int64)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    gate_rows = offs_n
    up_rows = offs_n + I
    w_e = w_ptr + expert * stride_we
    ws_e = ws_ptr + expert * stride_wse

    acc_g = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    acc_u = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k0 in range(0, H, BLOCK_K):
        a_even, a_odd, a_full, a_scale = load_act_tile(
            x_ptr, xs_ptr, token, row_ok, k0, H, stride_xt, stride_xst, PATH, MMA, EVEN_K, INTERP, BLOCK_M, BLOCK_K)
        acc_g = mma_tile(acc_g, a_even, a_odd, a_full, a_scale, w_e, ws_e, gate_rows, k0, H,
                         stride_wn, stride_wsn, PATH, MMA, EVEN_K, INTERP, BLOCK_N, BLOCK_K)
        acc_u = mma_tile(acc_u, a_even, a_odd, a_full, a_scale, w_e, ws_e, up_rows, k0, H,
                         stride_wn, stride_wsn, PATH, MMA, EVEN_K, INTERP, BLOCK_N, BLOCK_K)

    if HAS_BIAS:
        acc_g += tl.load(b_ptr + expert * stride_be + gate_rows)[None, :]
        acc_u += tl.load(b_ptr + expert * stride_be + up_rows)[None, :]
    if ACT == 0:  # silu(gate) * up
        h = acc_g * tl.sigmoid(acc_g) * acc_u
    else:  # GPT-OSS swiglu: clamp, alpha 1.702, (up + 1)
        g = tl.minimum(acc_g, 7.0)
        u = tl.minimum(tl.maximum(acc_u, -7.0), 7.0)
        h = g * tl.sigmoid(1.702 * g) * (u + 1.0)

    rows = pair.to(tl.int64)
    if PATH == 0:
        tl.store(out_ptr + rows[:, None] * stride_op + offs_n[None, :], to_bf16_rne(h, INTERP), mask=row_ok[:, None])
    else:
        offs_s = pid_n * (BLOCK_N // 32) + tl.arange(0, BLOCK_N // 32)
        if PATH == 1:
            q, s = quantize_tile_mxfp8(h, BLOCK_M, BLOCK_N)
            tl.store(out_ptr + rows[:, None] * stride_op + offs_n[None, :], q, mask=row_ok[:, None])
        else:
            q, s = quantize_tile_mxfp4(h, BLOCK_M, BLOCK_N)
            offs_q = pid_n * (BLOCK_N // 2) + tl.arange(0, BLOCK_N // 2)
            tl.store(out_ptr + rows[:, None] * stride_op + offs_q[None, :], q, mask=row_ok[:, None])
        tl.store(outs_ptr + rows[:, None] * stride_osp + offs_s[None, :], s, mask=row_ok[:, None])


def stage1(x: KernelInput, weights, plan, cfg: TileConfig, *, out: KernelInput | None = None,
           poison: bool = False) -> KernelInput:
    """Launch stage 1. `x` holds the layer input at the path's width; returns h at that width.

    `out`, when given, is written in place. `poison` fills a buffer allocated here with NaN / 0xFF first, so a
    tile the kernel skips cannot pass on an old answer (the tuning harness's correctness check).
    """
    e, n, _ = weights.w13.data.shape
    i = n // 2
    h = weights.hidden
    check_launch(x, h, weights, plan, cfg, stage=1)
    if i % cfg.block_n:
        raise ValueError(f"stage 1: BLOCK_N={cfg.block_n} must divide inter={i}")
    pairs = plan.num_pairs
    if out is None:
        out = KernelInput.empty(x.path, pairs, i, x.data.device)
        if poison:
            out.poison()
    if plan.max_blocks == 0:
        return out
    ws = weights.w13
    num_n = triton.cdiv(i, cfg.block_n)
    grid = (plan.max_blocks * num_n,)
    b = weights.b13 if weights.b13 is not None else ws.scales  # dummy pointer when HAS_BIAS is off
    _stage1_kernel[grid](
        x.data, x.scales_or(x.data), ws.data, ws.scales, b, out.data, out.scales_or(out.data),
        plan.sorted_ids, plan.block_expert, plan.num_padded,
        pairs, h, i, plan.max_blocks,
        x.data.stride(0), x.scales_or(x.data).stride(0), ws.data.stride(0), ws.data.stride(1),
        ws.scales.stride(0), ws.scales.stride(1), b.stride(0),
        out.data.stride(0), out.scales_or(out.data).stride(0),
        TOPK=plan.topk, PATH=PATH_CODES[x.path], ACT=ACT_CODES[weights.activation],
        HAS_BIAS=weights.b13 is not None, MMA=MMA_CODES[cfg.mma],
        EVEN_K=h % cfg.block_k == 0, INTERP=interpreting(),
        BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k, GROUP_M=cfg.group_m,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )
    return out
