"""Grid-level ordering the v2 layer relies on: programmatic dependent launch and arrival counters.

Why: at decode a layer's kernels run for a few microseconds each, so what separates them (a launch, the drain
of one grid before the next starts, and the zero-fill / finish / cast kernels around a split-K or an atomic
combine) was as much time as the weights' stream. Two devices remove it:

- PDL (Hopper's griddepcontrol): every v2 kernel launches with `launch_pdl=True` and starts with `enter()`:
  `launch_dependents` lets the next kernel's CTAs launch as soon as all of this grid's CTAs have started (so a
  dependent never takes an SM slot from a CTA of this grid), and `wait` blocks until the previous grid has
  finished and its writes are visible. Nothing before `enter()` touches global memory, so a kernel that follows
  any other kernel (ours or the caller's, PDL or not) sees its results and never overwrites what it still reads.
  Outside PDL both instructions are no-ops.
- Arrival counters: the CTAs that add into one output tile each write their part with plain stores, then count
  themselves in; the last to arrive finishes the tile (sums the parts in a fixed order, so the result is also
  deterministic). This is the split-K epilogue and the top-k combine without a second kernel or a zero fill.
  The counters are int32 zeros the align kernel writes (`kernels/align.py`), each used once per call.

Ordering of `last_arrival` (the pattern of CUTLASS's generic barrier): every thread's stores, then a CTA
barrier, then one acq_rel atomic at GPU scope (release publishes the CTA's stores, acquire makes the other
CTAs' stores visible to the winner); the winner's loads go to L2 (`.cg`), never to a stale L1 line.
"""

from __future__ import annotations

import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait

from mxmoe.kernels.common import interpreting

__all__ = ["enter", "enter_as", "enter_first_wait", "last_arrival", "launch_options", "overlap_begin", "overlap_end"]


@triton.jit
def enter(INTERP: tl.constexpr):
    """Let the next grid launch, then wait for the previous one: the first statement of every v2 kernel."""
    if not INTERP:
        gdc_launch_dependents()
        gdc_wait()


@triton.jit
def enter_first_wait(INTERP: tl.constexpr):
    """Wait for the previous grid, then let the next one launch: the direct decode kernels (kernels/decode.py),
    whose dependent reads the caller's ids before its own wait. Every CTA of this grid has passed its wait before
    the dependent launches, so whatever ran before this grid has finished and is visible to it."""
    if not INTERP:
        gdc_wait()
        gdc_launch_dependents()


@triton.jit
def enter_as(FIRST_WAIT: tl.constexpr, INTERP: tl.constexpr):
    """`enter_first_wait` with FIRST_WAIT (the grid just before an `overlapped` one), else `enter`."""
    if FIRST_WAIT:
        enter_first_wait(INTERP)
    else:
        enter(INTERP)


@triton.jit
def overlap_begin(INTERP: tl.constexpr):
    """The first statement of an overlapped grid: one that reads only what was written before the previous grid
    started, so it works without waiting, and whose previous grid entered with `enter_first_wait` (every CTA of
    that grid had passed its wait when this one launched: whatever ran before it has finished). Pair with
    `overlap_end` as the last statement, so this grid finishes after the previous one (the next grid's wait then
    covers both)."""
    if not INTERP:
        gdc_launch_dependents()


@triton.jit
def overlap_end(INTERP: tl.constexpr):
    """See `overlap_begin`."""
    if not INTERP:
        gdc_wait()


@triton.jit
def last_arrival(counter_ptr, expected):
    """Count this CTA in at `counter_ptr`; True in the CTA that makes it `expected` (every other one has stored)."""
    tl.debug_barrier()
    return tl.atomic_add(counter_ptr, 1, sem="acq_rel", scope="gpu") == expected - 1


@triton.jit
def drain_wgmma(INTERP: tl.constexpr):
    """Wait until every wgmma this warpgroup issued has completed (rules.STAGE2_DRAIN: docs/architecture.md,
    "Known hazard"). No operand: the asm's side effect keeps it in place among the loop's wgmma and memory ops."""
    if not INTERP:
        tl.inline_asm_elementwise("wgmma.wait_group.sync.aligned 0;", "=r", [], dtype=tl.int32, is_pure=False,
                                  pack=1)


def launch_options(maxnreg: int = 0) -> dict[str, bool | int]:
    """The launch keywords of a v2 kernel: PDL on a GPU (the interpreter runs grids one after another), and the
    register cap `maxnreg` where it is not 0 (rules.direct_register_cap: the direct a8w4 stage 2's)."""
    if interpreting():
        return {}
    return {"launch_pdl": True, "maxnreg": maxnreg} if maxnreg else {"launch_pdl": True}

