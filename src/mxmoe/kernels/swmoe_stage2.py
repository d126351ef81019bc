"""Stage 2 of the v2 kernels (mma=wgmma): h x W2 over the swizzled MXFP4 layout, the routing weight, the top-k
combine. kernels/swmoe.py has the shared pieces (the weight and activation tiles, the swapped MMA) and stage 1.

Axis legend: T tokens, A topk, P = T*A pairs, E experts, H hidden (this stage's N), I inter (its K), BM pair rows
(the MMA's N side), BN weight rows (the MMA's M side), BK the reduced axis.

Each program computes acc^T [BN, BM] = W2_tile [BN, BK] @ h_tile^T over its K range (the pairs of one expert
block, gathered by pair id), adds the bias (split 0), multiplies by the routing weight and combines:
  - atomic: adds into the token's fp32 row of [T, H]; where `finishes_atomic_in_kernel` the last of a token's
    TOPK x SPLIT_K arrivals rounds the row slice to bf16 (stage 1 zeroed the sums), else a cast follows;
  - slots: stores the slot rows of its split; the last CTA of each N column sums them (combine.combine_slots);
  - rows: stores the pair's row in bf16; combine.combine_rows sums each token's rows in a second kernel.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from mxmoe.config import Combine, TileConfig
from mxmoe.kernels.combine import combine_rows, combine_slots
from mxmoe.kernels.common import KernelInput, grid_swizzle, interpreting, k_loop_end, k_range, to_bf16_rne
from mxmoe.kernels.rules import (
    counters_needed,
    e4m3_promote_steps,
    finishes_atomic_in_kernel,
    k_floor,
    stage2_drains,
)
from mxmoe.kernels.swmoe import act_tile, tile_of, tile_rows, weight_args, weight_mma, zeros_or
from mxmoe.kernels.sync import drain_wgmma, enter, last_arrival, launch_options


@triton.jit
def weighted_rows(acc, b_ptr, rw, offs_n, n_ok, pid_k, HAS_BIAS: tl.constexpr):
    """Stage 2's acc^T [BN, BM] -> [BM, BN] rows plus the bias at `b_ptr` (split 0 carries it), times each row's
    routing weight `rw` [BM]."""
    acc = tl.trans(acc)
    if HAS_BIAS:  # noqa: SIM102 -- HAS_BIAS is a constexpr, pid_k a runtime value
        if pid_k == 0:
            acc += tl.load(b_ptr + offs_n, mask=n_ok, other=0.0)[None, :]
    return acc * rw[:, None]


@triton.jit
def _stage2_rows(
    h_ptr, w_ptr, ws_ptr, b_ptr, rw_ptr, out_ptr, y_ptr, cnt_ptr, sorted_ids_ptr, lut_ptr, rs_ptr, ts_ptr, expert,
    row0, n_rows, pid_n, num_n, num_live, num_pairs, T, H, I, N16, K64, stride_hp, stride_we, stride_wse, stride_be,
    stride_os, stride_or, stride_y, stride_rse,
    TOPK: tl.constexpr, HAS_BIAS: tl.constexpr, FOLD: tl.constexpr, SLOTS: tl.constexpr, ROWS: tl.constexpr,
    CAST: tl.constexpr, INTERP: tl.constexpr, E4M3: tl.constexpr, SPLIT_K: tl.constexpr, BM: tl.constexpr,
    BN: tl.constexpr, BK: tl.constexpr, PROMOTE: tl.constexpr, DRAIN: tl.constexpr, K_FLOOR: tl.constexpr,
):
    """One program's tile: BM pair rows of sorted_ids from row0 x BN columns, the first `n_rows` of them expert
    `expert`'s; `num_live` the live programs of an N column (the slots combine's arrival count)."""
    pair, row_ok, w_e, ws_e = tile_rows(sorted_ids_ptr, w_ptr, ws_ptr, expert, row0, n_rows, num_pairs, stride_we,
                                        stride_wse, BM)
    pid_k = tl.program_id(1)
    rows = pair.to(tl.int64)
    k_first, k_len = k_range(pid_k, I, SPLIT_K, BK)
    acc = tl.zeros([BN, BM], dtype=tl.float32)
    n16_0 = pid_n * (BN // 16)
    if E4M3:  # the e4m3 forms' K bound (as in stage 1)
        k_end = tl.minimum(k_first + k_len, I)
        k64_end = tl.cdiv(k_end, 64)
    k_top = k_loop_end(k_len, BK, K_FLOOR)
    if E4M3 and PROMOTE > 0:  # one fp8 chain per chunk of PROMOTE K steps, added into f32 (rules.E4M3_PROMOTE_STEPS)
        for kc in range(0, k_top, PROMOTE * BK):
            c = tl.zeros([BN, BM], dtype=tl.float32)
            for kk in range(kc, k_loop_end(tl.minimum(kc + PROMOTE * BK, k_top), kc + BK, K_FLOOR), BK):
                a = act_tile(h_ptr, rows, row_ok, k_first + kk, k_end, stride_hp, E4M3, INTERP, BM, BK)
                c = weight_mma(c, a, w_e, ws_e, lut_ptr, n16_0, N16, k_first + kk, N16, k64_end, FOLD, E4M3, INTERP,
                               BM, BN, BK)
            acc += c
    elif E4M3:  # two accumulator chains, even and odd K steps (swmoe.weight_mma: CHAINS_WHY)
        acc2 = tl.zeros([BN, BM], dtype=tl.float32)
        for kk in range(0, k_top, 2 * BK):
            k0 = k_first + kk
            a = act_tile(h_ptr, rows, row_ok, k0, k_end, stride_hp, E4M3, INTERP, BM, BK)
            acc = weight_mma(acc, a, w_e, ws_e, lut_ptr, n16_0, N16, k0, N16, k64_end, FOLD, E4M3, INTERP, BM, BN, BK)
            a = act_tile(h_ptr, rows, row_ok, k0 + BK, k_end, stride_hp, E4M3, INTERP, BM, BK)
            acc2 = weight_mma(acc2, a, w_e, ws_e, lut_ptr, n16_0, N16, k0 + BK, N16, k64_end, FOLD, E4M3, INTERP, BM,
                              BN, BK)
        acc += acc2
    else:
        for kk in range(0, k_top, BK):
            k0 = k_first + kk
            a = act_tile(h_ptr, rows, row_ok, k0, I, stride_hp, E4M3, INTERP, BM, BK)
            acc = weight_mma(acc, a, w_e, ws_e, lut_ptr, n16_0, N16, k0, N16, K64, FOLD, E4M3, INTERP, BM, BN, BK)
            if DRAIN:  # nothing in flight at the back edge (rules.STAGE2_DRAIN)
                drain_wgmma(INTERP)
    offs_n = pid_n * BN + tl.arange(0, BN)
    n_ok = offs_n < H
    if E4M3:  # W2's row scales, then the pairs' scales
        acc = (acc * tl.load(rs_ptr + expert * stride_rse + offs_n, mask=n_ok, other=0.0)[:, None]
               * tl.load(ts_ptr + rows, mask=row_ok, other=0.0)[None, :])
    acc = weighted_rows(acc, b_ptr + expert * stride_be, tl.load(rw_ptr + rows, mask=row_ok, other=0.0), offs_n, n_ok,
                        pid_k, HAS_BIAS)
    if ROWS:  # the pair's row in bf16 (unsplit); kernels/combine.py sums each token's rows
        tl.store(out_ptr + rows[:, None] * stride_or + offs_n[None, :], to_bf16_rne(acc, INTERP),
                 mask=row_ok[:, None] & n_ok[None, :])
    elif SLOTS:  # the slot rows of this split; the last CTA of the N column (live blocks x splits) combines them
        tl.store(out_ptr + pid_k * stride_os + rows[:, None] * stride_or + offs_n[None, :], acc,
                 mask=row_ok[:, None] & n_ok[None, :])
        if last_arrival(cnt_ptr + pid_n, num_live * SPLIT_K):
            combine_slots(out_ptr, y_ptr, T, H, offs_n, stride_os, stride_or, stride_y, TOPK, SPLIT_K, INTERP, BN)
    else:  # add into the token's fp32 row; with CAST the last of its TOPK x SPLIT_K arrivals here rounds it
        tok = rows // TOPK
        mask = row_ok[:, None] & n_ok[None, :]
        sums = out_ptr + tok[:, None] * stride_or + offs_n[None, :]
        tl.atomic_add(sums, acc, mask=mask, sem="relaxed")
        if CAST:
            tl.debug_barrier()  # every thread's adds, then each row's acq_rel arrival (kernels/sync.py)
            arrived = tl.atomic_add(cnt_ptr + tok * num_n + pid_n, 1, mask=row_ok, sem="acq_rel", scope="gpu")
            last = (row_ok & (arrived == TOPK * SPLIT_K - 1))[:, None] & mask
            tl.debug_barrier()  # the rows' acquires before any thread's loads
            acc = tl.load(sums, mask=last, other=0.0, cache_modifier=".cg")
            tl.store(y_ptr + tok[:, None] * stride_y + offs_n[None, :], to_bf16_rne(acc, INTERP), mask=last)


@triton.jit
def _stage2_kernel(
    h_ptr, w_ptr, ws_ptr, b_ptr, rw_ptr, out_ptr, y_ptr, cnt_ptr, sorted_ids_ptr, block_expert_ptr, num_padded_ptr,
    lut_ptr, rs_ptr, ts_ptr, eo_ptr, num_pairs, T, H, I, max_blocks, N16, K64,
    stride_hp, stride_we, stride_wse, stride_be, stride_os, stride_or, stride_y, stride_rse,
    TOPK: tl.constexpr, HAS_BIAS: tl.constexpr, FOLD: tl.constexpr, SLOTS: tl.constexpr, ROWS: tl.constexpr,
    CAST: tl.constexpr, INTERP: tl.constexpr, E4M3: tl.constexpr,
    SPLIT_K: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, GROUP_M: tl.constexpr,
    TAIL: tl.constexpr, PROMOTE: tl.constexpr, DRAIN: tl.constexpr, K_FLOOR: tl.constexpr,
):
    """E4M3 as in stage 1 (swmoe._stage1_kernel): h as e4m3 bytes with per-pair scales `ts_ptr`, W2 in the e4m3
    layout with per-row scales `rs_ptr`, even and odd K steps in two chains (swmoe.weight_mma: CHAINS_WHY),
    both scales before the bias. TAIL as in stage 1 (swmoe.tile_of; never with SLOTS, whose arrival count is the
    plan's BM blocks)."""
    enter(INTERP)
    num_n = tl.cdiv(H, BN)
    pid_m, pid_n = grid_swizzle(tl.program_id(0), max_blocks, num_n, GROUP_M)
    G: tl.constexpr = BM if TAIL == 0 else TAIL
    num_padded = tl.load(num_padded_ptr)
    if pid_m * G >= num_padded:
        return
    expert = tl.load(block_expert_ptr + pid_m).to(tl.int64)
    kind, rows = tile_of(eo_ptr, expert, pid_m, BM, TAIL)
    if kind == 1:
        _stage2_rows(h_ptr, w_ptr, ws_ptr, b_ptr, rw_ptr, out_ptr, y_ptr, cnt_ptr, sorted_ids_ptr, lut_ptr, rs_ptr,
                     ts_ptr, expert, pid_m * G, rows, pid_n, num_n, num_padded // BM, num_pairs, T, H, I, N16, K64,
                     stride_hp, stride_we, stride_wse, stride_be, stride_os, stride_or, stride_y, stride_rse, TOPK,
                     HAS_BIAS, FOLD, SLOTS, ROWS, CAST, INTERP, E4M3, SPLIT_K, BM, BN, BK, PROMOTE, DRAIN, K_FLOOR)
    if TAIL > 0:  # noqa: SIM102 -- TAIL is a constexpr (no TAIL-row tile is built without it), kind a runtime value
        if kind == 2:
            _stage2_rows(h_ptr, w_ptr, ws_ptr, b_ptr, rw_ptr, out_ptr, y_ptr, cnt_ptr, sorted_ids_ptr, lut_ptr, rs_ptr,
                         ts_ptr, expert, pid_m * TAIL, TAIL, pid_n, num_n, 0, num_pairs, T, H, I, N16, K64, stride_hp,
                         stride_we, stride_wse, stride_be, stride_os, stride_or, stride_y, stride_rse, TOPK, HAS_BIAS,
                         FOLD, SLOTS, ROWS, CAST, INTERP, E4M3, SPLIT_K, TAIL, BN, BK, PROMOTE, DRAIN, K_FLOOR)


def stage2_wgmma(h: KernelInput, weights, plan, topk_weights: torch.Tensor, cfg: TileConfig, num_tokens: int, *,
                 out: torch.Tensor | None = None, poison: bool = False, counters: torch.Tensor | None = None,
                 zeroed: bool = False) -> torch.Tensor:
    """Stage 2 on the v2 kernels; returns bf16 [T, H] (when the kernel writes it, NaN-filled first if `poison`).

    atomic: `out` (fp32 [T, H]) is zeroed here unless `zeroed` (stage 1 zeroed it: `moe`) and the kernel adds into
    it; where `finishes_atomic_in_kernel` the last arrival of each token and N column rounds the row slice into the
    result, else one cast after the launch. slots: `out` (fp32 [split_k, P, H], poisoned with NaN when `poison`)
    takes every slot row of every split and the last CTA of each N column sums them into the result. rows: `out`
    (bf16 [P, H], poisoned likewise) takes every pair's row and `combine.combine_rows` sums them.
    `counters` are `counters_needed(cfg, 2, H, I, ...)` int32 zeros, allocated here if not given.
    """
    hidden, dev = weights.hidden, h.data.device
    slots, by_rows = cfg.combine is Combine.SLOTS, cfg.combine is Combine.ROWS
    shape = ((cfg.split_k, plan.num_pairs, hidden) if slots else (plan.num_pairs, hidden) if by_rows
             else (num_tokens, hidden))
    dtype = torch.bfloat16 if by_rows else torch.float32
    if out is None and (slots or by_rows):  # every row a live block covers is written: no fill unless poisoned
        out = torch.empty(shape, dtype=dtype, device=dev)
        if poison:
            out.fill_(float("nan"))
    elif out is None:
        out = torch.zeros(shape, dtype=dtype, device=dev)
    elif tuple(out.shape) != shape or out.dtype != dtype:
        raise ValueError(f"stage 2 ({cfg.combine.value}, split_k={cfg.split_k}): out must be {dtype} {shape}, "
                         f"got {out.dtype} {tuple(out.shape)}")
    elif not (slots or by_rows or zeroed):
        out.zero_()
    if plan.max_blocks == 0:
        return torch.zeros(num_tokens, hidden, dtype=torch.bfloat16, device=dev)
    cast = cfg.combine is Combine.ATOMIC and finishes_atomic_in_kernel(cfg, weights.inter)
    y = out  # the kernel writes no bf16 result: a dummy pointer, the cast follows the launch
    if slots or cast:
        y = torch.empty(num_tokens, hidden, dtype=torch.bfloat16, device=dev)
        if poison:
            y.fill_(float("nan"))
    e4m3 = cfg.mma.e4m3
    w = weights.w2_e4m3 if e4m3 else weights.w2_sw
    rw = topk_weights.to(torch.float32).contiguous().view(-1)
    ws, fold, lut, rs, ts = weight_args(w, h, e4m3, rw)
    b = weights.b2 if weights.b2 is not None else rw
    cnt = zeros_or(counters, counters_needed(cfg, 2, hidden, weights.inter, plan.max_blocks, num_tokens),
                   plan.num_padded)
    out3 = out if slots else out[None]
    _stage2_kernel[(plan.max_blocks * triton.cdiv(hidden, cfg.block_n), cfg.split_k)](
        h.data, w.data, ws, b, rw, out3, y, cnt, plan.sorted_ids, plan.block_expert, plan.num_padded,
        lut, rs, ts, plan.expert_offsets, plan.num_pairs, num_tokens, hidden, weights.inter, plan.max_blocks, w.n16,
        w.k64,
        h.data.stride(0), w.data.stride(0), ws.stride(0), b.stride(0), out3.stride(0), out3.stride(1),
        y.stride(0), rs.stride(0),
        TOPK=plan.topk, HAS_BIAS=weights.b2 is not None, FOLD=fold, SLOTS=slots,
        ROWS=by_rows, CAST=cast, INTERP=interpreting(), E4M3=e4m3, SPLIT_K=cfg.split_k, BM=cfg.block_m,
        BN=cfg.block_n, BK=cfg.block_k, GROUP_M=cfg.group_m, TAIL=cfg.tail_m,
        PROMOTE=e4m3_promote_steps(cfg), DRAIN=stage2_drains(cfg), K_FLOOR=k_floor(cfg), num_warps=cfg.num_warps,
        num_stages=cfg.num_stages, **launch_options(),
    )
    if by_rows:
        return combine_rows(out, plan.topk)
    return y if slots or cast else out.to(torch.bfloat16)
