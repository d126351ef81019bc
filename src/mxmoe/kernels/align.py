"""Expert alignment in Triton: topk ids -> the `RoutingPlan` of `mxmoe.routing`, bit for bit.

Axis legend: T tokens, A topk, P = T*A (token, slot) pairs, E experts, EB = 2**E_BITS >= E histogram bins,
CB lanes per program (lane i of program c holds pair c * CB + i; lanes >= P are padding), C = ceil(P / CB)
programs, P_max the static length of sorted_ids, NB = P_max // block_m blocks. The plan's index arrays are
described in `mxmoe.routing`.

Why kernels: the torch `align_by_expert` is ~25 small kernels (scatter_add, cumsums, argsort, searchsorted, ...)
and costs ~56 us a call on an H100 even under CUDA-graph replay at decode, and ~145-155 us from 16K pairs. Every
pair p of expert e lands in slot starts[e] + (pairs of e before p), starts being the padded run starts. Which
pairs of e come before p splits into those of earlier programs (a per-expert prefix over the programs'
histograms) and those of p's own program (its rank after sorting the program's (expert, lane) keys):

  - up to ONE_CTA_LANES pairs, one program does it all: load the ids, sentinel-fill sorted_ids and block_expert,
    histogram -> padded starts (written as expert_offsets, num_padded), rank, and after a CTA barrier scatter
    each pair to its slot; the pair that opens a block_m block writes the block's expert. Up to SMALL_LANES
    lanes (decode) the rank is a row sum of a [CB, CB] comparison in registers; above it a stable LSD radix
    sort by expert, two bits a pass, gives each pair its sorted position (ceil(E_BITS / 2) - 1 round trips
    through a global scratch, each a store, a CTA barrier and a load).
  - above it, two launches of C programs: `_count_kernel` stores each program's histogram [C, EB] and does the
    fills (grid-strided); `_place_kernel` sums the histograms (all of them for the starts, those of earlier
    programs for its prefix), sorts its keys (tl.sort) and scatters. Stream order (PDL's griddepcontrol.wait, kernels/
    sync.py) puts every fill before every scatter.

Ordering within a program: `tl.debug_barrier()` is bar.sync, which orders the global-memory accesses of the CTA's
threads (PTX memory model, CTA scope): the scatter lands after the fills on the same slots.

Out-of-range ids (possible only with validate=False) give an unspecified plan but never an access out of
bounds: the histogram masks them, expert numbers are cut to E_BITS bits, and the scatter is masked to
[0, P_max).
"""

from __future__ import annotations

import dataclasses

import torch
import triton
import triton.language as tl

from mxmoe.kernels.common import interpreting, require_executable
from mxmoe.kernels.sync import enter, enter_as, launch_options
from mxmoe.routing import (
    RoutingPlan,
    _check_id_range,
    _check_ids,
    _check_sizes,
    align_by_expert,
    max_padded_pairs,
)

# E above which align() takes the torch path (the histograms are [EB] registers).
MAX_TRITON_EXPERTS = 1024
# Up to this many pairs one program does the whole plan (one launch); above it, the two-launch path. H100, graph
# replay, L2 flushed, us (results/h100/2026-12-06_align_ab_2b748a4.log): the one program's radix passes 11.3 at
# P = 2048 against 16.0 for two launches, 17.2 against 16.3 at 4096, 94.0 against 20.0 at 8192.
ONE_CTA_LANES = 2048
# Up to this many lanes the one program ranks each pair among its expert's earlier pairs by a [CB, CB] comparison
# in registers instead of the radix passes (the decode case).
SMALL_LANES = 128
# Lanes per program of the two-launch path, and the int32 histogram entries a _place_kernel program sums per
# step (ROWS programs' histograms of EB). Sorting more lanes per program measured slower than reading more
# histograms: 4096 lanes took 114 us at P = 262144, 8192 lanes 260 us at P = 294912 (same log).
CHUNK_LANES = 1024
PREFIX_INTS = 16384
# P above which align() takes the torch path: 512 programs.
MAX_TRITON_PAIRS = 512 * CHUNK_LANES
_SEGMENT = 16  # int32 elements: every output view of the one allocation starts 64-byte aligned
_FILL = tl.constexpr(1024)


@triton.jit
def _load_ids(ids_ptr, lane, num_pairs, stride_it, stride_ia, TOPK: tl.constexpr):
    """int32 expert ids of pairs `lane` (0 past num_pairs) and which lanes are real pairs."""
    valid = lane < num_pairs
    expert = tl.load(ids_ptr + (lane // TOPK) * stride_it + (lane % TOPK) * stride_ia, mask=valid, other=0)
    return expert.to(tl.int32), valid


@triton.jit
def _fill(ptr, value, first, n, step):
    """ptr[first + k * step + [0, _FILL)] = value for k = 0, 1, ... below n: a grid-strided int32 fill."""
    offs = tl.arange(0, _FILL)
    for s0 in range(first, n, step):
        tl.store(ptr + s0 + offs, tl.zeros([_FILL], tl.int32) + value, mask=s0 + offs < n)


@triton.jit
def _fills(sorted_ids_ptr, block_expert_ptr, counters_ptr, num_pairs, max_padded, max_blocks, num_counters,
           first, step):
    """The sentinel in every slot, -1 in every block (the scatter overwrites the used ones), zeroed counters."""
    _fill(sorted_ids_ptr, num_pairs, first, max_padded, step)
    _fill(block_expert_ptr, -1, first, max_blocks, step)
    _fill(counters_ptr, 0, first, num_counters, step)


@triton.jit
def _histogram(expert, valid, num_experts, E_BLOCK: tl.constexpr):
    return tl.histogram(expert, E_BLOCK, mask=valid & (expert >= 0) & (expert < num_experts))


@triton.jit
def _starts(counts, offsets_ptr, num_padded_ptr, num_experts, write, BLOCK_M: tl.constexpr,
            E_BLOCK: tl.constexpr):
    """Padded run starts [EB] of the experts' counts; where `write`, stored as expert_offsets and num_padded."""
    padded = (counts + (BLOCK_M - 1)) // BLOCK_M * BLOCK_M
    starts = tl.cumsum(padded, 0) - padded
    total = tl.sum(padded, 0)
    e_idx = tl.arange(0, E_BLOCK)
    tl.store(offsets_ptr + e_idx, starts, mask=(e_idx < num_experts) & write)
    tl.store(offsets_ptr + num_experts + e_idx, total + e_idx * 0, mask=(e_idx == 0) & write)
    tl.store(num_padded_ptr + e_idx, total + e_idx * 0, mask=(e_idx == 0) & write)
    return starts


@triton.jit
def _sort_key(expert, valid, LANES: tl.constexpr, LANE_BITS: tl.constexpr, E_BLOCK: tl.constexpr):
    """expert << LANE_BITS | lane, ascending in (expert, lane); padding lanes take the last expert (and are the last
    lanes), so they sort last."""
    return (tl.where(valid, expert & (E_BLOCK - 1), E_BLOCK - 1) << LANE_BITS) | tl.arange(0, LANES)


@triton.jit
def _sorted_ranks(expert, valid, LANES: tl.constexpr, LANE_BITS: tl.constexpr, E_BLOCK: tl.constexpr):
    """Sort the program's lanes by (expert, lane): per sorted position its expert, its lane and its rank among
    the program's lanes of that expert (padding lanes sort last, `_sort_key`)."""
    key = tl.sort(_sort_key(expert, valid, LANES, LANE_BITS, E_BLOCK))
    e_s = key >> LANE_BITS
    hist = tl.histogram(e_s, E_BLOCK)
    rank = tl.arange(0, LANES) - tl.gather(tl.cumsum(hist, 0) - hist, e_s, 0)
    return e_s, key & (LANES - 1), rank


@triton.jit
def _radix_positions(expert, valid, scratch_ptr, LANES: tl.constexpr, LANE_BITS: tl.constexpr,
                     E_BITS: tl.constexpr):
    """A stable LSD radix sort of the lanes by expert, two bits a pass, through a global scratch [2, LANES]
    (double buffered, a CTA barrier between store and load): per sorted position its expert, its lane and the
    position. One packed int64 cumsum (four 16-bit counters, one per digit) gives every lane its destination.
    Padding lanes sort last (`_sort_key`)."""
    E_BLOCK: tl.constexpr = 1 << E_BITS
    lane = tl.arange(0, LANES)
    key = _sort_key(expert, valid, LANES, LANE_BITS, E_BLOCK)
    pos = lane
    for r in tl.static_range(0, E_BITS, 2):
        digit = ((key >> (LANE_BITS + r)) & 3).to(tl.int64)
        one = tl.full([LANES], 1, tl.int64) << (16 * digit)  # a 1 in the digit's 16-bit field
        before = tl.cumsum(one, 0) - one  # per field: lanes of that digit before this one
        tot = tl.sum(one, 0)
        firsts = (tot << 16) + (tot << 32) + (tot << 48)  # field d: lanes of a smaller digit
        pos = (((before + firsts) >> (16 * digit)) & 0xFFFF).to(tl.int32)  # stable destination
        if r + 2 < E_BITS:
            buf = scratch_ptr + (r // 2 % 2) * LANES
            tl.store(buf + pos, key)
            tl.debug_barrier()
            key = tl.load(buf + lane)
            pos = lane
    return key >> LANE_BITS, key & (LANES - 1), pos


@triton.jit
def _scatter(sorted_ids_ptr, block_expert_ptr, dest, pair, expert, num_pairs, max_padded, BLOCK_M: tl.constexpr):
    """Pair `pair` (of expert `expert`) into slot `dest`; the pair that opens a block names the block's expert."""
    keep = (pair < num_pairs) & (dest >= 0) & (dest < max_padded)
    tl.store(sorted_ids_ptr + dest, pair, mask=keep)
    tl.store(block_expert_ptr + dest // BLOCK_M, expert, mask=keep & (dest % BLOCK_M == 0))


@triton.jit
def _align_kernel(
    ids_ptr, sorted_ids_ptr, block_expert_ptr, offsets_ptr, num_padded_ptr, counters_ptr, scratch_ptr,
    num_pairs, num_experts, max_padded, max_blocks, num_counters, stride_it, stride_ia,
    TOPK: tl.constexpr, BLOCK_M: tl.constexpr, LANES: tl.constexpr, LANE_BITS: tl.constexpr,
    E_BITS: tl.constexpr, SMALL: tl.constexpr, FIRST_WAIT: tl.constexpr, INTERP: tl.constexpr,
):
    """The whole plan from one program (P <= LANES)."""
    E_BLOCK: tl.constexpr = 1 << E_BITS
    enter_as(FIRST_WAIT, INTERP)
    lane = tl.arange(0, LANES)
    expert, valid = _load_ids(ids_ptr, lane, num_pairs, stride_it, stride_ia, TOPK)
    _fills(sorted_ids_ptr, block_expert_ptr, counters_ptr, num_pairs, max_padded, max_blocks, num_counters,
           0, _FILL)
    counts = _histogram(expert, valid, num_experts, E_BLOCK)
    starts = _starts(counts, offsets_ptr, num_padded_ptr, num_experts, True, BLOCK_M, E_BLOCK)
    if SMALL:  # rank among the earlier lanes of the same expert, a [LANES, LANES] comparison in registers
        same = (expert[:, None] == expert[None, :]) & (lane[None, :] < lane[:, None])
        e_s = expert & (E_BLOCK - 1)
        dest = tl.gather(starts, e_s, 0) + tl.sum(same.to(tl.int32), axis=1)
        pair = lane
    else:  # sorted position + (padded minus unpadded start of the expert)
        e_s, pair, pos = _radix_positions(expert, valid, scratch_ptr, LANES, LANE_BITS, E_BITS)
        dest = pos + tl.gather(starts - (tl.cumsum(counts, 0) - counts), e_s, 0)
    tl.debug_barrier()  # the scatter lands after the fills
    _scatter(sorted_ids_ptr, block_expert_ptr, dest, pair, e_s, num_pairs, max_padded, BLOCK_M)


@triton.jit
def _count_kernel(
    ids_ptr, sorted_ids_ptr, block_expert_ptr, counts_ptr, counters_ptr,
    num_pairs, num_experts, max_padded, max_blocks, num_counters, stride_it, stride_ia,
    TOPK: tl.constexpr, LANES: tl.constexpr, E_BITS: tl.constexpr, INTERP: tl.constexpr,
):
    """Program c: the histogram of pairs [c * LANES, +LANES) into counts[c], and its strips of the fills."""
    E_BLOCK: tl.constexpr = 1 << E_BITS
    enter(INTERP)
    c = tl.program_id(0)
    expert, valid = _load_ids(ids_ptr, c * LANES + tl.arange(0, LANES), num_pairs, stride_it, stride_ia, TOPK)
    tl.store(counts_ptr + c * E_BLOCK + tl.arange(0, E_BLOCK), _histogram(expert, valid, num_experts, E_BLOCK))
    _fills(sorted_ids_ptr, block_expert_ptr, counters_ptr, num_pairs, max_padded, max_blocks, num_counters,
           c * _FILL, tl.num_programs(0) * _FILL)


@triton.jit
def _place_kernel(
    ids_ptr, sorted_ids_ptr, block_expert_ptr, offsets_ptr, num_padded_ptr, counts_ptr,
    num_pairs, num_experts, max_padded, num_chunks, stride_it, stride_ia,
    TOPK: tl.constexpr, BLOCK_M: tl.constexpr, LANES: tl.constexpr, LANE_BITS: tl.constexpr,
    E_BITS: tl.constexpr, ROWS: tl.constexpr, FIRST_WAIT: tl.constexpr, INTERP: tl.constexpr,
):
    """Program c: the starts from all C histograms, its prefix from those of programs < c, then its pairs'
    slots (program 0 also writes expert_offsets and num_padded)."""
    E_BLOCK: tl.constexpr = 1 << E_BITS
    enter_as(FIRST_WAIT, INTERP)
    c = tl.program_id(0)
    e_idx = tl.arange(0, E_BLOCK)
    total = tl.zeros([E_BLOCK], tl.int32)
    before = tl.zeros([E_BLOCK], tl.int32)
    for r0 in range(0, num_chunks, ROWS):
        r = r0 + tl.arange(0, ROWS)
        h = tl.load(counts_ptr + r[:, None] * E_BLOCK + e_idx[None, :], mask=(r < num_chunks)[:, None], other=0)
        total += tl.sum(h, 0)
        before += tl.sum(tl.where((r < c)[:, None], h, 0), 0)
    starts = _starts(total, offsets_ptr, num_padded_ptr, num_experts, c == 0, BLOCK_M, E_BLOCK)
    expert, valid = _load_ids(ids_ptr, c * LANES + tl.arange(0, LANES), num_pairs, stride_it, stride_ia, TOPK)
    e_s, local, rank = _sorted_ranks(expert, valid, LANES, LANE_BITS, E_BLOCK)
    dest = tl.gather(starts + before, e_s, 0) + rank
    _scatter(sorted_ids_ptr, block_expert_ptr, dest, c * LANES + local, e_s, num_pairs, max_padded, BLOCK_M)


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def align_by_expert_triton(topk_ids: torch.Tensor, num_experts: int, block_m: int, *,
                           counters: int = 0, first_wait: bool = False) -> RoutingPlan:
    """The plan of `mxmoe.routing.align_by_expert`, bit for bit, from Triton (one launch up to ONE_CTA_LANES
    pairs, two above; no host sync, CUDA-graph capturable). topk_ids: [T, A] int32/int64 in [0, E), not
    range-checked here (see `align`). `counters` int32 zeros come with it as `plan.counters` (written by the same
    launch: no memset). The plan's four tensors are views of one int32 allocation. `first_wait`: its last kernel
    enters with `sync.enter_first_wait`, for an overlapped grid after it (`sync.overlap_begin`).
    """
    _check_ids(topk_ids)
    _check_sizes(num_experts, block_m)
    if num_experts > MAX_TRITON_EXPERTS:
        raise ValueError(f"num_experts={num_experts} exceeds the kernel's {MAX_TRITON_EXPERTS}; use align()")
    require_executable(topk_ids)
    t, a = topk_ids.shape
    p = t * a
    if p > MAX_TRITON_PAIRS:
        raise ValueError(f"P = T*A = {p} exceeds the kernels' {MAX_TRITON_PAIRS} pairs; use align()")
    p_max = max_padded_pairs(p, num_experts, block_m)
    nb = p_max // block_m
    e_bits = max(1, (num_experts - 1).bit_length())
    one = p <= ONE_CTA_LANES
    lanes = max(triton.next_power_of_2(p), 128) if one else CHUNK_LANES
    chunks = -(-p // lanes)
    sizes = [p_max, nb, num_experts + 1, 1, counters]
    bounds = [0]
    for n in sizes:
        bounds.append(bounds[-1] + _round_up(n, _SEGMENT))
    scratch = 2 * lanes if one else chunks << e_bits  # the radix passes' [2, LANES], or the histograms [C, EB]
    fresh = torch.zeros if p == 0 else torch.empty  # T = 0: no launch, offsets and num_padded are 0
    buf = fresh(bounds[-1] + scratch, dtype=torch.int32, device=topk_ids.device)
    sorted_ids, block_expert, offsets, num_padded, zeros = (
        buf[lo : lo + n] for lo, n in zip(bounds, sizes, strict=False))
    common = dict(TOPK=a, E_BITS=e_bits, INTERP=interpreting(), num_warps=4 if lanes <= 1024 else 8, **launch_options())
    scratch_buf = buf[bounds[-1]:]
    strides = (topk_ids.stride(0), topk_ids.stride(1))
    if p and one:
        _align_kernel[(1,)](
            topk_ids, sorted_ids, block_expert, offsets, num_padded, zeros, scratch_buf, p, num_experts, p_max, nb,
            counters, *strides, BLOCK_M=block_m, LANES=lanes, LANE_BITS=lanes.bit_length() - 1,
            SMALL=lanes <= SMALL_LANES, FIRST_WAIT=first_wait, **common)
    elif p:
        _count_kernel[(chunks,)](
            topk_ids, sorted_ids, block_expert, scratch_buf, zeros, p, num_experts, p_max, nb, counters, *strides,
            LANES=lanes, **common)
        _place_kernel[(chunks,)](
            topk_ids, sorted_ids, block_expert, offsets, num_padded, scratch_buf, p, num_experts, p_max, chunks,
            *strides, BLOCK_M=block_m, LANES=lanes, LANE_BITS=lanes.bit_length() - 1,
            ROWS=min(PREFIX_INTS >> e_bits, triton.next_power_of_2(chunks)), FIRST_WAIT=first_wait, **common)
    return RoutingPlan(
        sorted_ids=sorted_ids,
        block_expert=block_expert,
        expert_offsets=offsets,
        num_padded=num_padded,
        block_m=block_m,
        num_pairs=p,
        num_experts=num_experts,
        max_blocks=nb,
        topk=a,
        counters=zeros if counters else None,
    )


def align(topk_ids: torch.Tensor, num_experts: int, block_m: int, *, validate: bool = True,
          counters: int = 0, first_wait: bool = False) -> RoutingPlan:
    """`align_by_expert` by the fastest correct path: the Triton kernels up to MAX_TRITON_PAIRS pairs and
    MAX_TRITON_EXPERTS experts on CUDA (or the interpreter), the torch ops otherwise. Same plan either way.

    `validate` range-checks the ids, a host sync: pass False inside CUDA-graph capture. `counters` asks for that
    many int32 zeros as `plan.counters` (the v2 stages' arrival counters); `first_wait`: see
    `align_by_expert_triton` (the torch path's kernels finish before the next launches anyway).
    """
    _check_ids(topk_ids)
    _check_sizes(num_experts, block_m)
    if validate:
        _check_id_range(topk_ids, num_experts)
    runnable = topk_ids.is_cuda or interpreting()
    if not runnable or topk_ids.numel() > MAX_TRITON_PAIRS or num_experts > MAX_TRITON_EXPERTS:
        plan = align_by_expert(topk_ids, num_experts, block_m, validate=False)
        if counters:
            plan = dataclasses.replace(plan, counters=torch.zeros(counters, dtype=torch.int32,
                                                                  device=topk_ids.device))
        return plan
    return align_by_expert_triton(topk_ids, num_experts, block_m, counters=counters, first_wait=first_wait)
