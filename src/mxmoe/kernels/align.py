"""Expert alignment in one Triton program: topk ids -> the `RoutingPlan` of `mxmoe.routing`, bit for bit.

Axis legend: T tokens, A topk, P = T*A (token, slot) pairs, PB = next_pow2(P) lanes (lane i holds pair i;
lanes >= P are padding), E experts, EB = 2**E_BITS >= E histogram bins, P_max the static length of
sorted_ids, NB = P_max // block_m blocks. The plan's index arrays are described in `mxmoe.routing`.

Why a kernel: the torch `align_by_expert` is ~25 small kernels (scatter_add, cumsums, argsort,
searchsorted, ...) and costs ~56 us a call on an H100 even under CUDA-graph replay, more than the whole
expert weight stream of a small decode layer (8-20 us). Here one CTA does it all:

  1. load the P ids into registers; sentinel-fill sorted_ids (the stores retire while the rest computes)
  2. counts = histogram(ids) [EB]; padded starts by one cumsum -> expert_offsets, num_padded, and
     block_expert = -1 past num_padded
  3. a stable LSD radix sort of key = expert << P_BITS | p, two bits of the expert per pass: one packed
     int64 cumsum (four 16-bit counters, one per digit) gives every lane its destination; the keys go
     through a global scratch [2, PB] (double buffered) with a CTA barrier between store and load
  4. the last pass keeps its destinations j in registers: pair p lands in slot j + starts[e] - cstart[e]
     (padded minus unpadded start of its expert), and the pair that opens a block_m block writes its
     expert to block_expert (every used block opens with a real pair: padding only ends a run)

  3'. up to SMALL_LANES lanes (decode) instead: each pair's rank among the earlier pairs of its expert is a row
     sum of a [PB, PB] comparison in registers, and it lands in slot starts[e] + rank (the same slot the
     sort gives: within an expert the order is ascending p)

So the kernel takes ceil(E_BITS / 2) - 1 scratch round trips (3 for E = 256, 4 for E = 512), each a
store, a __syncthreads and a load of PB int32, plus the fills; everything else is register work that
grows linearly in PB. Ordering within the CTA: `tl.debug_barrier()` is bar.sync, which orders the
global-memory accesses of the CTA's threads (PTX memory model, CTA scope), so a load after it sees every
store before it, and a store after it lands after every store before it (the sentinel fill vs. the
scatter, a write-after-write on the same slots).

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
from mxmoe.kernels.sync import enter, launch_options
from mxmoe.routing import (
    RoutingPlan,
    _check_id_range,
    _check_ids,
    _check_sizes,
    align_by_expert,
    max_padded_pairs,
)

# P above which align() takes the torch path. TODO: set from the H100 timings below once measured.
MAX_TRITON_PAIRS = 8192
# E above which align() takes the torch path: key = expert << P_BITS | p must fit in int32.
MAX_TRITON_EXPERTS = 1024
# The packed digit counters are 16 bits wide, so a lane count must stay below 2**16.
_MAX_KERNEL_LANES = 32768
# Up to this many lanes the kernel ranks each pair among its expert's earlier pairs by a [PB, PB] comparison in
# registers instead of the radix passes (whose scratch round trips cost most of a decode call's alignment).
SMALL_LANES = 128
_SEGMENT = 16  # int32 elements: every output view of the one allocation starts 64-byte aligned


@triton.jit
def _align_kernel(
    # pointers
    ids_ptr, sorted_ids_ptr, block_expert_ptr, offsets_ptr, num_padded_ptr, scratch_ptr, counters_ptr,
    # sizes
    num_pairs, num_experts, max_padded, max_blocks, num_counters,
    # strides
    stride_it, stride_ia,
    # meta-parameters
    TOPK: tl.constexpr, BLOCK_M: tl.constexpr,
    P_BLOCK: tl.constexpr, P_BITS: tl.constexpr, E_BITS: tl.constexpr, FILL_BLOCK: tl.constexpr,
    SMALL: tl.constexpr, INTERP: tl.constexpr,
):
    E_BLOCK: tl.constexpr = 1 << E_BITS
    enter(INTERP)
    lane = tl.arange(0, P_BLOCK)  # [PB] lane i holds pair i = t * A + a
    valid = lane < num_pairs
    expert = tl.load(ids_ptr + (lane // TOPK) * stride_it + (lane % TOPK) * stride_ia, mask=valid, other=0)
    expert = expert.to(tl.int32)  # [PB]

    fill = tl.arange(0, FILL_BLOCK)
    for s0 in range(0, max_padded, FILL_BLOCK):
        tl.store(sorted_ids_ptr + s0 + fill, tl.full([FILL_BLOCK], 0, tl.int32) + num_pairs,
                 mask=s0 + fill < max_padded)
    for c0 in range(0, num_counters, FILL_BLOCK):
        tl.store(counters_ptr + c0 + fill, tl.zeros([FILL_BLOCK], tl.int32), mask=c0 + fill < num_counters)

    # per-expert counts and padded runs
    counts = tl.histogram(expert, E_BLOCK, mask=valid & (expert >= 0) & (expert < num_experts))  # [EB]
    padded = (counts + (BLOCK_M - 1)) // BLOCK_M * BLOCK_M  # [EB]
    starts = tl.cumsum(padded, 0) - padded  # [EB] padded start of each expert's run
    shift = starts - (tl.cumsum(counts, 0) - counts)  # [EB] padded start minus unpadded start
    total = tl.sum(padded, 0)
    e_idx = tl.arange(0, E_BLOCK)
    tl.store(offsets_ptr + e_idx, starts, mask=e_idx < num_experts)
    tl.store(offsets_ptr + num_experts, total)
    tl.store(num_padded_ptr, total)
    for b0 in range(0, max_blocks, FILL_BLOCK):
        b = b0 + fill
        tl.store(block_expert_ptr + b, tl.full([FILL_BLOCK], -1, tl.int32),
                 mask=(b < max_blocks) & (b * BLOCK_M >= total))

    if SMALL:  # rank among the earlier lanes of the same expert, all in registers: no scratch round trip
        same = (expert[:, None] == expert[None, :]) & (lane[None, :] < lane[:, None])  # [PB, PB]
        dest = tl.gather(starts, expert & (E_BLOCK - 1), 0) + tl.sum(same.to(tl.int32), axis=1)  # [PB]
        keep = valid & (dest < max_padded)
        tl.debug_barrier()  # the scatter lands after the sentinel fill
        tl.store(sorted_ids_ptr + dest, lane, mask=keep)
        tl.store(block_expert_ptr + dest // BLOCK_M, expert & (E_BLOCK - 1), mask=keep & (dest % BLOCK_M == 0))
        return

    # stable LSD radix sort by expert, two bits a pass; padding lanes get the largest key and sort last
    e_key = tl.where(valid, expert & (E_BLOCK - 1), E_BLOCK - 1)
    key = (e_key << P_BITS) | lane  # [PB]
    pos = lane
    for r in tl.static_range(0, E_BITS, 2):
        digit = ((key >> (P_BITS + r)) & 3).to(tl.int64)  # [PB]
        one = tl.full([P_BLOCK], 1, tl.int64) << (16 * digit)  # [PB] a 1 in the digit's 16-bit field
        before = tl.cumsum(one, 0) - one  # [PB] per field: lanes of that digit before this one
        tot = tl.sum(one, 0)
        firsts = (tot << 16) + (tot << 32) + (tot << 48)  # field d: lanes of a smaller digit
        pos = (((before + firsts) >> (16 * digit)) & 0xFFFF).to(tl.int32)  # [PB] stable destination
        if r + 2 < E_BITS:
            buf = scratch_ptr + (r // 2 % 2) * P_BLOCK
            tl.store(buf + pos, key)
            tl.debug_barrier()
            key = tl.load(buf + lane)
            pos = lane

    # scatter: sorted position pos -> slot pos + shift[e]; orders after the sentinel fill
    tl.debug_barrier()
    e_sorted = key >> P_BITS  # [PB]
    pair = key & (P_BLOCK - 1)  # [PB]
    dest = pos + tl.gather(shift, e_sorted, 0)  # [PB]
    keep = (pair < num_pairs) & (dest < max_padded)
    tl.store(sorted_ids_ptr + dest, pair, mask=keep)
    tl.store(block_expert_ptr + dest // BLOCK_M, e_sorted, mask=keep & (dest % BLOCK_M == 0))


def _num_warps(p_block: int) -> int:
    """Warps for a PB-lane program. TODO: from the H100 sweep."""
    return 4 if p_block <= 1024 else 8


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def align_by_expert_triton(topk_ids: torch.Tensor, num_experts: int, block_m: int, *,
                           counters: int = 0) -> RoutingPlan:
    """The plan of `mxmoe.routing.align_by_expert`, bit for bit, from one Triton program (no host sync,
    CUDA-graph capturable). topk_ids: [T, A] int32/int64 in [0, E), not range-checked here (see `align`).
    `counters` int32 zeros come with it as `plan.counters` (written by the same program: no memset launch).

    Takes any P up to 32768 lanes, but its cost grows linearly in P on one SM: `align` picks it only up to
    MAX_TRITON_PAIRS. The plan's four tensors are views of one int32 allocation.
    """
    _check_ids(topk_ids)
    _check_sizes(num_experts, block_m)
    if num_experts > MAX_TRITON_EXPERTS:
        raise ValueError(f"num_experts={num_experts} exceeds the kernel's {MAX_TRITON_EXPERTS}; use align()")
    require_executable(topk_ids)
    t, a = topk_ids.shape
    p = t * a
    p_max = max_padded_pairs(p, num_experts, block_m)
    nb = p_max // block_m
    p_block = max(triton.next_power_of_2(p), 128)
    if p_block > _MAX_KERNEL_LANES:
        raise ValueError(f"P = T*A = {p} exceeds the kernel's {_MAX_KERNEL_LANES} pairs; use align()")

    sizes = [p_max, nb, num_experts + 1, 1, counters]
    bounds = [0]
    for n in sizes:
        bounds.append(bounds[-1] + _round_up(n, _SEGMENT))
    scratch = 2 * p_block if p else 0
    fresh = torch.zeros if p == 0 else torch.empty  # T = 0: no launch, offsets and num_padded are 0
    buf = fresh(bounds[-1] + scratch, dtype=torch.int32, device=topk_ids.device)
    sorted_ids, block_expert, offsets, num_padded, zeros = (
        buf[lo : lo + n] for lo, n in zip(bounds, sizes, strict=False))
    if p:
        e_bits = max(1, (num_experts - 1).bit_length())
        _align_kernel[(1,)](
            topk_ids, sorted_ids, block_expert, offsets, num_padded, buf[bounds[-1] :], zeros,
            p, num_experts, p_max, nb, counters,
            topk_ids.stride(0), topk_ids.stride(1),
            TOPK=a, BLOCK_M=block_m, P_BLOCK=p_block, P_BITS=p_block.bit_length() - 1, E_BITS=e_bits,
            FILL_BLOCK=1024, SMALL=p_block <= SMALL_LANES, INTERP=interpreting(), num_warps=_num_warps(p_block),
            **launch_options(),
        )
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
          counters: int = 0) -> RoutingPlan:
    """`align_by_expert` by the fastest correct path: the one-CTA kernel up to MAX_TRITON_PAIRS pairs and
    MAX_TRITON_EXPERTS experts on CUDA (or the interpreter), the torch ops otherwise. Same plan either way.

    `validate` range-checks the ids, a host sync: pass False inside CUDA-graph capture. `counters` asks for that
    many int32 zeros as `plan.counters` (the v2 stages' arrival counters).
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
    return align_by_expert_triton(topk_ids, num_experts, block_m, counters=counters)
