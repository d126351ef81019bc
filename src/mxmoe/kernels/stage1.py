"""Stage 1: gathered tokens x W13 (MXFP4 along H) + bias, fused activation, optional MX epilogue.

Axis legend: T tokens, A topk, P = T*A (token, slot) pairs, E experts, H hidden (K of this
stage), I inter; N tiles run over I and each program holds a gate tile and an up tile.

Inputs (RoutingPlan from mxmoe.routing): sorted_ids [P_max] pair ids grouped by expert and padded
with the sentinel P; block_expert [P_max // BLOCK_M]; num_padded [1] on the device.
Output rows are indexed by pair id p = t*A + a, so stage 2 gathers them with the same plan.
  a16w4: x [T, H] bf16                      -> h [P, I] bf16
  a8w4:  x [T, H] e4m3 + scales [T, H//32]  -> h [P, I] e4m3 + scales [P, I//32]
  a4w4:  x [T, H//2] e2m1 + scales          -> h [P, I//2] e2m1 + scales [P, I//32]
Split-K (TileConfig.split_k > 1, the decode lever: more CTAs than hit experts x N tiles): each split adds its
fp32 gate and up sums into part [P, 2*I] (gate columns [0, I), up [I, 2*I), as W13's rows), and a second
kernel over the pairs applies the epilogue to the full sums.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from mxmoe.config import TileConfig
from mxmoe.kernels.common import (
    A8W4,
    A16W4,
    ACT_CODES,
    MMA_CODES,
    PATH_CODES,
    KernelInput,
    activation,
    atomic_add_tile,
    check_launch,
    grid_swizzle,
    interpreting,
    load_act_tile,
    mma_tile,
    split_k_range,
    to_bf16_rne,
)
from mxmoe.kernels.mx_tile import quantize_tile_mxfp4, quantize_tile_mxfp8
from mxmoe.kernels.swmoe import stage1_wgmma

# The split-K epilogue kernel: 16 pairs x the config's BLOCK_N (a multiple of the 32-column MX group) per program,
# 4 warps. Not tuned: it reads 2*I*4 bytes per pair, far below the weights the main kernel streams (gpt-oss-20b
# T=1: 92 KB against 35 MB of W13).
FINISH_BLOCK_M = 16
FINISH_WARPS = 4


@triton.jit
def _epilogue(acc_g, acc_u, rows, row_ok, offs_n, pid_n, out_ptr, outs_ptr, stride_op, stride_osp,
              PATH: tl.constexpr, ACT: tl.constexpr, INTERP: tl.constexpr, BLOCK_M: tl.constexpr,
              BLOCK_N: tl.constexpr):
    """Activation of the fp32 gate and up sums (bias added) of pair rows x one N tile, then the store at the
    path's width. Both kernels call it, so the fused and the split-K launch round alike."""
    h = to_bf16_rne(activation(acc_g, acc_u, ACT), INTERP)  # the MX paths quantize the bf16 h (reference.py)

    if PATH == A16W4:
        tl.store(out_ptr + rows[:, None] * stride_op + offs_n[None, :], h, mask=row_ok[:, None])
    else:
        h = h.to(tl.float32)
        offs_s = pid_n * (BLOCK_N // 32) + tl.arange(0, BLOCK_N // 32)
        if PATH == A8W4:
            q, s = quantize_tile_mxfp8(h, BLOCK_M, BLOCK_N)
            tl.store(out_ptr + rows[:, None] * stride_op + offs_n[None, :], q, mask=row_ok[:, None])
        else:
            q, s = quantize_tile_mxfp4(h, BLOCK_M, BLOCK_N)
            offs_q = pid_n * (BLOCK_N // 2) + tl.arange(0, BLOCK_N // 2)
            tl.store(out_ptr + rows[:, None] * stride_op + offs_q[None, :], q, mask=row_ok[:, None])
        tl.store(outs_ptr + rows[:, None] * stride_osp + offs_s[None, :], s, mask=row_ok[:, None])


@triton.jit
def _stage1_kernel(
    # pointers
    x_ptr, xs_ptr, w_ptr, ws_ptr, b_ptr, out_ptr, outs_ptr, part_ptr,
    sorted_ids_ptr, block_expert_ptr, num_padded_ptr,
    # sizes
    num_pairs, H, I, max_blocks,
    # strides
    stride_xt, stride_xst, stride_we, stride_wn, stride_wse, stride_wsn, stride_be,
    stride_op, stride_osp, stride_pp,
    # meta-parameters
    TOPK: tl.constexpr, PATH: tl.constexpr, ACT: tl.constexpr, HAS_BIAS: tl.constexpr, MMA: tl.constexpr,
    EVEN_K: tl.constexpr, INTERP: tl.constexpr, SPLIT_K: tl.constexpr,
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

    if SPLIT_K == 1:
        k_first = 0
        k_len = H
    else:
        pid_k = tl.program_id(1)
        k_first, k_len = split_k_range(pid_k, H, SPLIT_K, BLOCK_K)
    acc_g = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    acc_u = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    # Bounds from 0, the split's block-aligned offset added inside, as stage 2 (split_k_range says why).
    for kk in range(0, k_len, BLOCK_K):
        k0 = k_first + kk
        a_even, a_odd, a_full, a_scale = load_act_tile(
            x_ptr, xs_ptr, token, row_ok, k0, H, stride_xt, stride_xst, PATH, MMA, EVEN_K, INTERP, BLOCK_M, BLOCK_K)
        acc_g = mma_tile(acc_g, a_even, a_odd, a_full, a_scale, w_e, ws_e, gate_rows, k0, H,
                         stride_wn, stride_wsn, PATH, MMA, EVEN_K, INTERP, BLOCK_N, BLOCK_K)
        acc_u = mma_tile(acc_u, a_even, a_odd, a_full, a_scale, w_e, ws_e, up_rows, k0, H,
                         stride_wn, stride_wsn, PATH, MMA, EVEN_K, INTERP, BLOCK_N, BLOCK_K)

    if HAS_BIAS and (SPLIT_K == 1 or pid_k == 0):  # split-K: split 0 carries the bias
        acc_g += tl.load(b_ptr + expert * stride_be + gate_rows)[None, :]
        acc_u += tl.load(b_ptr + expert * stride_be + up_rows)[None, :]
    rows = pair.to(tl.int64)
    if SPLIT_K == 1:
        _epilogue(acc_g, acc_u, rows, row_ok, offs_n, pid_n, out_ptr, outs_ptr, stride_op, stride_osp,
                  PATH, ACT, INTERP, BLOCK_M, BLOCK_N)
    else:
        part = part_ptr + rows[:, None] * stride_pp
        atomic_add_tile(part + gate_rows[None, :], acc_g, row_ok, BLOCK_M, BLOCK_N)
        atomic_add_tile(part + up_rows[None, :], acc_u, row_ok, BLOCK_M, BLOCK_N)


@triton.jit
def _stage1_finish_kernel(
    # pointers
    part_ptr, out_ptr, outs_ptr,
    # sizes
    num_pairs, I,
    # strides
    stride_pp, stride_op, stride_osp,
    # meta-parameters
    PATH: tl.constexpr, ACT: tl.constexpr, INTERP: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """The split-K epilogue: rows are pair ids 0..P-1 (every pair has one expert, so every row is written)."""
    pid_n = tl.program_id(1)
    rows = (tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    row_ok = rows < num_pairs
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    part = part_ptr + rows[:, None] * stride_pp + offs_n[None, :]
    acc_g = tl.load(part, mask=row_ok[:, None], other=0.0)
    acc_u = tl.load(part + I, mask=row_ok[:, None], other=0.0)
    _epilogue(acc_g, acc_u, rows, row_ok, offs_n, pid_n, out_ptr, outs_ptr, stride_op, stride_osp,
              PATH, ACT, INTERP, BLOCK_M, BLOCK_N)


def stage1(x: KernelInput, weights, plan, cfg: TileConfig, *, out: KernelInput | None = None,
           poison: bool = False, counters: torch.Tensor | None = None,
           zero: torch.Tensor | None = None) -> KernelInput:
    """Launch stage 1. `x` holds the layer input at the path's width; returns h at that width.

    `out`, when given, is written in place. `poison` fills a buffer allocated here with NaN / 0xFF first, so a
    tile the kernel skips cannot pass on an old answer (the tuning harness's correctness check); the split-K
    partial sums start at zero whatever `poison` says. `zero` (v2 only): a contiguous fp32 tensor the kernel
    zeroes on the side, stage 2's atomic sums.
    """
    e, n, _ = weights.w13.data.shape
    i = n // 2
    h = weights.hidden
    check_launch(x, h, weights, plan, cfg, stage=1)
    if cfg.mma.v2:
        return stage1_wgmma(x, weights, plan, cfg, out=out, poison=poison, counters=counters, zero=zero)
    if zero is not None:
        raise ValueError(f"stage 1 mma={cfg.mma.value}: only the v2 kernels zero a buffer on the side")
    pairs = plan.num_pairs
    if out is None:
        out = KernelInput.empty(x.path, pairs, i, x.data.device)
        if poison:
            out.poison()
    if plan.max_blocks == 0:
        return out
    ws = weights.w13
    num_n = triton.cdiv(i, cfg.block_n)
    split = cfg.split_k > 1
    # [P, 2*I] fp32 partial sums, zeroed (never poisoned: the splits add into it); unsplit, a dummy pointer
    part = torch.zeros(pairs, n, dtype=torch.float32, device=x.data.device) if split else out.data
    grid = (plan.max_blocks * num_n, cfg.split_k)
    b = weights.b13 if weights.b13 is not None else ws.scales  # dummy pointer when HAS_BIAS is off
    path, act, interp = PATH_CODES[x.path], ACT_CODES[weights.activation], interpreting()
    _stage1_kernel[grid](
        x.data, x.scales_or(x.data), ws.data, ws.scales, b, out.data, out.scales_or(out.data), part,
        plan.sorted_ids, plan.block_expert, plan.num_padded,
        pairs, h, i, plan.max_blocks,
        x.data.stride(0), x.scales_or(x.data).stride(0), ws.data.stride(0), ws.data.stride(1),
        ws.scales.stride(0), ws.scales.stride(1), b.stride(0),
        out.data.stride(0), out.scales_or(out.data).stride(0), part.stride(0),
        TOPK=plan.topk, PATH=path, ACT=act, HAS_BIAS=weights.b13 is not None, MMA=MMA_CODES[cfg.mma],
        EVEN_K=h % cfg.block_k == 0, INTERP=interp, SPLIT_K=cfg.split_k,
        BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k, GROUP_M=cfg.group_m,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )
    if split:
        _stage1_finish_kernel[(triton.cdiv(pairs, FINISH_BLOCK_M), num_n)](
            part, out.data, out.scales_or(out.data),
            pairs, i,
            part.stride(0), out.data.stride(0), out.scales_or(out.data).stride(0),
            PATH=path, ACT=act, INTERP=interp, BLOCK_M=FINISH_BLOCK_M, BLOCK_N=cfg.block_n,
            num_warps=FINISH_WARPS,
        )
    return out
