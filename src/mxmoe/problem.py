"""Problem: the one input maker. Weights, hidden states and routing for (shape, path, T, seed, routing).

Axis legend: T tokens, E experts, A topk, H hidden.

Every benchmark, test and sweep candidate builds its inputs here, so a measurement is reproducible from
(shape, path, tokens, seed, routing) alone. Draws use CPU torch.Generators and are moved afterwards, so
the same seed gives the same tensors on every device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mxmoe.reference import moe_reference_from_weights
from mxmoe.routing import add_shared_expert, route_grouped_sigmoid, route_topk_softmax
from mxmoe.shapes import Activation, MoEShape, Path, RoutingDist
from mxmoe.weights import MoEWeights

ZIPF_EXPONENT = 1.2  # skewed routing: popularity of the r-th expert ~ r**-1.2
DEEPSEEK_SCALING = 2.5  # routed_scaling_factor of DeepSeek-V3 and Kimi-K2
FEW_ACTIVE_MIN = 4  # few_active routes every token among max(topk, 4) experts
# sentinel_padding: hit experts get counts of 1 + a multiple of 64, so every block_m in {16, 32, 64}
# leaves a last block per expert with one real pair and block_m - 1 sentinels.
_PADDING_STEP = 64
_HIDDEN_STREAM = 0x5EED  # hidden states and routing use independent generator streams of one seed


def _router(shape: MoEShape, logits: torch.Tensor, topk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The shape's own router on logits [T, E'] (GPT-OSS softmax top-k, or DeepSeek grouped sigmoid)."""
    if shape.activation is Activation.SWIGLU_OAI:
        return route_topk_softmax(logits, topk)
    e = logits.shape[1]
    n_group = 8 if e % 8 == 0 else 1
    group_size = e // n_group
    topk_group = min(n_group, max(4 if n_group > 1 else 1, -(-topk // group_size)))
    return route_grouped_sigmoid(logits, None, topk, n_group, topk_group, DEEPSEEK_SCALING)


def _weights_for(shape: MoEShape, logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Routing weights for ids chosen by hand, computed as the shape's router would from the logits."""
    picked = logits.gather(1, ids.long())  # [T, A]
    if shape.activation is Activation.SWIGLU_OAI:
        return torch.softmax(picked, dim=-1)
    s = torch.sigmoid(picked)
    return s / (s.sum(dim=-1, keepdim=True) + 1e-20) * DEEPSEEK_SCALING


def _few_active(t: int, e: int, a: int, g: torch.Generator) -> torch.Tensor:
    n = min(e, max(a, FEW_ACTIVE_MIN))
    chosen = torch.randperm(e, generator=g)[:n]  # [n]
    local = torch.rand(t, n, generator=g).argsort(dim=1)[:, :a]  # [T, A] distinct within a token
    return chosen[local]


def _all_active(t: int, e: int, a: int, g: torch.Generator) -> torch.Tensor:
    """Round-robin first (pair j -> token j % T, expert j), then random distinct experts per token."""
    forced = torch.zeros(t, e, dtype=torch.bool)
    j = torch.arange(min(e, t * a))
    forced[j % t, j] = True  # token t gets experts t, t+T, ...: at most ceil(E/T) <= A of them
    score = torch.rand(t, e, generator=g) + forced.float() * 2  # forced experts sort first
    ids = score.topk(a, dim=1).indices  # [T, A]
    return torch.randperm(e, generator=g)[ids]  # relabel so expert 0 is not always token 0's


def _padding_counts(p: int, e: int, t: int) -> torch.Tensor:
    """Pairs per expert summing to p, each <= t: every expert hit once, then steps of 64 (a count of
    1 + 64k leaves block_m - 1 padded slots at every block_m dividing 64), the rest on as few experts
    as possible."""
    counts = torch.zeros(e, dtype=torch.int64)
    counts[: min(e, p)] = 1
    left = p - min(e, p)
    while left >= _PADDING_STEP:
        room = torch.nonzero(counts + _PADDING_STEP <= t).flatten()[: left // _PADDING_STEP]
        if room.numel() == 0:
            break
        counts[room] += _PADDING_STEP
        left -= _PADDING_STEP * room.numel()
    for i in range(e):
        add = min(left, t - int(counts[i]))
        counts[i] += add
        left -= add
    assert left == 0, "E >= A, so E * T slots hold the T * A pairs"
    return counts


def _sentinel_padding(t: int, e: int, a: int, g: torch.Generator) -> torch.Tensor:
    """Expert runs laid out column-major (pair j -> token j % T, slot j // T): a run of <= T pairs
    lands on distinct tokens, so every token's experts are distinct."""
    counts = _padding_counts(t * a, e, t)
    experts = torch.randperm(e, generator=g)
    runs = torch.repeat_interleave(experts, counts)  # [P]
    ids = runs.view(a, t).T  # [T, A]
    return ids[torch.randperm(t, generator=g)]


def make_routing(
    shape: MoEShape,
    tokens: int,
    dist: RoutingDist | str = RoutingDist.UNIFORM,
    *,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """topk_ids int32 [T, A] and topk_weights f32 [T, A] for `tokens` tokens under `dist`.

    Shapes with a fused shared expert route among the routed experts with routed_topk, then append the
    shared expert (id E-1, weight 1) as the last slot.
    """
    dist = RoutingDist(dist)
    if not isinstance(tokens, int) or tokens < 0:
        raise ValueError(f"tokens={tokens!r} must be a non-negative int")
    g = torch.Generator(device="cpu").manual_seed(seed)
    t, e, a = tokens, shape.routed_experts, shape.routed_topk
    logits = torch.randn(t, e, generator=g)  # [T, E']
    if dist is RoutingDist.UNIFORM:
        ids, weights = _router(shape, logits, a)
    elif dist is RoutingDist.SKEWED:
        rank = torch.randperm(e, generator=g).float() + 1  # [E'] popularity rank of each expert
        ids, weights = _router(shape, logits - ZIPF_EXPONENT * torch.log(rank), a)
    else:
        make = {
            RoutingDist.FEW_ACTIVE: _few_active,
            RoutingDist.ALL_ACTIVE: _all_active,
            RoutingDist.SENTINEL_PADDING: _sentinel_padding,
        }[dist]
        ids = make(t, e, a, g).to(torch.int32)
        weights = _weights_for(shape, logits, ids)
    if shape.shared_expert:
        ids, weights = add_shared_expert(ids, weights, shared_id=shape.experts - 1)
    return ids.to(device=device, dtype=torch.int32), weights.to(device=device, dtype=torch.float32)


@dataclass(frozen=True, slots=True)
class Problem:
    """Everything one MoE layer call needs, reproducible from (shape, path, tokens, seed, routing).

    hidden [T, H] bf16; topk_ids int32 [T, A]; topk_weights f32 [T, A]; weights MXFP4 MoEWeights.
    """

    shape: MoEShape
    path: Path
    tokens: int
    seed: int
    routing: RoutingDist
    hidden: torch.Tensor
    weights: MoEWeights
    topk_ids: torch.Tensor
    topk_weights: torch.Tensor

    def reference(self) -> torch.Tensor:
        """The oracle's answer, f32 [T, H]."""
        return moe_reference_from_weights(self.hidden, self.weights, self.topk_ids, self.topk_weights, self.path)


def make_problem(
    shape: MoEShape,
    path: Path | str,
    tokens: int,
    *,
    seed: int = 0,
    routing: RoutingDist | str = RoutingDist.UNIFORM,
    device: torch.device | str = "cpu",
) -> Problem:
    """Draw a Problem; nothing is cached, so a caller that wants reuse keeps the Problem."""
    path, routing = Path(path), RoutingDist(routing)
    ids, weights = make_routing(shape, tokens, routing, seed=seed, device=device)
    g = torch.Generator(device="cpu").manual_seed(seed ^ _HIDDEN_STREAM)
    hidden = torch.randn(tokens, shape.hidden, generator=g).to(device=device, dtype=torch.bfloat16)
    return Problem(
        shape=shape,
        path=path,
        tokens=tokens,
        seed=seed,
        routing=routing,
        hidden=hidden,
        weights=MoEWeights.random(shape, seed=seed, device=device),
        topk_ids=ids,
        topk_weights=weights,
    )
