"""L2 prefetch of weight bytes with Hopper's bulk copy engine (`cp.async.bulk.prefetch.L2`).

Why: the direct decode layer (kernels/decode.py) streams each expert's weights once, in CTAs of a few K steps
each. On the H100 at deepseek-v4-tp8 T=1 (CUDA-graph replay, L2 flushed, 14d8168;
results/h100/2026-12-07_session17a_14d8168.log) its stage 1 read DRAM at 1.79 TB/s (54% of peak, ncu), and stage
2, whose CTAs fit beside stage 1's only one an SM (161 registers), ran 8.5 us past stage 1's end while its other
CTAs fetched their weights. A CTA that asks L2 for a share of its expert's bytes as it starts puts the whole
stream in flight at once, and a share of stage 2's expert is in L2 by the time stage 2's later CTAs read it. The
prefetch is one instruction a thread, no registers held and no shared memory, and changes no result: under the
interpreter it is skipped.
"""

from __future__ import annotations

import triton
import triton.language as tl

PIECES: tl.constexpr = tl.constexpr(128)  # prefetches a CTA issues per call: one a thread at 4 warps


@triton.jit
def l2_prefetch(base, nbytes, part, parts, INTERP: tl.constexpr):
    """Ask L2 for part `part` of `parts` of the `nbytes` bytes at `base` (16-byte aligned, `nbytes` a multiple of
    16), as PIECES bulk prefetches of 16-byte multiples."""
    if not INTERP:
        units = nbytes.to(tl.int64) // 16
        u0 = part.to(tl.int64) * units // parts
        u1 = (part.to(tl.int64) + 1) * units // parts
        q = tl.cdiv(u1 - u0, PIECES)
        start = u0 + tl.arange(0, PIECES).to(tl.int64) * q
        size = (tl.maximum(tl.minimum(start + q, u1) - start, 0) * 16).to(tl.int32)
        tl.inline_asm_elementwise(
            "{ .reg .pred p; setp.gt.s32 p, $2, 0; @p cp.async.bulk.prefetch.L2.global [$1], $2; mov.b32 $0, 0; }",
            "=r,l,r", [base + start * 16, size], dtype=tl.int32, is_pure=False, pack=1)
