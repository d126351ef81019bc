"""The v2 stages (mma=wgmma): swapped-operand wgmma over the swizzled MXFP4 layout, activations carried in bf16.

Axis legend: T tokens, A topk, P = T*A pairs, E experts, H hidden, I inter, BM token rows (the MMA's N side),
BN weight rows (the MMA's M side), BK the reduced axis.

Each program computes acc^T [BN, BM] = W_tile [BN, BK] @ X_tile^T [BK, BM] over its K range:
  - the weight tile comes from `wtile.weight_tile` as wgmma's register A operand (16-byte loads that are their
    own fragments, a 13-op decode, no layout conversion), cp.async-pipelined with its scales;
  - the activation tile [BM, BK] bf16 is gathered by token (stage 1) or pair (stage 2) rows, cp.async-staged
    and read by wgmma from shared memory as its B operand; decode blocks (BM = 16) are wgmma's N = 16.
Stage 1 (here) holds a gate and an up tile (rows n and I + n of W13), the activation fused in the epilogue;
stage 2 (kernels/swmoe_stage2.py) multiplies by the routing weight and combines the top-k slots.

a8w4 / a4w4 carry their activations as bf16 values on the MXFP8 / MXFP4 grid (exact: `mx_tile.qdq_tile`), so
the three paths share one MMA; the quantization the path names happens on the input (kernels/quant.py) and in
stage 1's epilogue. Split-K: each stage-1 split stores fp32 gate / up partial sums and the last to arrive sums
them and applies the epilogue; stage 2 adds its partial sums straight into the combine buffer.

Where `finishes_atomic_in_kernel`, the atomic combine finishes in stage 2 too: its fp32 [T, H] sums start at
zero because stage 1 zeroed them (a strip per program, `zero`), and the last of a token's TOPK x SPLIT_K
contributions to an N column (one arrival counter per token and column) rounds that row slice to the bf16 output:
no memset and no cast kernel.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from mxmoe.config import TileConfig
from mxmoe.fp8_rebase import table_words
from mxmoe.kernels.common import (
    A4W4,
    A16W4,
    ACT_CODES,
    PATH_CODES,
    KernelInput,
    activation,
    bf16_grid,
    grid_swizzle,
    interpreting,
    k_loop_end,
    k_range,
    to_bf16_rne,
)
from mxmoe.kernels.mx_tile import qdq_tile
from mxmoe.kernels.quant import quantize_input
from mxmoe.kernels.rules import counters_needed, deferred_h_dtype, defers_rounding, e4m3_promote_steps, k_floor
from mxmoe.kernels.sync import enter, last_arrival, launch_options
from mxmoe.kernels.wtile import weight_tile
from mxmoe.kernels.wtile_e4m3 import e4m3_bytes_operand, e4m3_operand, weight_tile_e4m3

ZERO_STRIP = tl.constexpr(1024)  # fp32 elements a stage-1 program zeroes per step for the atomic combine


@triton.jit
def act_tile(x_ptr, rows, row_ok, k0, K, stride_x, E4M3: tl.constexpr, INTERP: tl.constexpr, BM: tl.constexpr,
             BK: tl.constexpr):
    """Rows `rows` x [k0, k0 + BK) of a bf16 activation, or e4m3 bytes with E4M3 (columns past K and rows not `row_ok`
    read as 0), as the MMA's B operand. The e4m3 bytes load through a float8e4nv pointer: as uint8 and bitcast, the
    tile went shared -> registers -> a second shared buffer every K step (sm_90 TTGIR: local_load, bitcast,
    local_alloc), and that single buffer made each wgmma wait for completion."""
    offs_k = k0 + tl.arange(0, BK)
    if E4M3 and not INTERP:
        x_ptr = x_ptr.to(tl.pointer_type(tl.float8e4nv))
    a = tl.load(x_ptr + rows[:, None] * stride_x + offs_k[None, :], mask=row_ok[:, None] & (offs_k < K)[None, :],
                other=0.0)
    if E4M3:
        a = e4m3_bytes_operand(a, INTERP)
    elif INTERP:
        a = a.to(tl.float32)  # the 3.6 interpreter's bf16 tl.dot is wrong; the values are exact in f32
    return a


@triton.jit
def tile_rows(sorted_ids_ptr, w_ptr, ws_ptr, expert, row0, n_rows, num_pairs, stride_we, stride_wse,
              BM: tl.constexpr):
    """BM pair ids of sorted_ids[row0:] (the sentinel from `n_rows` on), which are real, and the expert's w / ws."""
    offs = tl.arange(0, BM)
    pair = tl.load(sorted_ids_ptr + row0 + offs, mask=offs < n_rows, other=num_pairs)
    return pair, pair < num_pairs, w_ptr + expert * stride_we, ws_ptr + expert * stride_wse


@triton.jit
def tile_of(eo_ptr, expert, pid_m, BM: tl.constexpr, TAIL: tl.constexpr):
    """TAIL_WHY: with TAIL (the plan aligned to TAIL rows, `eo_ptr` its expert offsets) block pid_m of expert
    `expert` opens a tile when it is the first of a whole BM run (R = BM / TAIL blocks), the expert's only remainder
    block (a TAIL-row tile), or the first of a longer remainder (a BM tile, the rows past the expert masked); other
    blocks open none. Returns (kind, rows of the expert in the tile): kind 0 none, 1 a BM tile, 2 a TAIL tile.
    Why: an expert with n rows costs ceil(n / BM) BM tiles on a BM-aligned plan, and at 128 rows per expert
    (deepseek-v3 T = 4096) a third of the rows computed are padding (benchmarks/padding_bound.py); a TAIL tile
    decodes the same weights for fewer rows, so only a one-block remainder takes it. H100, 1aafe28 prototype
    (results/h100/2026-12-07_session16_1aafe28.log): stage 2 with TAIL 64 1.05-1.11x at T = 4096-32768 on
    deepseek-v3 / kimi-k2 / gpt-oss-120b; stage 1 0.93-1.07x (its CTAs cost nearly as much at fewer rows); every
    remainder block on its own TAIL tile was 0.65x at kimi-k2 T = 4096 (three 32-row CTAs per expert).
    TAIL 0: the plan is BM-aligned and every block is one BM tile (1, BM), with no load."""
    if TAIL == 0:
        kind, rows = 1, BM
    else:
        R: tl.constexpr = BM // TAIL
        first = tl.load(eo_ptr + expert) // TAIL
        nb = tl.load(eo_ptr + expert + 1) // TAIL - first
        local = pid_m - first
        whole = nb // R * R
        kind = local * 0
        rows = local * 0 + BM
        if local < whole:
            if local % R == 0:
                kind = 1
        elif nb - whole == 1:
            kind = 2
            rows = TAIL
        elif local == whole:
            kind = 1
            rows = (nb - whole) * TAIL
    return kind, rows


@triton.jit
def mma_wt(acc, w, a, INTERP: tl.constexpr):
    """acc^T [BN, BM] += w [BN, BK] @ a^T."""
    if INTERP:
        return tl.dot(w, tl.trans(a), acc, input_precision="ieee")
    else:
        return tl.dot(w, tl.trans(a), acc)


@triton.jit
def weight_mma(acc, a, w_e, ws_e, lut_ptr, n16_0, n16_end, k0, N16, K64, FOLD: tl.constexpr, E4M3: tl.constexpr,
               INTERP: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, NMAJ: tl.constexpr = False):
    """acc^T [BN, BM] += the weight tile of rows 16 n16_0 .. (rows from n16_end on read as 0) at K step k0 @ a^T, on
    bf16 carriers (`weight_tile`) or with E4M3 from the e4m3 layout (`weight_tile_e4m3`; FOLD: its affine tables,
    `lut_ptr` the table words otherwise).

    CHAINS_WHY: the e4m3 stages sum even and odd K steps into two accumulators, added once after the loop. The fp8
    wgmma accumulator keeps fewer bits than f32: all of K = 7168 in one chain put deepseek-v3-tp8 T=2048 at rms_rel
    1.15e-2 against the oracle (a8w4's limit 1e-2; H100, 41f31dc). Promoting each K step into f32 sums by hand
    (`acc += dot(w, a)`) made every wgmma wait for completion (sm_90 SASS: WARPGROUP.DEPBAR gsb0 0x0 after each,
    Triton 3.6 keeps a wgmma asynchronous only inside a loop-carried accumulator chain) and spilled M128N128 w8;
    two chains stay asynchronous (DEPBAR 0x7) and halve the steps each chain accumulates."""
    if E4M3:
        w = weight_tile_e4m3(w_e, ws_e, lut_ptr, n16_0, n16_end, k0 // 64, N16, K64, FOLD, INTERP, BN, BK)
        acc = mma_wt(acc, e4m3_operand(w, INTERP), a, INTERP)
    else:
        w = weight_tile(w_e, ws_e, n16_0, n16_end, k0 // 64, N16, K64, FOLD, INTERP, BN, BK, NMAJ)
        acc = mma_wt(acc, w, a, INTERP)
    return acc


@triton.jit
def gate_up_mma(acc_g, acc_u, a, w_e, ws_e, lut_ptr, n16_g, n16_u, k0, I, N16, K64, FOLD: tl.constexpr,
                E4M3: tl.constexpr, INTERP: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
                NMAJ: tl.constexpr = False):
    """One stage-1 K step: the gate and the up tiles (W13 rows n16_g / n16_u on) against `a`; NMAJ: layout.py."""
    acc_g = weight_mma(acc_g, a, w_e, ws_e, lut_ptr, n16_g, I // 16, k0, N16, K64, FOLD, E4M3, INTERP, BM, BN, BK, NMAJ)
    acc_u = weight_mma(acc_u, a, w_e, ws_e, lut_ptr, n16_u, 2 * I // 16, k0, N16, K64, FOLD, E4M3, INTERP, BM, BN,
                       BK, NMAJ)
    return acc_g, acc_u


@triton.jit
def carried_h(h, PATH: tl.constexpr, INTERP: tl.constexpr, R: tl.constexpr, C: tl.constexpr):
    """fp32 h [R, C] (after the activation) -> the bf16 carrier stage 2 reads: rounded to bf16, then on a8w4 / a4w4
    to the MXFP8 / MXFP4 grid (per 32 along C; the reference's contract: the MX paths quantize a16w4's bf16 h).
    One owner, so the direct layer's h (kernels/decode.py) and the deferred pass's are this one's bits."""
    h16 = to_bf16_rne(h, INTERP)
    if PATH != A16W4:
        h16 = qdq_tile(h16.to(tl.float32), PATH == A4W4, INTERP, R, C).to(tl.bfloat16)
    return h16


@triton.jit
def _epilogue1(acc_g, acc_u, rows, row_ok, offs_n, N, out_ptr, stride_op, PATH: tl.constexpr, ACT: tl.constexpr,
               INTERP: tl.constexpr, DEFER: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr):
    """Activation of the fp32 gate / up sums (bias added) of BM pair rows x BN columns (those below N stored), as
    bf16: with DEFER rounded to bf16 only (a separate pass rounds it to the path's grid in place), else
    `carried_h` (N is a multiple of 32, so an MX group is all in or all out)."""
    h = activation(acc_g, acc_u, ACT)
    if DEFER and out_ptr.dtype.element_ty == tl.float32:  # rules.deferred_h_dtype
        h = bf16_grid(h)
    elif DEFER:
        h = to_bf16_rne(h, INTERP)
    else:
        h = carried_h(h, PATH, INTERP, BM, BN)
    tl.store(out_ptr + rows[:, None] * stride_op + offs_n[None, :], h, mask=row_ok[:, None] & (offs_n < N)[None, :])


@triton.jit
def zero_strips(ptr, n):
    """ptr[0:n] = 0 (fp32), this program's strips of ZERO_STRIP, strided over the whole grid."""
    pid = tl.program_id(1) * tl.num_programs(0) + tl.program_id(0)
    offs = tl.arange(0, ZERO_STRIP)
    for s0 in range(pid * ZERO_STRIP, n, tl.num_programs(0) * tl.num_programs(1) * ZERO_STRIP):
        tl.store(ptr + s0 + offs, tl.zeros([ZERO_STRIP], tl.float32), mask=s0 + offs < n)


@triton.jit
def _stage1_rows(
    x_ptr, w_ptr, ws_ptr, b_ptr, out_ptr, part_ptr, sorted_ids_ptr, cnt_ptr, lut_ptr, rs_ptr, ts_ptr, expert, row0,
    n_rows, pid_m, pid_n, num_n, num_pairs, H, I, N16, K64, stride_xt, stride_we, stride_wse, stride_be, stride_op,
    stride_ps, stride_pp, stride_rse,
    TOPK: tl.constexpr, PATH: tl.constexpr, ACT: tl.constexpr, HAS_BIAS: tl.constexpr, FOLD: tl.constexpr,
    INTERP: tl.constexpr, DEFER: tl.constexpr, SPLIT_K: tl.constexpr, E4M3: tl.constexpr,
    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, PROMOTE: tl.constexpr, K_FLOOR: tl.constexpr,
):
    """One program's tile: BM pair rows of sorted_ids from row0 x BN columns, the first `n_rows` of them expert
    `expert`'s (the rest read as the sentinel: masked)."""
    pair, row_ok, w_e, ws_e = tile_rows(sorted_ids_ptr, w_ptr, ws_ptr, expert, row0, n_rows, num_pairs, stride_we,
                                        stride_wse, BM)
    token = (pair // TOPK).to(tl.int64)
    pid_k = tl.program_id(1)
    n16_g = pid_n * (BN // 16)
    n16_u = (I + pid_n * BN) // 16  # I is a multiple of 16 (the wrapper checks)
    k_first, k_len = k_range(pid_k, H, SPLIT_K, BK)
    acc_g = tl.zeros([BN, BM], dtype=tl.float32)
    acc_u = tl.zeros([BN, BM], dtype=tl.float32)
    if E4M3:  # the e4m3 forms' K bound: a split's second step may pass its range: masked, not the next split's
        k_end = tl.minimum(k_first + k_len, H)
        k64_end = tl.cdiv(k_end, 64)
    k_top = k_loop_end(k_len, BK, K_FLOOR)
    if E4M3 and PROMOTE > 0:  # one fp8 chain per chunk of PROMOTE K steps, added into f32 (rules.E4M3_PROMOTE_STEPS)
        for kc in range(0, k_top, PROMOTE * BK):
            c_g = tl.zeros([BN, BM], dtype=tl.float32)
            c_u = tl.zeros([BN, BM], dtype=tl.float32)
            for kk in range(kc, k_loop_end(tl.minimum(kc + PROMOTE * BK, k_top), kc + BK, K_FLOOR), BK):
                a = act_tile(x_ptr, token, row_ok, k_first + kk, k_end, stride_xt, E4M3, INTERP, BM, BK)
                c_g, c_u = gate_up_mma(c_g, c_u, a, w_e, ws_e, lut_ptr, n16_g, n16_u, k_first + kk, I, N16, k64_end,
                                       FOLD, E4M3, INTERP, BM, BN, BK)
            acc_g += c_g
            acc_u += c_u
    elif E4M3:  # two accumulator chains, even and odd K steps (weight_mma: CHAINS_WHY)
        acc_g2 = tl.zeros([BN, BM], dtype=tl.float32)
        acc_u2 = tl.zeros([BN, BM], dtype=tl.float32)
        for kk in range(0, k_top, 2 * BK):
            k0 = k_first + kk
            a = act_tile(x_ptr, token, row_ok, k0, k_end, stride_xt, E4M3, INTERP, BM, BK)
            acc_g, acc_u = gate_up_mma(acc_g, acc_u, a, w_e, ws_e, lut_ptr, n16_g, n16_u, k0, I, N16, k64_end, FOLD,
                                       E4M3, INTERP, BM, BN, BK)
            a = act_tile(x_ptr, token, row_ok, k0 + BK, k_end, stride_xt, E4M3, INTERP, BM, BK)
            acc_g2, acc_u2 = gate_up_mma(acc_g2, acc_u2, a, w_e, ws_e, lut_ptr, n16_g, n16_u, k0 + BK, I, N16,
                                         k64_end, FOLD, E4M3, INTERP, BM, BN, BK)
        acc_g += acc_g2
        acc_u += acc_u2
    else:
        for kk in range(0, k_top, BK):
            k0 = k_first + kk
            a = act_tile(x_ptr, token, row_ok, k0, H, stride_xt, E4M3, INTERP, BM, BK)
            acc_g, acc_u = gate_up_mma(acc_g, acc_u, a, w_e, ws_e, lut_ptr, n16_g, n16_u, k0, I, N16, K64, FOLD,
                                       E4M3, INTERP, BM, BN, BK)
    offs_n = pid_n * BN + tl.arange(0, BN)
    n_ok = offs_n < I
    if E4M3:  # the weights' row scales (gate, up), then the tokens' scales
        ts = tl.load(ts_ptr + token, mask=row_ok, other=0.0)[None, :]
        rs_e = rs_ptr + expert * stride_rse
        acc_g = acc_g * tl.load(rs_e + offs_n, mask=n_ok, other=0.0)[:, None] * ts
        acc_u = acc_u * tl.load(rs_e + I + offs_n, mask=n_ok, other=0.0)[:, None] * ts
    acc_g = tl.trans(acc_g)
    acc_u = tl.trans(acc_u)
    if HAS_BIAS and (SPLIT_K == 1 or pid_k == 0):  # split-K: split 0 carries the bias
        acc_g += tl.load(b_ptr + expert * stride_be + offs_n, mask=n_ok, other=0.0)[None, :]
        acc_u += tl.load(b_ptr + expert * stride_be + I + offs_n, mask=n_ok, other=0.0)[None, :]
    rows = pair.to(tl.int64)
    if SPLIT_K == 1:
        _epilogue1(acc_g, acc_u, rows, row_ok, offs_n, I, out_ptr, stride_op, PATH, ACT, INTERP, DEFER, BM, BN)
    else:  # each split stores its partial sums; the last of the tile's splits to arrive sums them in split order
        part = part_ptr + rows[:, None] * stride_pp + offs_n[None, :]
        mask = row_ok[:, None] & n_ok[None, :]
        tl.store(part + pid_k * stride_ps, acc_g, mask=mask)
        tl.store(part + pid_k * stride_ps + I, acc_u, mask=mask)
        if last_arrival(cnt_ptr + pid_m * num_n + pid_n, SPLIT_K):
            acc_g = tl.load(part, mask=mask, other=0.0, cache_modifier=".cg")
            acc_u = tl.load(part + I, mask=mask, other=0.0, cache_modifier=".cg")
            for s in range(1, SPLIT_K):
                acc_g += tl.load(part + s * stride_ps, mask=mask, other=0.0, cache_modifier=".cg")
                acc_u += tl.load(part + s * stride_ps + I, mask=mask, other=0.0, cache_modifier=".cg")
            _epilogue1(acc_g, acc_u, rows, row_ok, offs_n, I, out_ptr, stride_op, PATH, ACT, INTERP, DEFER, BM, BN)


@triton.jit
def _stage1_kernel(
    x_ptr, w_ptr, ws_ptr, b_ptr, out_ptr, part_ptr, sorted_ids_ptr, block_expert_ptr, num_padded_ptr,
    cnt_ptr, zero_ptr, lut_ptr, rs_ptr, ts_ptr, eo_ptr, num_pairs, H, I, max_blocks, N16, K64, zero_n,
    stride_xt, stride_we, stride_wse, stride_be, stride_op, stride_ps, stride_pp, stride_rse,
    TOPK: tl.constexpr, PATH: tl.constexpr, ACT: tl.constexpr, HAS_BIAS: tl.constexpr, FOLD: tl.constexpr,
    INTERP: tl.constexpr, DEFER: tl.constexpr, SPLIT_K: tl.constexpr, ZERO: tl.constexpr, E4M3: tl.constexpr,
    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, GROUP_M: tl.constexpr, TAIL: tl.constexpr,
    PROMOTE: tl.constexpr, K_FLOOR: tl.constexpr,
):
    """E4M3: x is e4m3 bytes with per-token scales `ts_ptr`, w / ws the e4m3 layout's codes and dcodes (FOLD its
    affine tables, `lut_ptr` the table words otherwise), `rs_ptr` its per-row scales; both scales multiply the
    sums before the bias (exact: powers of two); even and odd K steps sum in two chains (`weight_mma`: CHAINS_WHY).
    TAIL (0: off): the plan is aligned to TAIL rows, `eo_ptr` its expert offsets, and the tiles are `tile_of`'s."""
    enter(INTERP)
    if ZERO:  # stage 2's atomic sums (every program, the ones without a block too)
        zero_strips(zero_ptr, zero_n)
    num_n = tl.cdiv(I, BN)
    pid_m, pid_n = grid_swizzle(tl.program_id(0), max_blocks, num_n, GROUP_M)
    G: tl.constexpr = BM if TAIL == 0 else TAIL
    if pid_m * G >= tl.load(num_padded_ptr):
        return
    expert = tl.load(block_expert_ptr + pid_m).to(tl.int64)
    kind, rows = tile_of(eo_ptr, expert, pid_m, BM, TAIL)
    if kind == 1:
        _stage1_rows(x_ptr, w_ptr, ws_ptr, b_ptr, out_ptr, part_ptr, sorted_ids_ptr, cnt_ptr, lut_ptr, rs_ptr, ts_ptr,
                     expert, pid_m * G, rows, pid_m, pid_n, num_n, num_pairs, H, I, N16, K64, stride_xt, stride_we,
                     stride_wse, stride_be, stride_op, stride_ps, stride_pp, stride_rse, TOPK, PATH, ACT, HAS_BIAS,
                     FOLD, INTERP, DEFER, SPLIT_K, E4M3, BM, BN, BK, PROMOTE, K_FLOOR)
    if TAIL > 0:  # noqa: SIM102 -- TAIL is a constexpr (no TAIL-row tile is built without it), kind a runtime value
        if kind == 2:
            _stage1_rows(x_ptr, w_ptr, ws_ptr, b_ptr, out_ptr, part_ptr, sorted_ids_ptr, cnt_ptr, lut_ptr, rs_ptr,
                         ts_ptr, expert, pid_m * TAIL, TAIL, pid_m, pid_n, num_n, num_pairs, H, I, N16, K64,
                         stride_xt, stride_we, stride_wse, stride_be, stride_op, stride_ps, stride_pp, stride_rse,
                         TOPK, PATH, ACT, HAS_BIAS, FOLD, INTERP, DEFER, SPLIT_K, E4M3, TAIL, BN, BK, PROMOTE,
                         K_FLOOR)


def zeros_or(counters: torch.Tensor | None, n: int, dummy: torch.Tensor) -> torch.Tensor:
    """`counters` (zeros from the align kernel, or the ones the direct stage 1 zeroes) when given, else a zeroed
    allocation of n on `dummy`'s device; when the launch takes no counters (n = 0), `dummy` itself as the pointer
    (a plan tensor), so a prefill call allocates and fills nothing."""
    if counters is not None:
        if counters.numel() < n or counters.dtype != torch.int32:
            raise ValueError(f"counters: need {n} int32 zeros, got {counters.numel()} {counters.dtype}")
        return counters
    if n == 0:
        return dummy
    return torch.zeros(n, dtype=torch.int32, device=dummy.device)


@functools.lru_cache(maxsize=8)
def _table_words_on(device: torch.device) -> torch.Tensor:
    """The e4m3 decode's table words on `device`, built once (a launch inside a CUDA graph copies nothing)."""
    return table_words(device)


def weight_args(w, x: KernelInput, e4m3: bool, dummy: torch.Tensor) -> tuple:
    """What a v2 stage's launch takes of its weight layout `w` beside the values: (scales, FOLD, table words, row
    scales, input scales); for the bf16 layout its scales, `fold` and `dummy` for the three unread pointers, for
    the e4m3 layout its dcodes, `affine`, the table words (read unless affine), its and the input's row scales."""
    if not e4m3:
        return w.scales, w.fold, dummy, dummy, dummy
    return w.dcode, w.affine, dummy if w.affine else _table_words_on(w.data.device), w.row_scale, x.scales


def stage1_wgmma(x: KernelInput, weights, plan, cfg: TileConfig, *, out: KernelInput | None = None,
                 poison: bool = False, counters: torch.Tensor | None = None,
                 zero: torch.Tensor | None = None) -> KernelInput:
    """Stage 1 on the v2 kernels; `x` is bf16 (on the path's grid). Returns h bf16 [P, I] on the path's grid.

    Split-K partial sums go to an fp32 [split_k, P, 2I] scratch (every row a live tile covers is written, so it is
    never zeroed); `counters` are `counters_needed(cfg, 1, I, H, plan.max_blocks, T)` int32 zeros, allocated here if
    not given. Where `defers_rounding`, the kernel writes h as bf16 (`rules.deferred_h_dtype`: an e4m3 stage fp32
    on the bf16 grid, to a scratch) and `quantize_input` rounds it to the path's grid (in place).
    `zero`, a contiguous fp32 tensor, is zeroed by the kernel's programs (stage 2's atomic sums, `moe`).
    """
    e4m3 = cfg.mma.e4m3
    w = weights.w13_e4m3 if e4m3 else weights.w13_sw
    i, h = weights.inter, weights.hidden
    pairs = plan.num_pairs
    dev = x.data.device
    if out is None:
        out = KernelInput(torch.empty(pairs, i, dtype=torch.bfloat16, device=dev), None, x.path)
        if poison:
            out.data.fill_(float("nan"))
    if zero is not None and not (zero.dtype == torch.float32 and zero.is_contiguous()):
        raise ValueError(f"zero: need a contiguous fp32 tensor, got {zero.dtype}")
    if plan.max_blocks == 0:
        if zero is not None:
            zero.zero_()
        return out
    defer = defers_rounding(x.path, cfg)
    dst = out.data  # where the kernel writes h
    if defer and deferred_h_dtype(cfg) is torch.float32:
        dst = torch.empty(pairs, i, dtype=torch.float32, device=dev)
        if poison:
            dst.fill_(float("nan"))
    num_n = triton.cdiv(i, cfg.block_n)
    split = cfg.split_k > 1
    part = torch.empty(cfg.split_k, pairs, 2 * i, dtype=torch.float32, device=dev) if split else dst[None]
    cnt = zeros_or(counters, counters_needed(cfg, 1, i, h, plan.max_blocks, 0), plan.num_padded)
    ws, fold, lut, rs, ts = weight_args(w, x, e4m3, x.data)
    b = weights.b13 if weights.b13 is not None else ws  # dummy pointer when HAS_BIAS is off
    _stage1_kernel[(plan.max_blocks * num_n, cfg.split_k)](
        x.data, w.data, ws, b, dst, part, plan.sorted_ids, plan.block_expert, plan.num_padded,
        cnt, dst if zero is None else zero, lut, rs, ts, plan.expert_offsets, pairs, h, i, plan.max_blocks, w.n16,
        w.k64, 0 if zero is None else zero.numel(),
        x.data.stride(0), w.data.stride(0), ws.stride(0), b.stride(0), dst.stride(0), part.stride(0),
        part.stride(1), rs.stride(0),
        TOPK=plan.topk, PATH=PATH_CODES[x.path], ACT=ACT_CODES[weights.activation], HAS_BIAS=weights.b13 is not None,
        FOLD=fold, INTERP=interpreting(), DEFER=defer, SPLIT_K=cfg.split_k,
        ZERO=zero is not None, E4M3=e4m3, BM=cfg.block_m, BN=cfg.block_n, BK=cfg.block_k, GROUP_M=cfg.group_m,
        TAIL=cfg.tail_m, PROMOTE=e4m3_promote_steps(cfg), K_FLOOR=k_floor(cfg), num_warps=cfg.num_warps,
        num_stages=cfg.num_stages, **launch_options(),
    )
    if defer:  # bf16 h rounded to the path's grid in place
        quantize_input(dst, x.path, bf16=True, out=out)
    return out
