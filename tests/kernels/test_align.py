"""The align kernels (mxmoe.kernels.align: one program, or the two-launch chunked path) against the torch
align_by_expert.

Oracle: `mxmoe.routing.align_by_expert` (itself checked against plain loops in tests/test_routing.py).
Tolerance: none; every tensor of the plan must be bit-identical (same dtype, shape and values), and the
int fields equal. On CPU the kernel runs on the Triton interpreter (tests/conftest.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import mxmoe.kernels.align as align_mod
from mxmoe.kernels.align import MAX_TRITON_PAIRS, align, align_by_expert_triton
from mxmoe.routing import RoutingPlan, align_by_expert

# the kernel runs on CUDA where there is a GPU, else on the interpreter (tests/conftest.py)
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
_TENSORS = ("sorted_ids", "block_expert", "expert_offsets", "num_padded")
_INTS = ("block_m", "num_pairs", "num_experts", "max_blocks", "topk")


def _assert_same_plan(got: RoutingPlan, want: RoutingPlan) -> None:
    for name in _INTS:
        assert getattr(got, name) == getattr(want, name), name
    for name in _TENSORS:
        g, w = getattr(got, name), getattr(want, name)
        assert g.dtype == w.dtype == torch.int32 and g.shape == w.shape and g.device == w.device, name
        bad = (g != w).nonzero().flatten()
        assert bad.numel() == 0, f"{name}: {bad.numel()} slots differ, first at {bad[:8].tolist()}: " \
                                 f"got {g[bad[:8]].tolist()}, want {w[bad[:8]].tolist()}"


def _check(ids: torch.Tensor, e: int, block_m: int) -> RoutingPlan:
    ids = ids.to(DEVICE)
    got = align_by_expert_triton(ids, e, block_m)
    p = ids.numel()
    real = got.sorted_ids[got.sorted_ids != p]
    assert torch.equal(real.sort().values.long(), torch.arange(p, device=DEVICE)), "real ids: a permutation of P"
    assert int(got.expert_offsets[-1]) == int(got.num_padded[0])
    _assert_same_plan(got, align_by_expert(ids, e, block_m))
    return got


@dataclass(frozen=True)
class Case:
    name: str
    t: int
    a: int
    e: int
    block_m: int
    ids: str = "distinct"  # distinct experts per token | repeats (any ids) | one (all pairs on expert e//2)


CASES = [
    Case("T=0", 0, 8, 4, 16),
    Case("T=1", 1, 8, 256, 16),
    Case("T=1 topk 1", 1, 1, 4, 16),
    Case("E=1", 17, 1, 1, 16, "one"),
    Case("all tokens on one expert", 40, 1, 4, 16, "one"),
    Case("all pairs on one expert, topk 8", 300, 8, 257, 64, "one"),
    Case("empty experts (E >> P)", 3, 2, 385, 16),
    Case("topk 1", 50, 1, 8, 32),
    Case("topk 7", 33, 7, 16, 16),
    Case("topk 9", 20, 9, 33, 64),
    Case("E=4 repeats", 77, 4, 4, 16, "repeats"),
    Case("E=257", 64, 8, 257, 16),
    Case("E=385", 61, 9, 385, 128),
    Case("E=512", 40, 8, 512, 16),
    Case("block_m 1", 6, 2, 4, 1),
    Case("block_m 128", 100, 4, 8, 128),
    Case("block_m 256", 50, 8, 256, 256),
    Case("P = 128 (smallest lane block)", 16, 8, 256, 16),
    Case("P = 129", 43, 3, 64, 16),
    Case("P = 1024 (a power of two)", 128, 8, 256, 64),
    Case("P = 1025", 205, 5, 128, 32, "repeats"),
    Case("P = 2048 (the most one program takes)", 256, 8, 1024, 16),
    Case("P = 2049 (two launches, 3 programs)", 683, 3, 64, 16, "repeats"),
    Case("P = 3000, 3 programs", 375, 8, 256, 16),
    Case("P = 2304, all on one expert", 288, 8, 64, 128, "one"),
]


def _ids(case: Case, dtype: torch.dtype = torch.int32) -> torch.Tensor:
    g = torch.Generator().manual_seed(case.t * 1000 + case.a * 10 + case.e)
    if case.ids == "one":
        return torch.full((case.t, case.a), case.e // 2, dtype=dtype)
    if case.ids == "repeats":
        return torch.randint(0, case.e, (case.t, case.a), generator=g, dtype=dtype)
    return torch.rand(case.t, case.e, generator=g).argsort(dim=1)[:, : case.a].to(dtype)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_kernel_matches_torch(case: Case) -> None:
    _check(_ids(case), case.e, case.block_m)


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
def test_id_dtypes_and_strided_ids(dtype: torch.dtype) -> None:
    ids = _ids(Case("", 70, 6, 40, 16), dtype)
    _check(ids, 40, 16)
    strided = ids.to(DEVICE).t().contiguous().t()  # [T, A] with strides (1, T)
    assert not strided.is_contiguous()
    _check(strided, 40, 16)


def test_t0_plan_is_empty() -> None:
    plan = align_by_expert_triton(torch.zeros(0, 8, dtype=torch.int32, device=DEVICE), 16, 64)
    assert plan.max_blocks == 0 and plan.sorted_ids.numel() == 0 and int(plan.num_padded) == 0
    assert plan.expert_offsets.tolist() == [0] * 17


def test_two_launches_with_small_programs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Programs of 128 lanes and 4 histograms summed per step: 24 programs, 6 prefix steps. Same plan."""
    monkeypatch.setattr(align_mod, "CHUNK_LANES", 128)
    monkeypatch.setattr(align_mod, "PREFIX_INTS", 4 * 128)
    _check(_ids(Case("", 600, 5, 96, 32, "repeats")), 96, 32)


def test_kernel_refuses_what_it_cannot_hold() -> None:
    one = torch.zeros(1, 1, dtype=torch.int32, device=DEVICE)
    with pytest.raises(ValueError, match="num_experts"):
        align_by_expert_triton(one, align_mod.MAX_TRITON_EXPERTS + 1, 16)
    with pytest.raises(ValueError, match="exceeds"):
        align_by_expert_triton(torch.zeros(MAX_TRITON_PAIRS + 1, 1, dtype=torch.int32, device=DEVICE), 4, 16)


# ---- align(): validation and path choice ------------------------------------------------------------


@pytest.fixture
def no_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the kernel path fail loudly, so a test can prove align() took the torch path."""

    def refuse(*args, **kwargs):
        raise AssertionError("align() took the kernel path")

    monkeypatch.setattr(align_mod, "align_by_expert_triton", refuse)


@pytest.mark.parametrize("t", [256, 257])
def test_align_picks_by_size(t: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """P = MAX_TRITON_PAIRS takes the kernels; one token more (P = MAX + 8) falls back. Same plan. (The limit is
    lowered to 2048 pairs here: the interpreter would take minutes at the real one.)"""
    monkeypatch.setattr(align_mod, "MAX_TRITON_PAIRS", 2048)
    ids = _ids(Case("", t, 8, 256, 16)).to(DEVICE)
    used = []
    real = align_mod.align_by_expert_triton
    monkeypatch.setattr(align_mod, "align_by_expert_triton", lambda *a, **k: used.append(1) or real(*a, **k))
    _assert_same_plan(align(ids, 256, 16), align_by_expert(ids, 256, 16))
    assert bool(used) == (ids.numel() <= 2048)


def test_align_just_past_the_limit_falls_back(no_kernel: None) -> None:
    ids = torch.randint(0, 8, (MAX_TRITON_PAIRS + 1, 1), dtype=torch.int32, device=DEVICE)
    _assert_same_plan(align(ids, 8, 16), align_by_expert(ids, 8, 16))


def test_align_falls_back_on_cpu_without_interpreter(no_kernel: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("mxmoe.kernels.common._INTERPRETED", False)  # kernels decorated for a GPU
    ids = _ids(Case("", 9, 4, 16, 16))
    _assert_same_plan(align(ids, 16, 16), align_by_expert(ids, 16, 16))


def test_kernel_refuses_cpu_without_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match="CUDA"):
        align_by_expert_triton(torch.zeros(2, 2, dtype=torch.int32), 4, 16)


def test_out_of_range_ids_without_validation_stay_in_bounds() -> None:
    """validate=False with bad ids: the plan is unspecified, but the kernel runs and writes only its outputs
    (the interpreter raises on an access out of bounds)."""
    ids = torch.tensor([[0, 5], [-3, 1], [7, 9], [2, 3]], dtype=torch.int32, device=DEVICE)
    plan = align(ids, 4, 16, validate=False)
    assert plan.sorted_ids.numel() == plan.max_padded


# ---- property ---------------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    t=st.integers(0, 48),
    a=st.integers(1, 9),
    extra_e=st.integers(0, 40),
    block_m=st.sampled_from([1, 16, 32, 64, 128, 256]),
    seed=st.integers(0, 2**31 - 1),
    repeats=st.booleans(),
    int64=st.booleans(),
)
def test_kernel_property(t: int, a: int, extra_e: int, block_m: int, seed: int, repeats: bool, int64: bool) -> None:
    """Random small routings (distinct experts per token, or any ids) give the torch plan bit for bit."""
    e = a + extra_e
    g = torch.Generator().manual_seed(seed)
    dtype = torch.int64 if int64 else torch.int32
    if repeats:
        ids = torch.randint(0, e, (t, a), generator=g, dtype=dtype)
    else:
        ids = torch.rand(t, e, generator=g).argsort(dim=1)[:, :a].to(dtype)
    _check(ids, e, block_m)


# ---- GPU --------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("block_m", [16, 64])
@pytest.mark.parametrize("t", [1, 16, 128, 1024, 4096, 32768])
def test_gpu_matches_torch_and_replays_in_a_graph(t: int, block_m: int) -> None:
    """On CUDA: the kernel's plan equals torch's; captured once in a CUDA graph, it follows ids changed in
    place (no host sync, no data-dependent size)."""
    e, a = 256, 8
    dev = torch.device("cuda")
    g = torch.Generator().manual_seed(t)
    first = torch.rand(t, e, generator=g).argsort(dim=1)[:, :a].to(torch.int32).to(dev)
    second = torch.randint(0, e // 4, (t, a), generator=g, dtype=torch.int32).to(dev)  # skewed, repeats

    _assert_same_plan(align_by_expert_triton(first, e, block_m), align_by_expert(first, e, block_m))

    ids = first.clone()
    align_by_expert_triton(ids, e, block_m)  # compile outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        plan = align_by_expert_triton(ids, e, block_m)
    for new in (second, first):
        ids.copy_(new)
        graph.replay()
        torch.cuda.synchronize()
        _assert_same_plan(plan, align_by_expert(new, e, block_m))


@pytest.mark.parametrize("kernel", [True, False], ids=["kernel", "torch"])
def test_align_hands_out_zeroed_counters(kernel: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """`counters=n` comes back as n int32 zeros beside an unchanged plan, from the kernel (which writes them into
    its one allocation, poisoned here first) and from the torch fallback alike."""
    ids = _ids(Case("", 5, 3, 16, 16)).to(DEVICE)
    if kernel:
        real_empty = torch.empty
        monkeypatch.setattr(align_mod.torch, "empty", lambda *a, **k: real_empty(*a, **k).fill_(-7))
    else:
        monkeypatch.setattr(align_mod, "MAX_TRITON_PAIRS", 0)
    plan = align(ids, 16, 16, counters=1500)
    _assert_same_plan(plan, align_by_expert(ids, 16, 16))
    assert plan.counters is not None and plan.counters.dtype == torch.int32
    assert plan.counters.numel() == 1500 and not plan.counters.any()
    assert align(ids, 16, 16).counters is None
