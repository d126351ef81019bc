"""The v2 stages (mma=wgmma): swapped-operand wgmma over the swizzled MXFP4 layout, activations carried in bf16.

Axis legend: T tokens, A topk, P = T*A pairs, E experts, H hidden, I inter, BM token rows (the MMA's N side),
BN weight rows (the MMA's M side), BK the reduced axis.

Each program computes acc^T [BN, BM] = W_tile [BN, BK] @ X_tile^T [BK, BM] over its K range:
  - the weight tile comes from `wtile.weight_tile` as wgmma's register A operand (16-byte loads that are their
    own fragments, a 9-op decode, no layout conversion), cp.async-pipelined with its scales;
  - the activation tile [BM, BK] bf16 is gathered by token (stage 1) or pair (stage 2) rows, cp.async-staged
    and read by wgmma from shared memory as its B operand;
  - decode blocks (BM = 16) are wgmma's N = 16 instead of padding an M of 64.
Stage 1 holds a gate and an up tile (rows n and I + n of W13), the activation fused in the epilogue; stage 2
multiplies by the routing weight and adds into the token's fp32 row (atomics) or its slot row.

a8w4 / a4w4 carry their activations as bf16 values on the MXFP8 / MXFP4 grid (exact: `mx_tile.qdq_tile`), so
the three paths share one MMA; the quantization the path names happens on the input (kernels/quant.py) and in
stage 1's epilogue. Split-K: stage 1 adds fp32 gate / up partial sums into part [P, 2I] and a second kernel
applies the epilogue; stage 2 adds its partial sums straight into the combine buffer.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from mxmoe.config import Combine, TileConfig
from mxmoe.kernels.common import (
    A4W4,
    A16W4,
    ACT_CODES,
    PATH_CODES,
    KernelInput,
    activation,
    grid_swizzle,
    interpreting,
    split_k_range,
    to_bf16_rne,
)
from mxmoe.kernels.mx_tile import qdq_tile
from mxmoe.kernels.wtile import weight_tile

FINISH_BLOCK_M = 16  # the stage-1 split-K epilogue kernel: 16 pairs x BLOCK_N per program, 4 warps
FINISH_WARPS = 4


@triton.jit
def _act_tile(x_ptr, rows, row_ok, k0, K, stride_x, INTERP: tl.constexpr, BM: tl.constexpr, BK: tl.constexpr):
    """Rows `rows` x [k0, k0 + BK) of a bf16 activation (columns past K read as 0), as the MMA's B operand."""
    offs_k = k0 + tl.arange(0, BK)
    a = tl.load(x_ptr + rows[:, None] * stride_x + offs_k[None, :], mask=row_ok[:, None] & (offs_k < K)[None, :],
                other=0.0)
    if INTERP:
        a = a.to(tl.float32)  # the 3.6 interpreter's bf16 tl.dot is wrong; the values are exact in f32
    return a


@triton.jit
def _block(block_expert_ptr, sorted_ids_ptr, w_ptr, ws_ptr, pid_m, num_pairs, stride_we, stride_wse,
           BM: tl.constexpr):
    """Block pid_m's expert, its BM pair ids and which are real, and the expert's value / scale bases."""
    expert = tl.load(block_expert_ptr + pid_m).to(tl.int64)
    pair = tl.load(sorted_ids_ptr + pid_m * BM + tl.arange(0, BM))
    return expert, pair, pair < num_pairs, w_ptr + expert * stride_we, ws_ptr + expert * stride_wse


@triton.jit
def _mma(acc, w, a, INTERP: tl.constexpr):
    """acc^T [BN, BM] += w [BN, BK] @ a^T."""
    if INTERP:
        return tl.dot(w, tl.trans(a), acc, input_precision="ieee")
    else:
        return tl.dot(w, tl.trans(a), acc)


@triton.jit
def _epilogue1(acc_g, acc_u, rows, row_ok, offs_n, N, out_ptr, stride_op, PATH: tl.constexpr, ACT: tl.constexpr,
               INTERP: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr):
    """Activation of the fp32 gate / up sums (bias added) of BM pair rows x BN columns (those below N stored),
    rounded to the path's grid (a8w4: MXFP8, a4w4: MXFP4; N is a multiple of 32, so a group is all in or all
    out) and stored as bf16."""
    h = activation(acc_g, acc_u, ACT)
    if PATH != A16W4:
        h = qdq_tile(h, PATH == A4W4, INTERP, BM, BN)
    tl.store(out_ptr + rows[:, None] * stride_op + offs_n[None, :], to_bf16_rne(h, INTERP),
             mask=row_ok[:, None] & (offs_n < N)[None, :])


@triton.jit
def _stage1_kernel(
    x_ptr, w_ptr, ws_ptr, b_ptr, out_ptr, part_ptr, sorted_ids_ptr, block_expert_ptr, num_padded_ptr,
    num_pairs, H, I, max_blocks, N16, K64,
    stride_xt, stride_we, stride_wse, stride_be, stride_op, stride_pp,
    TOPK: tl.constexpr, PATH: tl.constexpr, ACT: tl.constexpr, HAS_BIAS: tl.constexpr, FOLD: tl.constexpr,
    INTERP: tl.constexpr, SPLIT_K: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    num_n = tl.cdiv(I, BN)
    pid_m, pid_n = grid_swizzle(tl.program_id(0), max_blocks, num_n, GROUP_M)
    if pid_m * BM >= tl.load(num_padded_ptr):
        return
    expert, pair, row_ok, w_e, ws_e = _block(block_expert_ptr, sorted_ids_ptr, w_ptr, ws_ptr, pid_m, num_pairs,
                                             stride_we, stride_wse, BM)
    token = (pair // TOPK).to(tl.int64)
    pid_k = tl.program_id(1)
    n16_g = pid_n * (BN // 16)
    n16_u = (I + pid_n * BN) // 16  # I is a multiple of 16 (the wrapper checks)
    if SPLIT_K == 1:
        k_first = 0
        k_len = H
    else:
        k_first, k_len = split_k_range(pid_k, H, SPLIT_K, BK)
    acc_g = tl.zeros([BN, BM], dtype=tl.float32)
    acc_u = tl.zeros([BN, BM], dtype=tl.float32)
    for kk in range(0, k_len, BK):
        k0 = k_first + kk
        a = _act_tile(x_ptr, token, row_ok, k0, H, stride_xt, INTERP, BM, BK)
        wg = weight_tile(w_e, ws_e, n16_g, I // 16, k0 // 64, N16, K64, FOLD, INTERP, BN, BK)
        acc_g = _mma(acc_g, wg, a, INTERP)
        wu = weight_tile(w_e, ws_e, n16_u, 2 * I // 16, k0 // 64, N16, K64, FOLD, INTERP, BN, BK)
        acc_u = _mma(acc_u, wu, a, INTERP)
    acc_g = tl.trans(acc_g)
    acc_u = tl.trans(acc_u)
    offs_n = pid_n * BN + tl.arange(0, BN)
    n_ok = offs_n < I
    if HAS_BIAS and (SPLIT_K == 1 or pid_k == 0):  # split-K: split 0 carries the bias
        acc_g += tl.load(b_ptr + expert * stride_be + offs_n, mask=n_ok, other=0.0)[None, :]
        acc_u += tl.load(b_ptr + expert * stride_be + I + offs_n, mask=n_ok, other=0.0)[None, :]
    rows = pair.to(tl.int64)
    if SPLIT_K == 1:
        _epilogue1(acc_g, acc_u, rows, row_ok, offs_n, I, out_ptr, stride_op, PATH, ACT, INTERP, BM, BN)
    else:
        part = part_ptr + rows[:, None] * stride_pp + offs_n[None, :]
        mask = row_ok[:, None] & n_ok[None, :]
        tl.atomic_add(part, acc_g, mask=mask, sem="relaxed")
        tl.atomic_add(part + I, acc_u, mask=mask, sem="relaxed")


@triton.jit
def _stage1_finish_kernel(part_ptr, out_ptr, num_pairs, I, stride_pp, stride_op, PATH: tl.constexpr,
                          ACT: tl.constexpr, INTERP: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr):
    """The split-K epilogue: rows are pair ids 0..P-1 (every pair has one expert, so every row is written)."""
    rows = (tl.program_id(0) * BM + tl.arange(0, BM)).to(tl.int64)
    row_ok = rows < num_pairs
    offs_n = tl.program_id(1) * BN + tl.arange(0, BN)
    part = part_ptr + rows[:, None] * stride_pp + offs_n[None, :]
    mask = row_ok[:, None] & (offs_n < I)[None, :]
    acc_g = tl.load(part, mask=mask, other=0.0)
    acc_u = tl.load(part + I, mask=mask, other=0.0)
    _epilogue1(acc_g, acc_u, rows, row_ok, offs_n, I, out_ptr, stride_op, PATH, ACT, INTERP, BM, BN)


@triton.jit
def _stage2_kernel(
    h_ptr, w_ptr, ws_ptr, b_ptr, rw_ptr, out_ptr, sorted_ids_ptr, block_expert_ptr, num_padded_ptr,
    num_pairs, H, I, max_blocks, N16, K64,
    stride_hp, stride_we, stride_wse, stride_be, stride_or,
    TOPK: tl.constexpr, HAS_BIAS: tl.constexpr, FOLD: tl.constexpr, SLOTS: tl.constexpr, INTERP: tl.constexpr,
    SPLIT_K: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, GROUP_M: tl.constexpr,
):
    num_n = tl.cdiv(H, BN)
    pid_k = tl.program_id(1)
    pid_m, pid_n = grid_swizzle(tl.program_id(0), max_blocks, num_n, GROUP_M)
    if pid_m * BM >= tl.load(num_padded_ptr):
        return
    expert, pair, row_ok, w_e, ws_e = _block(block_expert_ptr, sorted_ids_ptr, w_ptr, ws_ptr, pid_m, num_pairs,
                                             stride_we, stride_wse, BM)
    rows = pair.to(tl.int64)
    if SPLIT_K == 1:
        k_first = 0
        k_len = I
    else:
        k_first, k_len = split_k_range(pid_k, I, SPLIT_K, BK)
    acc = tl.zeros([BN, BM], dtype=tl.float32)
    for kk in range(0, k_len, BK):
        k0 = k_first + kk
        a = _act_tile(h_ptr, rows, row_ok, k0, I, stride_hp, INTERP, BM, BK)
        w = weight_tile(w_e, ws_e, pid_n * (BN // 16), N16, k0 // 64, N16, K64, FOLD, INTERP, BN, BK)
        acc = _mma(acc, w, a, INTERP)
    acc = tl.trans(acc)
    offs_n = pid_n * BN + tl.arange(0, BN)
    n_ok = offs_n < H
    if HAS_BIAS:  # noqa: SIM102 -- HAS_BIAS is a constexpr, pid_k a runtime value
        if pid_k == 0:
            acc += tl.load(b_ptr + expert * stride_be + offs_n, mask=n_ok, other=0.0)[None, :]
    acc = acc * tl.load(rw_ptr + rows, mask=row_ok, other=0.0)[:, None]
    if SLOTS:
        tl.store(out_ptr + rows[:, None] * stride_or + offs_n[None, :], acc, mask=row_ok[:, None] & n_ok[None, :])
    else:
        tl.atomic_add(out_ptr + (rows // TOPK)[:, None] * stride_or + offs_n[None, :], acc,
                      mask=row_ok[:, None] & n_ok[None, :], sem="relaxed")


def stage1_wgmma(x: KernelInput, weights, plan, cfg: TileConfig, *, out: KernelInput | None = None,
                 poison: bool = False) -> KernelInput:
    """Stage 1 on the v2 kernels; `x` is bf16 (on the path's grid). Returns h bf16 [P, I] on the path's grid."""
    w = weights.w13_sw
    i, h = weights.inter, weights.hidden
    pairs = plan.num_pairs
    if out is None:
        out = KernelInput(torch.empty(pairs, i, dtype=torch.bfloat16, device=x.data.device), None, x.path)
        if poison:
            out.data.fill_(float("nan"))
    if plan.max_blocks == 0:
        return out
    num_n = triton.cdiv(i, cfg.block_n)
    split = cfg.split_k > 1
    part = torch.zeros(pairs, 2 * i, dtype=torch.float32, device=x.data.device) if split else out.data
    b = weights.b13 if weights.b13 is not None else w.scales  # dummy pointer when HAS_BIAS is off
    path, act, interp = PATH_CODES[x.path], ACT_CODES[weights.activation], interpreting()
    _stage1_kernel[(plan.max_blocks * num_n, cfg.split_k)](
        x.data, w.data, w.scales, b, out.data, part, plan.sorted_ids, plan.block_expert, plan.num_padded,
        pairs, h, i, plan.max_blocks, w.n16, w.k64,
        x.data.stride(0), w.data.stride(0), w.scales.stride(0), b.stride(0), out.data.stride(0), part.stride(0),
        TOPK=plan.topk, PATH=path, ACT=act, HAS_BIAS=weights.b13 is not None, FOLD=w.fold, INTERP=interp,
        SPLIT_K=cfg.split_k, BM=cfg.block_m, BN=cfg.block_n, BK=cfg.block_k, GROUP_M=cfg.group_m,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )
    if split:
        _stage1_finish_kernel[(triton.cdiv(pairs, FINISH_BLOCK_M), num_n)](
            part, out.data, pairs, i, part.stride(0), out.data.stride(0),
            PATH=path, ACT=act, INTERP=interp, BM=FINISH_BLOCK_M, BN=cfg.block_n, num_warps=FINISH_WARPS,
        )
    return out


def stage2_wgmma(h: KernelInput, weights, plan, topk_weights: torch.Tensor, cfg: TileConfig,
                 out: torch.Tensor) -> None:
    """Stage 2 on the v2 kernels into `out` (fp32 [T, H] zeroed for atomic, [P, H] for slots)."""
    if plan.max_blocks == 0:
        return
    w = weights.w2_sw
    hidden = weights.hidden
    rw = topk_weights.to(torch.float32).contiguous().view(-1)
    b = weights.b2 if weights.b2 is not None else rw
    _stage2_kernel[(plan.max_blocks * triton.cdiv(hidden, cfg.block_n), cfg.split_k)](
        h.data, w.data, w.scales, b, rw, out, plan.sorted_ids, plan.block_expert, plan.num_padded,
        plan.num_pairs, hidden, weights.inter, plan.max_blocks, w.n16, w.k64,
        h.data.stride(0), w.data.stride(0), w.scales.stride(0), b.stride(0), out.stride(0),
        TOPK=plan.topk, HAS_BIAS=weights.b2 is not None, FOLD=w.fold, SLOTS=cfg.combine is Combine.SLOTS,
        INTERP=interpreting(), SPLIT_K=cfg.split_k, BM=cfg.block_m, BN=cfg.block_n, BK=cfg.block_k,
        GROUP_M=cfg.group_m, num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )
