"""Routing and align_by_expert.

Oracle: `_plan_by_loops`, a plain-Python align written from the definition (no torch ops), and hand
computations of the routers. Exact integer equality throughout; router weights to 1e-6.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mxmoe.kernels.align import align
from mxmoe.routing import (
    RoutingPlan,
    add_shared_expert,
    align_by_expert,
    experts_hit,
    max_padded_pairs,
    route_grouped_sigmoid,
    route_topk_softmax,
)


def _plan_by_loops(ids: list[list[int]], e: int, block_m: int) -> tuple[list[int], list[int], list[int]]:
    """(sorted_ids used part, block_expert used part, padded offsets [E+1]) straight from the definition."""
    a = len(ids[0]) if ids else 0
    p = len(ids) * a
    sorted_ids: list[int] = []
    block_expert: list[int] = []
    offsets = [0]
    for expert in range(e):
        run = [t * a + s for t in range(len(ids)) for s in range(a) if ids[t][s] == expert]
        pad = -len(run) % block_m
        sorted_ids += run + [p] * pad
        block_expert += [expert] * ((len(run) + pad) // block_m)
        offsets.append(len(sorted_ids))
    return sorted_ids, block_expert, offsets


def _check_plan(plan: RoutingPlan, ids: torch.Tensor, e: int, block_m: int) -> None:
    t, a = ids.shape
    p = t * a
    want_sorted, want_blocks, want_offsets = _plan_by_loops(ids.tolist(), e, block_m)
    n = len(want_sorted)
    # static sizes
    assert plan.num_pairs == p and plan.num_experts == e and plan.block_m == block_m and plan.topk == a
    assert plan.max_blocks * block_m == max_padded_pairs(p, e, block_m) == plan.sorted_ids.numel()
    assert plan.block_expert.numel() == plan.max_blocks
    for x in (plan.sorted_ids, plan.block_expert, plan.expert_offsets, plan.num_padded):
        assert x.dtype == torch.int32 and x.device == ids.device
    # invariants before values
    sorted_ids = plan.sorted_ids.tolist()
    assert sorted(v for v in sorted_ids if v != p) == list(range(p)), "real ids are a permutation of range(P)"
    assert all(v == p for v in sorted_ids if not 0 <= v < p), "everything else is the sentinel"
    assert plan.num_padded.shape == (1,) and int(plan.num_padded) == n <= plan.max_padded
    assert n % block_m == 0
    flat = ids.flatten().tolist()
    for b in range(plan.max_blocks):
        blk = [v for v in sorted_ids[b * block_m : (b + 1) * block_m] if v != p]
        assert len({flat[v] for v in blk}) <= 1, f"block {b} mixes experts"
        if blk:
            assert int(plan.block_expert[b]) == flat[blk[0]]
    # values
    assert sorted_ids[:n] == want_sorted and sorted_ids[n:] == [p] * (len(sorted_ids) - n)
    assert plan.block_expert.tolist() == want_blocks + [-1] * (plan.max_blocks - len(want_blocks))
    assert plan.expert_offsets.tolist() == want_offsets


@dataclass(frozen=True)
class Case:
    name: str
    t: int
    a: int
    e: int
    block_m: int
    ids: list[list[int]] | None = None  # None: random with distinct experts per token


CASES = [
    Case("T=0", 0, 2, 4, 16),
    Case("one token", 1, 1, 4, 16),
    Case("all tokens on one expert", 40, 1, 4, 16, [[2]] * 40),
    Case("exact multiple of block_m", 32, 1, 2, 16, [[0]] * 16 + [[1]] * 16),
    Case("empty experts", 5, 2, 8, 16, [[1, 6]] * 5),
    Case("topk 1", 50, 1, 8, 32),
    Case("topk 7", 33, 7, 16, 16),
    Case("topk 9", 20, 9, 33, 64),
    Case("block_m 64", 100, 4, 8, 64),
    Case("block_m 1", 6, 2, 4, 1),
    Case("more experts than pairs", 3, 2, 64, 16),
]


def _ids_for(case: Case, dtype=torch.int32) -> torch.Tensor:
    if case.ids is not None:
        return torch.tensor(case.ids, dtype=dtype).reshape(case.t, case.a)
    g = torch.Generator().manual_seed(case.t * 1000 + case.a)
    return torch.rand(case.t, case.e, generator=g).argsort(dim=1)[:, : case.a].to(dtype)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_align_matches_loops(case: Case) -> None:
    ids = _ids_for(case)
    _check_plan(align_by_expert(ids, case.e, case.block_m), ids, case.e, case.block_m)


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
@pytest.mark.parametrize("block_m", [16, 32, 64])
def test_align_block_m_and_dtypes(block_m: int, dtype: torch.dtype) -> None:
    case = Case("", 77, 4, 16, block_m)
    ids = _ids_for(case, dtype)
    _check_plan(align_by_expert(ids, case.e, block_m), ids, case.e, block_m)


def test_t0_plan_is_empty() -> None:
    plan = align_by_expert(torch.zeros(0, 4, dtype=torch.int32), 8, 16)
    assert plan.max_blocks == 0 and plan.sorted_ids.numel() == 0 and int(plan.num_padded) == 0
    assert plan.expert_offsets.tolist() == [0] * 9


def test_p_max_is_tight_when_every_pair_is_alone() -> None:
    # every expert holds one pair: each pads by block_m - 1, which is the bound
    ids = torch.arange(8, dtype=torch.int32).reshape(4, 2)
    plan = align_by_expert(ids, 8, 16)
    assert int(plan.num_padded) == plan.max_padded == 8 * 16
    assert plan.block_expert.tolist() == list(range(8))


def test_validate_off_skips_the_range_check_only() -> None:
    ids = torch.tensor([[0, 1], [1, 2]], dtype=torch.int32)
    plan = align_by_expert(ids, 4, 16, validate=False)
    _check_plan(plan, ids, 4, 16)


@pytest.mark.parametrize(
    "ids, e, block_m, exc",
    [
        (torch.tensor([[0, 4]]), 4, 16, ValueError),
        (torch.tensor([[-1, 0]]), 4, 16, ValueError),
        (torch.tensor([[0.0, 1.0]]), 4, 16, TypeError),
        (torch.tensor([0, 1]), 4, 16, ValueError),
        (torch.tensor([[0, 1]]), 0, 16, ValueError),
        (torch.tensor([[0, 1]]), 4, 0, ValueError),
    ],
)
@pytest.mark.parametrize("fn", [align_by_expert, align], ids=["torch", "triton_or_fallback"])
def test_align_rejects_bad_input(fn, ids: torch.Tensor, e: int, block_m: int, exc: type) -> None:
    """Both entry points share routing's argument checks (kernels.align.align is what moe() calls)."""
    with pytest.raises(exc):
        fn(ids, e, block_m)


@settings(max_examples=60, deadline=None)
@given(
    t=st.integers(0, 40),
    a=st.integers(1, 9),
    extra_e=st.integers(0, 20),
    block_m=st.sampled_from([1, 4, 16, 32, 64]),
    seed=st.integers(0, 2**31 - 1),
    repeats=st.booleans(),
)
def test_align_property(t: int, a: int, extra_e: int, block_m: int, seed: int, repeats: bool) -> None:
    """Random ids (distinct per token, or with repeats: align must not care) against the loops."""
    e = a + extra_e
    g = torch.Generator().manual_seed(seed)
    if repeats:
        ids = torch.randint(0, e, (t, a), generator=g, dtype=torch.int64)
    else:
        ids = torch.rand(t, e, generator=g).argsort(dim=1)[:, :a].to(torch.int32)
    _check_plan(align_by_expert(ids, e, block_m), ids, e, block_m)


def test_experts_hit() -> None:
    assert experts_hit(torch.tensor([[0, 3], [3, 5]]), 8) == 3
    assert experts_hit(torch.zeros(0, 2, dtype=torch.int32), 8) == 0
    with pytest.raises(ValueError):
        experts_hit(torch.tensor([[0, 8]]), 8)


# ---- routers ----------------------------------------------------------------------------------------


def test_topk_softmax_by_hand() -> None:
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0], [5.0, -1.0, 4.0, 0.0]])
    ids, w = route_topk_softmax(logits, 2)
    assert ids.dtype == torch.int32 and w.dtype == torch.float32
    assert ids.tolist() == [[1, 3], [0, 2]]
    e1 = 1 / (1 + math.exp(-1))  # softmax of (x, x - 1)
    torch.testing.assert_close(w, torch.tensor([[e1, 1 - e1], [e1, 1 - e1]]), atol=1e-6, rtol=0)


def _grouped_by_hand(row: list[float], bias: list[float], topk: int, n_group: int, topk_group: int,
                     scale: float, renorm: bool) -> tuple[list[int], list[float]]:
    e = len(row)
    gs = e // n_group
    scores = [1 / (1 + math.exp(-x)) for x in row]
    choice = [s + b for s, b in zip(scores, bias, strict=True)]
    group_score = [sum(sorted(choice[g * gs : (g + 1) * gs], reverse=True)[:2]) for g in range(n_group)]
    kept = sorted(range(n_group), key=lambda g: -group_score[g])[:topk_group]
    allowed = [i for i in range(e) if i // gs in kept]
    ids = sorted(allowed, key=lambda i: -choice[i])[:topk]
    w = [scores[i] for i in ids]
    if renorm:
        total = sum(w) + 1e-20
        w = [x / total for x in w]
    return ids, [x * scale for x in w]


@pytest.mark.parametrize("renorm", [True, False])
def test_grouped_sigmoid_by_hand(renorm: bool) -> None:
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(6, 16, generator=g) * 2
    bias = torch.randn(16, generator=g) * 0.5
    ids, w = route_grouped_sigmoid(logits, bias, 3, 4, 2, routed_scaling_factor=2.5, renormalize=renorm)
    assert ids.dtype == torch.int32 and w.dtype == torch.float32 and ids.shape == (6, 3)
    for t in range(6):
        want_ids, want_w = _grouped_by_hand(logits[t].tolist(), bias.tolist(), 3, 4, 2, 2.5, renorm)
        assert ids[t].tolist() == want_ids
        torch.testing.assert_close(w[t], torch.tensor(want_w), atol=1e-6, rtol=1e-6)


def test_grouped_bias_selects_but_does_not_weigh() -> None:
    # a huge bias on expert 0 forces it in, but its weight is its own sigmoid score
    logits = torch.zeros(1, 4)
    bias = torch.tensor([10.0, 0.0, 0.0, 0.0])
    ids, w = route_grouped_sigmoid(logits, bias, 2, 1, 1, renormalize=False)
    assert ids[0, 0] == 0
    torch.testing.assert_close(w, torch.full((1, 2), 0.5))


def test_grouped_never_leaves_the_kept_groups() -> None:
    """Negative bias makes every choice score negative: a 0-masked (transformers) top-k would pick
    dropped-group experts here, a -inf mask cannot."""
    g = torch.Generator().manual_seed(0)
    n_group, topk_group, gs = 8, 3, 4
    logits = torch.randn(200, n_group * gs, generator=g)
    bias = torch.full((n_group * gs,), -2.0)
    ids, _ = route_grouped_sigmoid(logits, bias, 6, n_group, topk_group)
    choice = torch.sigmoid(logits) + bias
    group_score = choice.view(200, n_group, gs).topk(2, dim=-1).values.sum(-1)
    kept = group_score.topk(topk_group, dim=-1).indices
    for t in range(200):
        assert set((ids[t] // gs).tolist()) <= set(kept[t].tolist())
        assert len(set(ids[t].tolist())) == 6


def test_grouped_group_of_one() -> None:
    # group size 1: the group score is the one expert's choice (top-min(2, 1))
    ids, w = route_grouped_sigmoid(torch.tensor([[0.0, 2.0, 1.0, -1.0]]), None, 2, 4, 2, renormalize=True)
    assert ids.tolist() == [[1, 2]]
    torch.testing.assert_close(w.sum(), torch.tensor(1.0))


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(topk=2, n_group=3, topk_group=1),  # 3 does not divide 16
        dict(topk=2, n_group=4, topk_group=5),  # more kept groups than groups
        dict(topk=9, n_group=4, topk_group=2),  # 9 > 2 groups x 4
        dict(topk=17, n_group=1, topk_group=1),  # topk > E
    ],
)
def test_grouped_rejects_bad_config(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        route_grouped_sigmoid(torch.zeros(2, 16), None, **kwargs)


def test_add_shared_expert() -> None:
    ids = torch.tensor([[0, 2], [1, 3]], dtype=torch.int32)
    w = torch.tensor([[0.7, 0.3], [0.6, 0.4]])
    ids2, w2 = add_shared_expert(ids, w, shared_id=4)
    assert ids2.dtype == torch.int32 and ids2.tolist() == [[0, 2, 4], [1, 3, 4]]
    assert w2[:, -1].tolist() == [1.0, 1.0] and torch.equal(w2[:, :2], w)
    e_ids, e_w = add_shared_expert(torch.zeros(0, 2, dtype=torch.int32), torch.zeros(0, 2), 4)
    assert e_ids.shape == (0, 3) and e_w.shape == (0, 3)


@pytest.mark.gpu
def test_align_is_graph_capturable_without_sync() -> None:
    """validate=False: no host sync (sync debug mode errors on one) and a captured graph replays new ids."""
    e, block_m = 16, 32
    g = torch.Generator().manual_seed(0)
    draw = lambda: torch.rand(300, e, generator=g).argsort(dim=1)[:, :4].to(torch.int32).cuda()
    static_ids = draw()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        align_by_expert(static_ids, e, block_m, validate=False)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        align_by_expert(static_ids, e, block_m, validate=False)  # warm-up off the capture
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        plan = align_by_expert(static_ids, e, block_m, validate=False)
    for _ in range(3):
        ids = draw()
        static_ids.copy_(ids)
        graph.replay()
        torch.cuda.synchronize()
        _check_plan(plan, ids, e, block_m)
