"""The bulk L2 prefetch lever (kernels/prefetch.py, rules.prefetches*): when it is taken, and that it never changes
a result.

A prefetch only changes when bytes arrive, so the oracle is the layer itself with the lever off: on the GPU the
outputs must be bit for bit equal (the configs here use the deterministic finishes: split-K arrival sums and the
slots combine), and an address outside the weights would fault the launch. On the interpreter the prefetch is
nothing, but the early path's code (the ids read before the wait, clamped) runs, and the layer meets the fp32
oracle with the path's tolerance (mxmoe.tolerance, justified there).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from mxmoe.config import Combine, Mma, MoEConfig, TileConfig
from mxmoe.kernels import rules
from mxmoe.kernels.align import align
from mxmoe.layer_plan import layer_plan
from mxmoe.moe import moe
from mxmoe.problem import make_problem
from mxmoe.shapes import Activation, MoEShape, Path
from mxmoe.tolerance import assert_close

SHAPE = MoEShape("prefetch", 12, 4, 256, 128, Activation.SILU)
DECODE = TileConfig(block_m=16, block_n=64, block_k=128, split_k=2, mma=Mma.WGMMA)
SLOTS = DECODE.replace(split_k=1, combine=Combine.SLOTS)


def test_prefetch_rules():
    """Decode tiles prefetch; stage 1 adds the stage-2 weights while the hit experts' W2 fits the budget; the early
    prefetch needs the ids from the one-program align kernel (the torch plan and the two-launch path carry none)."""
    p = make_problem(SHAPE, Path.A16W4, 3, seed=1)
    assert rules.prefetches(DECODE) and not rules.prefetches(DECODE.replace(block_m=32))
    w2 = p.weights.w2_sw
    per_expert = w2.data.stride(0) + w2.scales.stride(0)
    assert rules.prefetches_next(DECODE, 12, p.weights)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(rules, "PREFETCH_NEXT_BUDGET", 3 * per_expert)
        assert rules.prefetches_next(DECODE, 3, p.weights) and not rules.prefetches_next(DECODE, 4, p.weights)
    plan = align(p.topk_ids, SHAPE.experts, 16)
    assert plan.topk_ids is p.topk_ids and rules.prefetches_early(DECODE, plan)
    assert not rules.prefetches_early(DECODE.replace(block_m=32), plan)
    assert not rules.prefetches_early(DECODE, dataclasses.replace(plan, topk_ids=None))
    big = torch.randint(0, SHAPE.experts, (700, 4), dtype=torch.int32)  # 2800 pairs: the two-launch path
    assert align(big, SHAPE.experts, 16).topk_ids is None


@pytest.mark.parametrize("tokens", [1, 3])
@pytest.mark.parametrize("path", list(Path))
def test_early_prefetch_layer_meets_the_oracle(tokens, path):
    """T=1 and 3 take stage 1's early path (the plan carries the ids); the layer still meets the oracle."""
    p = make_problem(SHAPE, path, tokens, seed=tokens)
    assert align(p.topk_ids, SHAPE.experts, 16).topk_ids is not None
    out = moe(p.hidden, p.weights, p.topk_ids, p.topk_weights, path, MoEConfig(DECODE, SLOTS), poison=True)
    assert_close(out.float(), p.reference(), path=path, stage="layer", name=f"T{tokens}")


@pytest.mark.gpu
@pytest.mark.parametrize("tokens", [1, 2, 5])
@pytest.mark.parametrize("early", [True, False], ids=["early", "after_wait"])
def test_prefetch_changes_no_bit_gpu(tokens, early, monkeypatch):
    """On the H100: the layer with every prefetch on (early or after the wait, stage-2 weights included) is bit for
    bit the layer with the lever off."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    p = make_problem(SHAPE, Path.A16W4, tokens, seed=11, device="cuda")
    cfg = MoEConfig(DECODE, SLOTS)
    monkeypatch.setattr(rules, "PREFETCH_EARLY", int(early))
    on = moe(p.hidden, p.weights, p.topk_ids, p.topk_weights, Path.A16W4, cfg)
    monkeypatch.setattr(rules, "PREFETCH_MAX_BLOCK_M", 0)
    layer_plan.cache_clear()
    off = moe(p.hidden, p.weights, p.topk_ids, p.topk_weights, Path.A16W4, cfg)
    layer_plan.cache_clear()
    assert torch.equal(on, off)
    assert_close(on.float(), p.reference(), path=Path.A16W4, stage="layer", name=f"T{tokens}")
