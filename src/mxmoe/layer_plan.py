"""One layer's launches, decided once: the single composition of quantize -> align -> stage 1 -> stage 2.

Axis legend: T tokens, A topk, E experts, H hidden, I inter.

Why one owner (issue 25): the composition used to be rebuilt by hand in moe(), the sweep worker's per-stage timing,
`mxmoe bench` and the profiling scripts, and the copies drifted from what moe() runs: they quantized an MX path's
input as MX bytes where the v2 kernels take bf16 carriers (a refused launch), and left out the arrival counters the
align kernel zeroes and the sums stage 1 zeroes. Now every caller asks a `LayerPlan` for the pieces, and moe() is
`layer_plan(...).run(...)`, so a stage timed alone is the stage moe() launches.

Counters and sums are single-use: the arrival counters (`kernels/sync.py`) count one call's CTAs, and the atomic
combine's fp32 sums are added into once. `run` takes them from the align kernel and stage 1, as moe() does. A caller
that replays one stage many times (timing) routes with `counters=False` and passes no sums: each stage call then
allocates its own zeroed counters and sums, a memset inside what it times, never a wrong answer.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from mxmoe.config import MoEConfig
from mxmoe.kernels.align import align
from mxmoe.kernels.common import KernelInput, require_executable
from mxmoe.kernels.decode import DirectPlan, direct_plan, direct_stage1, direct_stage2
from mxmoe.kernels.quant import quantize_input, quantize_token_e4m3
from mxmoe.kernels.rules import counters_needed, finishes_atomic_in_kernel, quant_overlaps_align, runs_direct
from mxmoe.kernels.stage1 import stage1
from mxmoe.kernels.stage2 import stage2
from mxmoe.routing import RoutingPlan, max_padded_pairs
from mxmoe.shapes import MoEShape, Path
from mxmoe.weights import MoEWeights


@dataclass(frozen=True)
class LayerPlan:
    """What one (shape, path, config, T) launches. `counters1` / `counters2`: the v2 stages' arrival counters the
    (first) align kernel zeroes; `zero_in_stage1`: stage 1's programs zero stage 2's atomic sums (where the atomic
    combine finishes in the kernel), so no memset launch runs between the stages. `direct`: the direct decode layer
    (kernels/decode.py): no quantization or align kernel, the routing plan is the caller's ids, stage 1 returns fp32
    partial sums that stage 2 turns into h, and `counters2` are the ones stage 1 zeroes for stage 2.
    `overlap_quant`: `run` aligns first, then quantizes overlapped with the align kernels
    (`rules.quant_overlaps_align`)."""

    shape: MoEShape
    path: Path
    config: MoEConfig
    tokens: int
    counters1: int
    counters2: int
    zero_in_stage1: bool
    direct: bool = False
    overlap_quant: bool = False

    def quantize(self, hidden: torch.Tensor, *, early: bool = False) -> KernelInput:
        """The layer input at the path's width (bf16 carriers on the MX grid for the v2 kernels; the direct layer's
        stage 1 takes it unrounded and rounds it itself). `early`: overlapped with the align kernels just launched
        (`route(first_wait=True)`)."""
        if hidden.dtype is not torch.bfloat16:  # .to() of a bf16 tensor is a no-op that costs ~1 us of host time
            hidden = hidden.to(torch.bfloat16)
        hidden = hidden.contiguous()
        if self.direct:  # no quantize or align kernel checks the tensors here: the direct stages take them as given
            require_executable(hidden)
            return KernelInput(hidden, None, self.path)
        if self.config.stage1.mma.e4m3:
            return KernelInput(*quantize_token_e4m3(hidden), self.path)
        return quantize_input(hidden, self.path, bf16=self.config.stage1.mma.v2, early=early)

    def route(self, topk_ids: torch.Tensor, *, validate: bool = False, counters: bool = True,
              first_wait: bool = False) -> tuple[RoutingPlan, RoutingPlan] | tuple[DirectPlan, DirectPlan]:
        """The routing plans of stage 1 and stage 2 (one plan when their rows, `TileConfig.plan_rows`, agree); with
        `counters`, the first carries both stages' zeroed arrival counters (single-use: one `run`). `first_wait`:
        the last align kernel enters with `sync.enter_first_wait` (an overlapped quantization follows)."""
        if self.direct:
            plan = direct_plan(topk_ids, self.shape.experts, self.counters2 if counters else 0, validate=validate)
            return plan, plan
        e, (s1, s2) = self.shape.experts, (self.config.stage1, self.config.stage2)
        n = self.counters1 + self.counters2 if counters else 0
        one = s2.plan_rows == s1.plan_rows
        plan1 = align(topk_ids, e, s1.plan_rows, validate=validate, counters=n, first_wait=first_wait and one)
        plan2 = plan1 if one else align(topk_ids, e, s2.plan_rows, validate=False, first_wait=first_wait)
        return plan1, plan2

    def sums(self, device: torch.device) -> torch.Tensor | None:
        """Stage 2's fp32 [T, H] atomic sums, for stage 1 to zero (None where stage 2 zeroes its own)."""
        if not self.zero_in_stage1:
            return None
        return torch.empty(self.tokens, self.shape.hidden, dtype=torch.float32, device=device)

    def stage1(self, x: KernelInput, weights: MoEWeights, plan1: RoutingPlan, *, sums: torch.Tensor | None = None,
               poison: bool = False) -> KernelInput:
        """h [P, I] at the path's width (direct: fp32 [S1, P, 2I] partial sums, and the plan's counters zeroed);
        zeroes `sums` on the side when given."""
        if self.direct:
            return direct_stage1(x, weights, plan1, self.config.stage1, poison=poison)
        counters = plan1.counters[: self.counters1] if self.counters1 and plan1.counters is not None else None
        return stage1(x, weights, plan1, self.config.stage1, poison=poison, counters=counters, zero=sums)

    def stage2(self, h: KernelInput, weights: MoEWeights, plan1: RoutingPlan, plan2: RoutingPlan,
               topk_weights: torch.Tensor, *, sums: torch.Tensor | None = None, poison: bool = False) -> torch.Tensor:
        """bf16 [T, H]; `sums` are the atomic sums stage 1 zeroed (else stage 2 allocates and zeroes its own)."""
        if self.direct:
            return direct_stage2(h, weights, plan2, topk_weights, self.config.stage2, self.path, self.tokens,
                                 poison=poison)
        if self.config.stage2.mma.e4m3:  # h (on the MXFP8 grid) rebased to e4m3 with one scale per pair
            h = KernelInput(*quantize_token_e4m3(h.data), self.path)
        counters = None
        if self.counters2 and plan1.counters is not None:
            counters = plan1.counters[self.counters1 : self.counters1 + self.counters2]
        return stage2(h, weights, plan2, topk_weights.float(), self.config.stage2, self.tokens, poison=poison,
                      counters=counters, out=sums, zeroed=sums is not None)

    def run(self, hidden: torch.Tensor, weights: MoEWeights, topk_ids: torch.Tensor, topk_weights: torch.Tensor, *,
            validate: bool = True, poison: bool = False) -> torch.Tensor:
        """The whole layer, as moe() runs it: quantize, align (with the counters), stage 1, stage 2."""
        if self.overlap_quant:
            plan1, plan2 = self.route(topk_ids, validate=validate, first_wait=True)
            x = self.quantize(hidden, early=True)
        else:
            x = self.quantize(hidden)
            plan1, plan2 = self.route(topk_ids, validate=validate)
        sums = self.sums(hidden.device)
        h = self.stage1(x, weights, plan1, sums=sums, poison=poison)
        return self.stage2(h, weights, plan1, plan2, topk_weights, sums=sums, poison=poison)


@functools.lru_cache(maxsize=4096)
def layer_plan(shape: MoEShape, path: Path, config: MoEConfig, tokens: int) -> LayerPlan:
    """The LayerPlan of (shape, path, config, T): a pure function of its arguments and of the kernels' rule constants
    (`kernels/rules.py`), memoized so moe()'s host work per call is a lookup. A test that patches a rule constant
    calls `clear_plans()`."""
    v2 = config.stage1.mma.v2 and config.stage2.mma.v2
    n1 = n2 = 0
    if v2:  # the v1 kernels take no arrival counters
        pairs, stages = tokens * shape.topk, (config.stage1, config.stage2)
        b1, b2 = (max_padded_pairs(pairs, shape.experts, c.plan_rows) // c.plan_rows for c in stages)
        n1 = counters_needed(config.stage1, 1, shape.inter, shape.hidden, b1, tokens)
        n2 = counters_needed(config.stage2, 2, shape.hidden, shape.inter, b2, tokens)
    zero = v2 and finishes_atomic_in_kernel(config.stage2, shape.inter)
    if runs_direct(config, tokens, shape.topk, shape.inter):
        return LayerPlan(shape=shape, path=Path(path), config=config, tokens=tokens, counters1=0, counters2=n2,
                         zero_in_stage1=False, direct=True)
    return LayerPlan(shape=shape, path=Path(path), config=config, tokens=tokens, counters1=n1, counters2=n2,
                     zero_in_stage1=zero, overlap_quant=quant_overlaps_align(Path(path), config.stage1,
                                                                       tokens * shape.topk))


# moe()'s plans per call (mxmoe.moe.call_plan): kept here so that `clear_plans` forgets them with layer_plan's own.
CALL_PLANS: dict[tuple, LayerPlan] = {}


def clear_plans() -> None:
    """Forget every memoized plan, layer_plan's and moe()'s per-call ones: what a patched rule constant needs (a
    test, benchmarks/rule_ab.py). Clearing layer_plan's cache alone left moe() on its earlier plans, so a test
    that compared the sorted layer with the direct one ran the direct one twice."""
    layer_plan.cache_clear()
    CALL_PLANS.clear()
