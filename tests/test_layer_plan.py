"""The layer plan (mxmoe.layer_plan): the one composition of quantize -> align -> stage 1 -> stage 2 that moe(), the
sweep worker's per-stage timing, `mxmoe bench` and the profiling scripts share.

Oracles: the fp32 reference (Problem.reference) with the path's layer tolerance (mxmoe.tolerance, justified there)
for the pieces composed by hand, and moe() itself, bit for bit, for the same pieces (same kernels, same order; the
interpreter runs the atomic adds in a fixed order, so the sums agree exactly). On the Triton interpreter.
"""

from __future__ import annotations

import pytest
import torch

from mxmoe.config import Combine, Mma, MoEConfig, TileConfig
from mxmoe.heuristic import default_config
from mxmoe.kernels.rules import counters_needed, finishes_atomic_in_kernel
from mxmoe.layer_plan import clear_plans, layer_plan
from mxmoe.moe import moe, shape_of
from mxmoe.problem import make_problem
from mxmoe.shapes import Activation, MoEShape, Path
from mxmoe.tolerance import assert_close

SHAPE = MoEShape("plan", 6, 3, 192, 128, Activation.SILU)


def _v2(split_k: int, combine: Combine) -> MoEConfig:
    s1 = TileConfig(block_m=16, block_n=64, block_k=64, mma=Mma.WGMMA, split_k=split_k)
    return MoEConfig(s1, s1.replace(split_k=1, combine=combine))


@pytest.mark.parametrize("path", list(Path), ids=lambda p: p.value)
@pytest.mark.parametrize("split_k,combine", [(1, Combine.ATOMIC), (3, Combine.SLOTS), (3, Combine.ATOMIC)])
def test_pieces_replayed_are_what_moe_runs(path, split_k, combine):
    """Each stage replayed alone (routed without the single-use counters, as the timing callers do) gives moe()'s
    answer: twice in a row (fresh counters each call, so a split-K finish or a slots combine is not skipped on
    the replay) and on every path (the MX paths take bf16 carriers: the hand-built copies quantized them as MX
    bytes, which the v2 stages refuse)."""
    p = make_problem(SHAPE, path, 21, seed=3)
    cfg = _v2(split_k, combine)
    lp = layer_plan(p.shape, path, cfg, 21)
    x = lp.quantize(p.hidden)
    plan1, plan2 = lp.route(p.topk_ids, counters=False)
    assert plan1.counters is None
    h = [lp.stage1(x, p.weights, plan1).data.clone() for _ in range(2)]
    assert torch.equal(h[0], h[1])
    outs = [lp.stage2(lp.stage1(x, p.weights, plan1), p.weights, plan1, plan2, p.topk_weights) for _ in range(2)]
    want = moe(p.hidden, p.weights, p.topk_ids, p.topk_weights, path, cfg)
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], want)
    assert_close(want.float(), p.reference(), path=path, stage="layer", name=f"{path.value}/sk{split_k}")


def test_plan_sizes_follow_the_kernels_rules(monkeypatch):
    """Counters are what the v2 stages need (counters_needed) and stage 1 zeroes the atomic sums exactly where the
    atomic combine finishes in the kernel; the v1 kernels take neither. Memoized: one plan per key."""
    from mxmoe.kernels import rules

    monkeypatch.setattr(rules, "ATOMIC_FINISH_MIN_K_STEPS", 1)
    clear_plans()  # memoized on its arguments: a patched rule needs a fresh plan
    p = make_problem(SHAPE, Path.A16W4, 21, seed=3)
    shape = shape_of(p.weights, 3)
    for cfg in (_v2(3, Combine.ATOMIC), _v2(1, Combine.SLOTS)):
        lp = layer_plan(shape, Path.A16W4, cfg, 21)
        assert lp is layer_plan(shape, Path.A16W4, cfg, 21)
        assert lp.zero_in_stage1 == finishes_atomic_in_kernel(cfg.stage2, SHAPE.inter)
        assert lp.counters2 == counters_needed(cfg.stage2, 2, SHAPE.hidden, SHAPE.inter, 0, 21)
        assert (lp.counters1 > 0) == (cfg.stage1.split_k > 1)
        plan1, _ = lp.route(p.topk_ids)
        assert plan1.counters is not None and plan1.counters.numel() == lp.counters1 + lp.counters2
    v1 = default_config(SHAPE, Path.A16W4, 21, kernels="v1", interpreter=True)
    lp = layer_plan(shape, Path.A16W4, v1, 21)
    assert (lp.counters1, lp.counters2, lp.zero_in_stage1) == (0, 0, False) and lp.sums(torch.device("cpu")) is None
    clear_plans()
