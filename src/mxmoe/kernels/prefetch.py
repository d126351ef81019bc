"""Bulk L2 prefetch of MXFP4 weight tiles (Hopper `cp.async.bulk.prefetch.L2`), the decode lever.

Axis legend: E experts, N weight rows, K the reduced axis, BN x BK one weight tile (kernels/wtile.py),
k64 / n16 the layout's blocks (kernels/layout.py: a (k64, n16) block is 512 value bytes and 32 scale bytes,
n16 blocks of one k64 contiguous).

Why: at decode a stage's CTAs each stream a few tens of KB of weights through a pipeline a few K steps deep,
so the DRAM queue is never full: ncu at deepseek-v3-tp8 T=1 (4465c21) had stage 1 at 31% and stage 2 at 20%
of DRAM bandwidth, latency-bound. One bulk prefetch instruction hands the copy engine a whole contiguous run
(no registers, no shared memory, no wait), so a CTA can ask for every byte of its K range at its start and
find the main loop's loads in L2; stage 1 can also ask for the stage-2 weights of its expert (`next_expert`),
which then stream while stage 1 computes. Outside sm_90 builds (the interpreter) the prefetch is nothing: it
never changes a value, only when bytes arrive.
"""

from __future__ import annotations

import triton
import triton.language as tl

LANES = tl.constexpr(128)  # chunks issued per step: one per thread of a 4-warp CTA (more warps repeat them)

# Each element: prefetch [$1, $1 + $2) into L2 when $2 > 0 (16-byte aligned, a multiple of 16). $0 is a dummy
# result; the op is impure, so it stays although nothing reads $0.
_PREFETCH_ASM = tl.constexpr(
    "{ .reg .pred p; setp.ne.s32 p, $2, 0; @p cp.async.bulk.prefetch.L2.global [$1], $2; mov.b32 $0, 0; }")


@triton.jit
def _issue(addr, size):
    """Prefetch [addr, addr + size) per element (int64 addresses, int32 sizes; size 0 issues nothing)."""
    tl.inline_asm_elementwise(_PREFETCH_ASM, "=r,l,r", [addr, size], dtype=tl.int32, is_pure=False, pack=1)


@triton.jit
def prefetch_tile(w_ptr, s_ptr, n16_0, n16_end, k64_0, k64_end, N16, INTERP: tl.constexpr, BN: tl.constexpr):
    """Rows [16 n16_0, +BN) (clipped at n16_end) x k64 blocks [k64_0, k64_end) of one expert's weights (`w_ptr`,
    `s_ptr` at the expert): one value run and one scale run per k64."""
    if not INTERP:
        nb = tl.minimum(n16_end - n16_0, BN // 16)
        for c0 in range(k64_0, k64_end, LANES):
            k64 = c0 + tl.arange(0, LANES)
            ok = (k64 < k64_end) & (nb > 0)
            blk = (k64 * N16 + n16_0).to(tl.int64)
            _issue((w_ptr + blk * 512).to(tl.int64, bitcast=True), tl.where(ok, nb * 512, 0))
            _issue((s_ptr + blk * 32).to(tl.int64, bitcast=True), tl.where(ok, nb * 32, 0))


@triton.jit
def prefetch_slice(ptr, nbytes, part, parts, INTERP: tl.constexpr):
    """Part `part` of `parts` of the contiguous run [ptr, ptr + nbytes) (nbytes a multiple of 16), cut into
    LANES chunks: how the CTAs of one expert's block share the prefetch of its next-stage weights."""
    if not INTERP:
        per = tl.cdiv(tl.cdiv(nbytes, 16), parts * LANES) * 16  # bytes per chunk, a multiple of 16
        c = part * LANES + tl.arange(0, LANES)
        start = (c * per).to(tl.int64)
        size = tl.minimum(tl.maximum(nbytes - start, 0), per).to(tl.int32)
        _issue((ptr + start).to(tl.int64, bitcast=True), size)


def next_stage_fits(pairs: int, experts: int, bytes_per_expert: int, budget: int) -> bool:
    """Whether the stage-2 weights of every expert `pairs` can hit (at most min(pairs, E)) fit `budget` bytes."""
    return min(pairs, experts) * bytes_per_expert <= budget

