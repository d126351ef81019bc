"""The direct decode layer: two kernels, no alignment, for a handful of (token, slot) pairs.

Axis legend: T tokens, A topk, P = T*A pairs, E experts, H hidden, I inter, S1 / S2 the stages' K splits, BM token
rows (the MMA's N side, one of them real), BN weight rows, BK the reduced axis.

Why (H100, deepseek-v3-tp8 T=1 at 8740084, kernel timeline of a CUDA-graph replay, L2 flushed): the sorted layer
was align 4.5 us, then stage 1 (which waited for it) ending at 19.6 us, then stage 2 10 us. At decode every pair
is its own BM-16 block anyway (top-k ids of a token are distinct), so the plan the align kernel sorts is known
without it: block p is pair p, its expert the caller's topk_ids[p]. The layer becomes
  - stage 1 (`direct_stage1`): program (p, n tile, split) reads expert ids[p] and token p // A itself and stores
    its fp32 gate / up partial sums of pair p into part [S1, P, 2I]: no epilogue, no arrival counters, no
    last-arrival tail. An MX path's input is rounded to its grid in the kernel (the same `qdq_tile` the input
    quantization kernel applies, per 32 along H), so a8w4 / a4w4 launch no quantization kernel either;
  - stage 2 (`direct_stage2`): program (p, n tile, split) loads the raw bytes of its first `PRE` weight tiles
    BEFORE its PDL wait (they depend only on the caller's ids: stage 1 waits before it lets stage 2 launch, so
    the ids are complete), so stage 2's weight stream overlaps stage 1; after the wait it sums stage 1's splits in
    split order, adds the bias, applies the activation (and the path's rounding) to get h, exactly as stage 1's
    epilogue did (bit for bit the sorted layer's h), then the MMA, the routing weight, and the slots combine.
Stage 1 zeroes stage 2's arrival counters (one per N column). Ids out of range (validate=False) give an unspecified
result but no access out of bounds: such a pair reads expert 0 and stores nothing.
The layer plan takes it where `rules.runs_direct` (up to 32 pairs, inter at most 512: there it beat the sorted
layer by 1.1-1.3x on the H100, and lost at gpt-oss's inter 2880; rules.py has the numbers). GPU twins in
tests/kernels/test_direct.py (65 passed on the H100 at 9ffc544 with test_moe_gpu's tp8 and graph tests).

Where the time goes (H100, deepseek-v4-tp8 T=1, 14d8168, results/h100/2026-12-07_session17a_14d8168.log): in a
graph replay stage 1 runs 0-19.1 us and stage 2 0.9-27.6 us (layer 31 us with the launch); ncu, each alone: stage
1 15.8 us, 392 CTAs of 8 K steps, 110 registers, DRAM 1.79 TB/s (54%), 0.56 issues a cycle per scheduler; stage
2 13.4 us, 161 registers, so one of its CTAs fits an SM beside three of stage 1's and two thirds of its CTAs
fetch their weights after stage 1 ends. Tried and dropped: each stage-1 CTA asking L2 for its share of the
expert's bytes as it starts (`cp.async.bulk.prefetch.L2`: W13, W2 for stage 2, or both) lost at every direct
point, 0.77-0.93x (0d72a8a, results/h100/2026-12-07_session17b_0d72a8a.log); so did all four of its stage-2 K
steps before the wait (rules.DIRECT_PRELOAD_STEPS). Stage 1's K step at that point is 468 SASS instructions a
thread (sm_90 CPU compile, 9b7d258): the decode of 16 words about 300 (64 HMUL2, 96 LOP3, 32 SHF, most of 67
IMAD), the addresses and bound predicates of its 10 cp.async about 70, 16 HGMMA with 32 warpgroup arrive / wait
(up to 7 in flight, not serialized). Those instructions are not what bounds it: with the decode replaced by four
moves (a ceiling run with wrong values, 896c613, results/h100/2026-12-07_session22a_896c613.log) the layer got
slower, deepseek-v4-tp8 T=1 30.5 -> 33.2 us and deepseek-v3-tp8 T=1 22.9 -> 26.0; ncu's stalls a issued
instruction of stage 1 (same log): wait 0.69, long_scoreboard 0.65, not_selected 0.65, math_pipe_throttle 0.34,
dispatch 0.26, gmma 0.23, barrier 0.19 at 2.8 warps a scheduler: latency with few warps, not issue. The MMA's
width does count: deepseek-v4-tp8 T=1 on the sorted layer with stage 1 at BLOCK_M 32 (wgmma N 32) ran 43.1 us
(3094e39, results/h100/2026-12-07_scan_decode_tiles_3094e39.csv), the sorted layer at 16 37.3 (9ffc544,
rules.py). A narrower one is not at hand: at BLOCK_M 8 Triton 3.6 lowers the dot to mma.sync (HMMA.16816) and
stages the decoded tile through shared memory to get it into that operand layout (sm_90 CPU compile at 7d4d940:
16 STSM and 15 local loads a K step, 648 instructions against 468). Its TTGIR says why: the decoded tile comes out
in the mma fragment order this layout places for wgmma (lane l holding K = 2 (l mod 4) + {0, 1, 8, 9} of each k16),
and the MMAv2 dot takes its A operand as `dot_op<opIdx = 0, kWidth = 8>`, so Triton converts through a
local_alloc / local_load. The wgmma dots take `kWidth = 2`, this layout's order, so BLOCK_M 8 (mma.sync m16n8k16,
half the MMA width of today's N 16) needs either Triton taking kWidth 2 for that dot or a second weight layout;
Gluon states the layout and takes it without a conversion (benchmarks/gluon_probe.py, sm_90 CPU compile).
Open: twice the warps bought nothing (rules.py, "Also dropped") and an L2 prefetch of W2 during stage 1 slowed the
layer by about W2's transfer time (rules.py's docstring), as if DRAM were saturated at stage 1's 1.7 TB/s; whether
that is the layout's access pattern (per K step four 2 KB runs at a 32 KB stride a program) is what
benchmarks/decode_pattern.py measures (the same bytes in stage 1's order, in one run a program and in an N-major
block order; not yet run on a GPU). The lever if it is: the opt-in N-major copies of W13 and W2
(`MoEWeights.with_decode_layout`, kernels/layout.py), which the stages read while rules.DIRECT1_N_MAJOR /
DIRECT2_N_MAJOR (stage 2's program then reads its whole [BN, K] tile as one contiguous run).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from mxmoe.config import TileConfig
from mxmoe.kernels import rules
from mxmoe.kernels.combine import combine_slots
from mxmoe.kernels.common import (
    A4W4,
    A16W4,
    ACT_CODES,
    PATH_CODES,
    KernelInput,
    activation,
    interpreting,
    k_range,
)
from mxmoe.kernels.mx_tile import qdq_tile
from mxmoe.kernels.rules import direct_preload, direct_register_cap
from mxmoe.kernels.swmoe import (
    act_tile,
    carried_h,
    gate_up_mma,
    mma_wt,
    zero_strips,
    zeros_or,
)
from mxmoe.kernels.swmoe_stage2 import weighted_rows
from mxmoe.kernels.sync import enter_first_wait, last_arrival, launch_options
from mxmoe.kernels.wtile import decode_tile, tile_bytes, weight_tile
from mxmoe.routing import _check_id_range, _check_ids


class DirectPlan(NamedTuple):
    """The direct layer's routing: the caller's ids [T, A], contiguous, so the kernels read pair p = t*A + a at
    element p (not flattened: a `.view(-1)` costs about 1 us of host time a call), and stage 2's arrival counters
    (int32 [n], zeroed by stage 1; None: stage 2 allocates zeroed ones, for a stage replayed alone). A NamedTuple,
    immutable like a frozen dataclass at half its construction cost (0.24 against 0.53 us, one per moe() call)."""

    ids: torch.Tensor
    topk: int
    experts: int
    counters: torch.Tensor | None

    @property
    def num_pairs(self) -> int:
        return self.ids.numel()


def direct_plan(topk_ids: torch.Tensor, experts: int, counters: int, *, validate: bool = False) -> DirectPlan:
    """The plan of `topk_ids` [T, A]; `counters` int32 of stage 2 (uninitialized: stage 1 zeroes them)."""
    _check_ids(topk_ids)
    if validate:
        _check_id_range(topk_ids, experts)
    cnt = torch.empty(counters, dtype=torch.int32, device=topk_ids.device) if counters else None
    return DirectPlan(topk_ids.contiguous(), topk_ids.shape[1], experts, cnt)


@triton.jit
def _pair_expert(ids_ptr, pair, E):
    """Pair `pair`'s expert (0 when its id is out of range) and whether the id is in range; read from L2 (`.cg`):
    stage 2 reads it before its wait, where no L1 line of an earlier call must answer."""
    eid = tl.load(ids_ptr + pair, cache_modifier=".cg").to(tl.int64)
    valid = (eid >= 0) & (eid < E)
    return tl.where(valid, eid, 0), valid


@triton.jit
def _x_row(x_ptr, token, k0, H, stride_xt, BK: tl.constexpr):
    """The token's input row [1, BK] at [k0, k0 + BK) (columns from H on read as 0)."""
    offs_k = k0 + tl.arange(0, BK)
    return tl.load(x_ptr + token.to(tl.int64) * stride_xt + offs_k[None, :], mask=(offs_k < H)[None, :], other=0.0)


@triton.jit
def _row_operand(x, row_ok, PATH: tl.constexpr, INTERP: tl.constexpr, BM: tl.constexpr, BK: tl.constexpr):
    """An MX path's stage-1 B operand [BM, BK] from the input row `x` [1, BK]: on the path's grid (as the
    quantization kernel rounds it), in the rows `row_ok` lets through. Rounded on the one row and broadcast: on the
    [BM, BK] tile 15 masked rows were rounded too (sm_90 SASS of the deepseek-v3-tp8 T=1 a8w4 K step, CPU compile
    at c249f98: 640 -> 449 instructions; H100 deepseek-v3-tp8 T=1 a8w4 layer 35.0 -> 33.2 us at 5bc3221, together
    with stage 2's one-row h and the fold change, results/h100/2026-12-06_direct_levers_ab_5bc3221.log). a16w4
    keeps the staged tile: the row measured 24.0 us against 23.3 (9ffc544), its load feeding no dot, so not
    pipelined. The MX paths keep the row although it compiles without a16w4's pipelined wgmma chain (kimi-k2-tp8
    T=1, sm_90 CPU compile: 4 warp_group_dots against 33): rounding the input in the quantization kernel first so
    stage 1 takes a16w4's staged tile lost on the H100 (325bc4e, whole layer us, row / kernel first:
    deepseek-v3-tp8 T=1 a8w4 24.2 / 26.0, kimi-k2-tp8 T=1 a4w4 23.4 / 24.9, deepseek-v4-tp8 T=2 a8w4 53.2 / 57.3,
    T=1 a4w4 32.7 / 34.7; results/h100/2026-12-07_direct_mx_quant_325bc4e.csv), its extra kernel's latency
    more than the pipelining bought. So did each CTA rounding its split's K range of the row into a scratch row
    before a16w4's main loop (sm_90: 33 dots, 109 registers; H100 at 0f08838, row / scratch first, us:
    deepseek-v3-tp8 T=1 a8w4 24.7 / 25.4, a4w4 24.6 / 25.0, kimi-k2-tp8 T=1 a8w4 23.7 / 24.3, a4w4 23.6 / 24.4,
    deepseek-v4-tp8 T=1 a8w4 32.6 / 34.2, T=2 a4w4 54.2 / 58.5; results/h100/2026-12-07_row_prologue_ab_0f08838.csv):
    the prologue's load, rounding, store and barrier come before the first weight load is issued."""
    a = qdq_tile(x.to(tl.float32), PATH == A4W4, INTERP, 1, BK)
    if not INTERP:
        a = a.to(tl.bfloat16)
    return tl.where(row_ok[:, None], a, tl.zeros([BM, BK], a.dtype))


@triton.jit
def _direct1_kernel(
    x_ptr, w_ptr, ws_ptr, ids_ptr, part_ptr, cnt_ptr, E, H, I, N16, K64, n_cnt,
    stride_xt, stride_we, stride_wse, stride_ps, stride_pp,
    TOPK: tl.constexpr, PATH: tl.constexpr, FOLD: tl.constexpr, INTERP: tl.constexpr, ZERO: tl.constexpr,
    SPLIT_K: tl.constexpr, NMAJ: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
):
    """A program computes BN gate rows and their BN up rows in two accumulator chains (one chain over BN stacked
    rows was tried and dropped: rules.py, "Also dropped")."""
    enter_first_wait(INTERP)
    if ZERO:  # stage 2's arrival counters, as fp32 zero bits
        zero_strips(cnt_ptr, n_cnt)
    num_n = tl.cdiv(I, BN)
    pair = tl.program_id(0) // num_n
    pid_n = tl.program_id(0) % num_n
    pid_k = tl.program_id(1)
    expert, valid = _pair_expert(ids_ptr, pair, E)
    row_ok = (tl.arange(0, BM) == 0) & valid
    token = tl.full([BM], 0, tl.int64) + pair // TOPK
    w_e = w_ptr + expert * stride_we
    ws_e = ws_ptr + expert * stride_wse
    n16_g = pid_n * (BN // 16)
    n16_u = (I + pid_n * BN) // 16
    k_first, k_len = k_range(pid_k, H, SPLIT_K, BK)
    acc_g = tl.zeros([BN, BM], dtype=tl.float32)
    acc_u = tl.zeros([BN, BM], dtype=tl.float32)
    ROW: tl.constexpr = PATH != A16W4  # an MX path rounds the token's row (_row_operand says why a16w4 does not)
    k_end = tl.minimum(k_first + k_len, H)
    if ROW:  # loaded one K step ahead: a load that feeds no dot is not pipelined
        x_next = _x_row(x_ptr, pair // TOPK, k_first, k_end, stride_xt, BK)
    for kk in range(0, k_len, BK):
        k0 = k_first + kk
        if ROW:
            a = _row_operand(x_next, row_ok, PATH, INTERP, BM, BK)
            x_next = _x_row(x_ptr, pair // TOPK, k0 + BK, k_end, stride_xt, BK)
        else:
            a = act_tile(x_ptr, token, row_ok, k0, H, stride_xt, False, INTERP, BM, BK)
        acc_g, acc_u = gate_up_mma(acc_g, acc_u, a, w_e, ws_e, w_e, n16_g, n16_u, k0, I, N16, K64, FOLD, False,
                                   INTERP, BM, BN, BK, NMAJ)
    offs_n = pid_n * BN + tl.arange(0, BN)
    rows = pair.to(tl.int64) + tl.zeros([BM, 1], tl.int64)
    part = part_ptr + pid_k * stride_ps + rows * stride_pp + offs_n[None, :]
    mask = row_ok[:, None] & (offs_n < I)[None, :]
    tl.store(part, tl.trans(acc_g), mask=mask)
    tl.store(part + I, tl.trans(acc_u), mask=mask)


@triton.jit
def _h_tile(part_ptr, b_ptr, row_ok, k0, I, stride_ps, HAS_BIAS: tl.constexpr, SPLIT1: tl.constexpr,
            PATH: tl.constexpr, ACT: tl.constexpr, INTERP: tl.constexpr, BM: tl.constexpr, BK: tl.constexpr):
    """h [BM, BK] at columns [k0, k0 + BK) as stage 2's B operand: stage 1's splits summed in split order onto
    split 0 plus the bias (`b_ptr` at the expert's b13), the activation, the path's rounding, bf16; as the sorted
    layer's split-K finish and epilogue compute it. Columns past I are 0, and so are the rows `row_ok` masks.
    Built on the pair's one row [1, BK] and broadcast: on the [BM, BK] tile the sums, exponentials and roundings
    of 15 masked rows were 16x the work (sm_90 SASS of the deepseek-v3-tp8 T=1 K step at c249f98, CPU compile:
    763 -> 461 instructions)."""
    offs_k = k0 + tl.arange(0, BK)
    k_ok = (offs_k < I)[None, :]
    p = part_ptr + offs_k[None, :]  # [1, BK] of the pair's row (`part_ptr` is at it)
    g = tl.load(p, mask=k_ok, other=0.0, cache_modifier=".cg")
    u = tl.load(p + I, mask=k_ok, other=0.0, cache_modifier=".cg")
    if HAS_BIAS:
        g += tl.load(b_ptr + offs_k[None, :], mask=k_ok, other=0.0)
        u += tl.load(b_ptr + I + offs_k[None, :], mask=k_ok, other=0.0)
    for s in range(1, SPLIT1):
        g += tl.load(p + s * stride_ps, mask=k_ok, other=0.0, cache_modifier=".cg")
        u += tl.load(p + s * stride_ps + I, mask=k_ok, other=0.0, cache_modifier=".cg")
    h = carried_h(tl.where(k_ok, activation(g, u, ACT), 0.0), PATH, INTERP, 1, BK)
    h = tl.where(row_ok[:, None], h, tl.zeros([BM, BK], h.dtype))
    if INTERP:
        h = h.to(tl.float32)  # the 3.6 interpreter's bf16 tl.dot is wrong; the values are exact in f32
    return h


@triton.jit
def _pre_mma(acc, raw, side, step, k_first, k_len, part_e, b_e, row_ok, I, stride_ps,
             HAS_BIAS: tl.constexpr, SPLIT1: tl.constexpr, PATH: tl.constexpr, ACT: tl.constexpr,
             FOLD: tl.constexpr, INTERP: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    """acc += the preloaded weight tile `step` x h, where the step lies in this split's K range."""
    if step * BK < k_len:
        a = _h_tile(part_e, b_e, row_ok, k_first + step * BK, I, stride_ps, HAS_BIAS, SPLIT1, PATH, ACT,
                    INTERP, BM, BK)
        acc = mma_wt(acc, decode_tile(raw, side, FOLD, INTERP, BN, BK), a, INTERP)
    return acc


@triton.jit
def _direct2_kernel(
    part_ptr, w_ptr, ws_ptr, b13_ptr, b2_ptr, ids_ptr, rw_ptr, out_ptr, y_ptr, cnt_ptr,
    num_pairs, T, E, H, I, N16, K64,
    stride_we, stride_wse, stride_b13, stride_b2, stride_ps, stride_pp, stride_os, stride_or, stride_y,
    TOPK: tl.constexpr, PATH: tl.constexpr, ACT: tl.constexpr, HAS_B13: tl.constexpr, HAS_B2: tl.constexpr,
    FOLD: tl.constexpr, INTERP: tl.constexpr, SPLIT1: tl.constexpr, SPLIT_K: tl.constexpr, PRE: tl.constexpr,
    NMAJ: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
):
    num_n = tl.cdiv(H, BN)
    pair = tl.program_id(0) // num_n
    pid_n = tl.program_id(0) % num_n
    pid_k = tl.program_id(1)
    # Before the wait: the caller's ids (complete, see the module docstring) and the first PRE weight tiles.
    expert, valid = _pair_expert(ids_ptr, pair, E)
    w_e = w_ptr + expert * stride_we
    ws_e = ws_ptr + expert * stride_wse
    n16 = pid_n * (BN // 16)
    k_first, k_len = k_range(pid_k, I, SPLIT_K, BK)
    raw0, side0 = tile_bytes(w_e, ws_e, n16, N16, k_first // 64, N16, K64, BN, BK, NMAJ)
    if PRE > 1:
        raw1, side1 = tile_bytes(w_e, ws_e, n16, N16, (k_first + BK) // 64, N16, K64, BN, BK, NMAJ)
    if PRE > 2:
        raw2, side2 = tile_bytes(w_e, ws_e, n16, N16, (k_first + 2 * BK) // 64, N16, K64, BN, BK, NMAJ)
    enter_first_wait(INTERP)
    row_ok = (tl.arange(0, BM) == 0) & valid
    part_e = part_ptr + pair.to(tl.int64) * stride_pp
    b_e = b13_ptr + expert * stride_b13
    acc = tl.zeros([BN, BM], dtype=tl.float32)
    acc = _pre_mma(acc, raw0, side0, 0, k_first, k_len, part_e, b_e, row_ok, I, stride_ps, HAS_B13, SPLIT1,
                   PATH, ACT, FOLD, INTERP, BM, BN, BK)
    if PRE > 1:
        acc = _pre_mma(acc, raw1, side1, 1, k_first, k_len, part_e, b_e, row_ok, I, stride_ps, HAS_B13,
                       SPLIT1, PATH, ACT, FOLD, INTERP, BM, BN, BK)
    if PRE > 2:
        acc = _pre_mma(acc, raw2, side2, 2, k_first, k_len, part_e, b_e, row_ok, I, stride_ps, HAS_B13,
                       SPLIT1, PATH, ACT, FOLD, INTERP, BM, BN, BK)
    for kk in range(PRE * BK, k_len, BK):
        k0 = k_first + kk
        a = _h_tile(part_e, b_e, row_ok, k0, I, stride_ps, HAS_B13, SPLIT1, PATH, ACT, INTERP, BM, BK)
        w = weight_tile(w_e, ws_e, n16, N16, k0 // 64, N16, K64, FOLD, INTERP, BN, BK, NMAJ)
        acc = mma_wt(acc, w, a, INTERP)
    offs_n = pid_n * BN + tl.arange(0, BN)
    n_ok = offs_n < H
    rw = tl.full([BM], 0.0, tl.float32) + tl.load(rw_ptr + pair).to(tl.float32)
    acc = weighted_rows(acc, b2_ptr + expert * stride_b2, rw, offs_n, n_ok, pid_k, HAS_B2)
    rows = tl.full([BM], 0, tl.int64) + pair
    tl.store(out_ptr + pid_k * stride_os + rows[:, None] * stride_or + offs_n[None, :], acc,
             mask=row_ok[:, None] & n_ok[None, :])
    if last_arrival(cnt_ptr + pid_n, num_pairs * SPLIT_K):
        combine_slots(out_ptr, y_ptr, T, H, offs_n, stride_os, stride_or, stride_y, TOPK, SPLIT_K, INTERP, BN)


def direct_stage1(x: KernelInput, weights, plan: DirectPlan, cfg: TileConfig, *, poison: bool = False) -> torch.Tensor:
    """Stage 1 of the direct layer: x bf16 [T, H] (an MX path's input unrounded: the kernel rounds it) -> fp32
    [S1, P, 2I] gate / up partial sums (NaN-filled first if `poison`); zeroes `plan.counters` on the side. Reads
    W13's N-major copy where the weights carry one (`MoEWeights.with_decode_layout`) and rules.DIRECT1_N_MAJOR."""
    if not x.bf16:
        raise ValueError("direct stage 1 takes the layer input as bf16 (it rounds an MX path's values itself)")
    w = weights.w13_dec if weights.w13_dec is not None and rules.DIRECT1_N_MAJOR else weights.w13_sw
    i, h, p = weights.inter, weights.hidden, plan.num_pairs
    part = torch.empty(cfg.split_k, p, 2 * i, dtype=torch.float32, device=x.data.device)
    if poison:
        part.fill_(float("nan"))
    if p == 0:
        return part
    cnt = plan.counters
    _direct1_kernel[(p * triton.cdiv(i, cfg.block_n), cfg.split_k)](
        x.data, w.data, w.scales, plan.ids, part, part if cnt is None else cnt, plan.experts, h, i, w.n16, w.k64,
        0 if cnt is None else cnt.numel(),
        x.data.stride(0), w.data.stride(0), w.scales.stride(0), part.stride(0), part.stride(1),
        TOPK=plan.topk, PATH=PATH_CODES[x.path], FOLD=w.fold, INTERP=interpreting(), ZERO=cnt is not None,
        SPLIT_K=cfg.split_k, NMAJ=w.n_major, BM=cfg.block_m, BN=cfg.block_n, BK=cfg.block_k,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages, **launch_options(),
    )
    return part


def direct_stage2(part: torch.Tensor, weights, plan: DirectPlan, topk_weights: torch.Tensor, cfg: TileConfig,
                  path, num_tokens: int, *, poison: bool = False) -> torch.Tensor:
    """Stage 2 of the direct layer: stage 1's partial sums -> bf16 [T, H] (NaN-filled first if `poison`, as is the
    fp32 [S2, P, H] slot buffer). `plan.counters` must be the ones stage 1 zeroed; None allocates zeroed ones.
    Reads W2's N-major copy where the weights carry one and rules.DIRECT2_N_MAJOR (as stage 1 does W13's)."""
    hidden, inter, p, dev = weights.hidden, weights.inter, plan.num_pairs, part.device
    if p == 0:
        return torch.zeros(num_tokens, hidden, dtype=torch.bfloat16, device=dev)
    num_n = triton.cdiv(hidden, cfg.block_n)
    slots = torch.empty(cfg.split_k, p, hidden, dtype=torch.float32, device=dev)
    y = torch.empty(num_tokens, hidden, dtype=torch.bfloat16, device=dev)
    if poison:
        slots.fill_(float("nan"))
        y.fill_(float("nan"))
    cnt = zeros_or(plan.counters, num_n, plan.ids)
    w = weights.w2_dec if weights.w2_dec is not None and rules.DIRECT2_N_MAJOR else weights.w2_sw
    pre = direct_preload(triton.cdiv(triton.cdiv(inter, cfg.block_k), cfg.split_k))  # of the longest split's steps
    rw = topk_weights.contiguous().view(-1)
    b13 = weights.b13 if weights.b13 is not None else rw  # dummy pointers when a bias is absent
    b2 = weights.b2 if weights.b2 is not None else rw
    _direct2_kernel[(p * num_n, cfg.split_k)](
        part, w.data, w.scales, b13, b2, plan.ids, rw, slots, y, cnt,
        p, num_tokens, plan.experts, hidden, inter, w.n16, w.k64,
        w.data.stride(0), w.scales.stride(0), b13.stride(0), b2.stride(0), part.stride(0), part.stride(1),
        slots.stride(0), slots.stride(1), y.stride(0),
        TOPK=plan.topk, PATH=PATH_CODES[path], ACT=ACT_CODES[weights.activation], HAS_B13=weights.b13 is not None,
        HAS_B2=weights.b2 is not None, FOLD=w.fold, INTERP=interpreting(), SPLIT1=part.shape[0],
        SPLIT_K=cfg.split_k, PRE=pre, NMAJ=w.n_major, BM=cfg.block_m, BN=cfg.block_n, BK=cfg.block_k,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages, **launch_options(direct_register_cap(path, pre)),
    )
    return y
