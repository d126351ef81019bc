"""make_routing / make_problem.

Oracle: each routing distribution's defining property, counted directly on the ids; determinism by
equality of two draws. No tolerances except the routing weights' sums (1e-5).
"""

from __future__ import annotations

import pytest
import torch

from mxmoe.problem import FEW_ACTIVE_MIN, Problem, RoutingDist, make_problem, make_routing
from mxmoe.reference import moe_reference_from_weights
from mxmoe.routing import align_by_expert, experts_hit
from mxmoe.shapes import MODELS, Activation, MoEShape, Path

SILU_16 = MoEShape("silu-16", 16, 4, 64, 64, Activation.SILU)
SILU_64 = MoEShape("silu-64", 64, 6, 64, 64, Activation.SILU)
OAI_32 = MoEShape("oai-32", 32, 4, 64, 64, Activation.SWIGLU_OAI, bias=True)
SHARED = MoEShape("shared-33", 33, 5, 64, 64, Activation.SILU, shared_expert=True)
SHAPES = [MODELS["tiny"], MODELS["tiny-oai"], SILU_16, SILU_64, OAI_32, SHARED]


def _load(ids: torch.Tensor, e: int) -> torch.Tensor:
    return torch.bincount(ids.flatten().long(), minlength=e)


@pytest.mark.parametrize("dist", list(RoutingDist), ids=lambda d: d.value)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: s.name)
@pytest.mark.parametrize("tokens", [0, 1, 7, 100])
def test_routing_contract(shape: MoEShape, dist: RoutingDist, tokens: int) -> None:
    ids, w = make_routing(shape, tokens, dist, seed=5)
    assert ids.shape == (tokens, shape.topk) and ids.dtype == torch.int32
    assert w.shape == (tokens, shape.topk) and w.dtype == torch.float32
    if tokens:
        assert int(ids.min()) >= 0 and int(ids.max()) < shape.experts
        assert all(len(set(row)) == shape.topk for row in ids.tolist()), "experts distinct per token"
        assert bool((w > 0).all())
        routed = w[:, : shape.routed_topk].sum(-1)
        want = 1.0 if shape.activation is Activation.SWIGLU_OAI else 2.5  # softmax, or renormalised x 2.5
        torch.testing.assert_close(routed, torch.full_like(routed, want), atol=1e-5, rtol=1e-5)
    ids2, w2 = make_routing(shape, tokens, dist, seed=5)
    assert torch.equal(ids, ids2) and torch.equal(w, w2)


def test_seed_changes_routing() -> None:
    a, _ = make_routing(SILU_16, 50, "uniform", seed=0)
    b, _ = make_routing(SILU_16, 50, "uniform", seed=1)
    assert not torch.equal(a, b)


def test_shared_expert_is_last_with_weight_one() -> None:
    shape = MODELS["deepseek-v3-tp8"]
    for dist in RoutingDist:
        ids, w = make_routing(shape, 32, dist, seed=1)
        assert ids.shape == (32, 9)
        assert bool((ids[:, -1] == shape.experts - 1).all()) and bool((w[:, -1] == 1).all())
        assert int(ids[:, :-1].max()) < shape.experts - 1, "routed slots never pick the shared expert"


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: s.name)
def test_few_active(shape: MoEShape) -> None:
    ids, _ = make_routing(shape, 200, "few_active", seed=2)
    routed = ids[:, : shape.routed_topk]
    assert experts_hit(routed, shape.experts) <= max(shape.routed_topk, FEW_ACTIVE_MIN)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: s.name)
@pytest.mark.parametrize("tokens", [1, 3, 11, 16, 300])
def test_all_active(shape: MoEShape, tokens: int) -> None:
    ids, _ = make_routing(shape, tokens, "all_active", seed=3)
    pairs = tokens * shape.routed_topk
    want = min(shape.routed_experts, pairs) + (1 if shape.shared_expert else 0)
    assert experts_hit(ids, shape.experts) == want


@pytest.mark.parametrize("shape", [SILU_64, OAI_32], ids=lambda s: s.name)
def test_skewed_is_more_concentrated(shape: MoEShape) -> None:
    for seed in range(3):
        uni, _ = make_routing(shape, 512, "uniform", seed=seed)
        skw, _ = make_routing(shape, 512, "skewed", seed=seed)
        assert int(_load(skw, shape.experts).max()) > 1.5 * int(_load(uni, shape.experts).max())
        assert experts_hit(skw, shape.experts) < experts_hit(uni, shape.experts)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: s.name)
@pytest.mark.parametrize("tokens", [5, 40, 129, 700])
def test_sentinel_padding_counts(shape: MoEShape, tokens: int) -> None:
    """Every hit expert gets an odd count (1 + a multiple of 64 where T allows), so the last block of
    each run is mostly padding at every block_m."""
    ids, _ = make_routing(shape, tokens, "sentinel_padding", seed=4)
    load = _load(ids[:, : shape.routed_topk], shape.experts)[: shape.routed_experts]
    hit = load[load > 0]
    assert int(hit.sum()) == tokens * shape.routed_topk
    assert int(hit.numel()) == min(shape.routed_experts, tokens * shape.routed_topk)
    if tokens >= 65:  # room for 1 + 64k: the pairs that do not fit that pattern are at most one expert's
        assert int((hit % 64 != 1).sum()) <= 1
    plan = align_by_expert(ids, shape.experts, 16)
    uniform = align_by_expert(make_routing(shape, tokens, "uniform", seed=4)[0], shape.experts, 16)
    assert int(plan.num_padded) >= int(uniform.num_padded)


def test_problem_fields_and_determinism() -> None:
    shape = MODELS["tiny-oai"]
    p = make_problem(shape, "a8w4", 9, seed=7, routing="skewed")
    assert isinstance(p, Problem) and p.path is Path.A8W4 and p.routing is RoutingDist.SKEWED
    assert p.tokens == 9 and p.seed == 7 and p.shape is shape
    assert p.hidden.shape == (9, shape.hidden) and p.hidden.dtype == torch.bfloat16
    assert p.topk_ids.shape == (9, shape.topk) and p.topk_ids.dtype == torch.int32
    assert p.weights.num_experts == shape.experts and p.weights.b13 is not None
    q = make_problem(shape, "a8w4", 9, seed=7, routing="skewed")
    assert torch.equal(p.hidden, q.hidden) and torch.equal(p.topk_ids, q.topk_ids)
    assert torch.equal(p.weights.w13.data, q.weights.w13.data)
    assert not torch.equal(p.hidden, make_problem(shape, "a8w4", 9, seed=8).hidden)
    with pytest.raises(AttributeError):
        p.tokens = 3  # frozen


@pytest.mark.parametrize("name", ["tiny", "tiny-oai"])
def test_problem_reference(name: str) -> None:
    p = make_problem(MODELS[name], Path.A16W4, 16, seed=1)
    out = p.reference()
    assert out.shape == (16, p.shape.hidden) and out.dtype == torch.float32 and bool(torch.isfinite(out).all())
    again = moe_reference_from_weights(p.hidden, p.weights, p.topk_ids, p.topk_weights, p.path)
    assert torch.equal(out, again)
    # activations stay O(1) with MoEWeights.random's scales: useful for relative tolerances
    assert 0.05 < float(out.abs().mean()) < 50
    assert make_problem(MODELS[name], "a4w4", 0).reference().shape == (0, p.shape.hidden)


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        make_routing(SILU_16, -1)
    with pytest.raises(ValueError):
        make_routing(SILU_16, 4, "zipf")
    with pytest.raises(ValueError):
        make_problem(SILU_16, "a2w4", 4)
