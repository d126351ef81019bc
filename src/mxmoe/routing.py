"""Routing: router logits -> top-k experts per token, then the expert-sorted, padded plan the kernels read.

Axis legend: T tokens, E experts, A topk (slots per token), P = T*A (token, slot) pairs,
P_max the static padded bound of P, NB = P_max // block_m blocks.

Glossary of the plan's index arrays (`RoutingPlan`):
  pair id p          t * A + a: slot a of token t, the row of the [T*A, I] stage-1 intermediate
  sorted_ids   [P_max]  pair ids grouped by expert (ascending expert, then ascending p), each expert's
                        run padded to a multiple of block_m with the sentinel P (kernels skip it)
  block_expert [NB]     the one expert of each block_m-block of sorted_ids; -1 past the used length
  expert_offsets [E+1]  start of each expert's padded run in sorted_ids; the last entry is num_padded
  num_padded   [1]      used length of sorted_ids, a device tensor so no host sync is needed

`align_by_expert` never reads device data back to the host (no .item(), .tolist(), nonzero or boolean
masks; every size is a static function of T, A, E and block_m), so moe() can run it inside a CUDA graph.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

_ID_DTYPES = (torch.int32, torch.int64)


def _check_logits(logits: torch.Tensor, topk: int) -> None:
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"router logits must be a torch.Tensor, got {type(logits).__name__}")
    if logits.dim() != 2:
        raise ValueError(f"router logits must be 2-D [T, E], got shape {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise TypeError(f"router logits must be floating point, got {logits.dtype}")
    if not isinstance(topk, int) or not 1 <= topk <= logits.shape[1]:
        raise ValueError(f"topk={topk!r} must be an int in [1, E={logits.shape[1]}]")


def route_topk_softmax(logits: torch.Tensor, topk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """GPT-OSS routing: top-k of the logits, then softmax over the k selected.

    logits: [T, E] float. Returns ids int32 [T, A] and weights f32 [T, A], sorted by descending logit
    (torch.topk order), so slot 0 is each token's favourite expert.
    """
    _check_logits(logits, topk)
    values, ids = torch.topk(logits.float(), topk, dim=-1)  # [T, A]
    return ids.to(torch.int32), torch.softmax(values, dim=-1)


def route_grouped_sigmoid(
    logits: torch.Tensor,
    correction_bias: torch.Tensor | None,
    topk: int,
    n_group: int,
    topk_group: int,
    routed_scaling_factor: float = 1.0,
    renormalize: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """DeepSeek-V3 / Kimi-K2 routing (transformers' DeepseekV3 `route_tokens_to_experts`).

    scores = sigmoid(logits); choice = scores + correction_bias; a group's score is the sum of its two
    best choices; the topk_group best groups are kept; the top-k choices within them are picked; their
    weights are the scores *without* the bias, divided by their sum (+1e-20) when `renormalize`, times
    `routed_scaling_factor`.

    One deliberate difference from transformers: experts of dropped groups are masked to -inf rather than
    0, so a negative correction bias can never let a dropped group's expert win (vLLM's grouped_topk does
    the same).  Returns ids int32 [T, A] and weights f32 [T, A], sorted by descending choice score.
    """
    _check_logits(logits, topk)
    t, e = logits.shape
    if not isinstance(n_group, int) or n_group < 1 or e % n_group:
        raise ValueError(f"n_group={n_group!r} must be a positive int dividing E={e}")
    if not isinstance(topk_group, int) or not 1 <= topk_group <= n_group:
        raise ValueError(f"topk_group={topk_group!r} must be an int in [1, n_group={n_group}]")
    group_size = e // n_group
    if topk > topk_group * group_size:
        raise ValueError(
            f"topk={topk} exceeds the {topk_group} kept groups x {group_size} experts = {topk_group * group_size}"
        )
    if correction_bias is not None and tuple(correction_bias.shape) != (e,):
        raise ValueError(f"correction_bias shape {tuple(correction_bias.shape)}, expected ({e},)")

    scores = torch.sigmoid(logits.float())  # [T, E]
    choice = scores if correction_bias is None else scores + correction_bias.float().to(scores.device)
    grouped = choice.view(t, n_group, group_size)  # [T, G, E/G]
    group_scores = grouped.topk(min(2, group_size), dim=-1).values.sum(dim=-1)  # [T, G]
    kept = torch.topk(group_scores, topk_group, dim=-1).indices  # [T, topk_group]
    group_mask = torch.zeros_like(group_scores, dtype=torch.bool).scatter_(1, kept, True)  # [T, G]
    expert_mask = group_mask.unsqueeze(-1).expand(t, n_group, group_size).reshape(t, e)  # [T, E]
    masked = choice.masked_fill(~expert_mask, float("-inf"))
    ids = torch.topk(masked, topk, dim=-1).indices  # [T, A]
    weights = scores.gather(1, ids)
    if renormalize:
        weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
    return ids.to(torch.int32), weights * routed_scaling_factor


def add_shared_expert(
    ids: torch.Tensor, weights: torch.Tensor, shared_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fuse a shared expert as #708 measures it: one more slot per token, id `shared_id`, weight 1.

    ids [T, A], weights [T, A] -> ids [T, A+1] (same dtype), weights [T, A+1]; the shared slot is last.
    """
    if ids.dim() != 2 or tuple(weights.shape) != tuple(ids.shape):
        raise ValueError(f"ids {tuple(ids.shape)} and weights {tuple(weights.shape)} must both be [T, A]")
    t = ids.shape[0]
    shared_ids = torch.full((t, 1), shared_id, dtype=ids.dtype, device=ids.device)
    ones = torch.ones((t, 1), dtype=weights.dtype, device=weights.device)
    return torch.cat([ids, shared_ids], dim=1), torch.cat([weights, ones], dim=1)


@dataclass(frozen=True, slots=True)
class RoutingPlan:
    """(token, slot) pairs sorted by expert and padded so that each block_m block holds one expert.

    Tensors (all int32, on the routing's device): sorted_ids [max_blocks * block_m], block_expert
    [max_blocks], expert_offsets [num_experts + 1], num_padded [1]. See the module glossary.
    Ints: num_pairs = T * topk (also the sentinel), max_blocks = P_max // block_m.
    `counters`: int32 zeros the caller asked `align` for (the v2 stages' arrival counters, kernels/sync.py), or
    None.
    """

    sorted_ids: torch.Tensor
    block_expert: torch.Tensor
    expert_offsets: torch.Tensor
    num_padded: torch.Tensor
    block_m: int
    num_pairs: int
    num_experts: int
    max_blocks: int
    topk: int
    counters: torch.Tensor | None = None

    @property
    def sentinel(self) -> int:
        """The pair id that marks a padded slot (= num_pairs, one past the last real pair)."""
        return self.num_pairs

    @property
    def max_padded(self) -> int:
        """P_max, the static length of sorted_ids."""
        return self.max_blocks * self.block_m


def max_padded_pairs(num_pairs: int, num_experts: int, block_m: int) -> int:
    """P_max = round_up(P + min(E, P) * (block_m - 1), block_m): only experts with a token are padded,
    each by at most block_m - 1 slots, so this bounds the used length without reading the routing."""
    bound = num_pairs + min(num_experts, num_pairs) * (block_m - 1)
    return -(-bound // block_m) * block_m


def _check_ids(topk_ids: torch.Tensor) -> None:
    if not isinstance(topk_ids, torch.Tensor):
        raise TypeError(f"topk_ids must be a torch.Tensor, got {type(topk_ids).__name__}")
    if topk_ids.dtype not in _ID_DTYPES:
        raise TypeError(f"topk_ids must be int32 or int64, got {topk_ids.dtype}")
    if topk_ids.dim() != 2:
        raise ValueError(f"topk_ids must be 2-D [T, A], got shape {tuple(topk_ids.shape)}")


def _check_id_range(topk_ids: torch.Tensor, num_experts: int) -> None:
    """Reads the ids back to the host (a device sync): keep it out of CUDA-graph capture."""
    if topk_ids.numel() == 0:
        return
    lo, hi = int(topk_ids.min()), int(topk_ids.max())
    if lo < 0 or hi >= num_experts:
        raise ValueError(f"topk_ids hold values in [{lo}, {hi}], expected [0, {num_experts})")


def _check_sizes(num_experts: int, block_m: int) -> None:
    if not isinstance(num_experts, int) or num_experts < 1:
        raise ValueError(f"num_experts={num_experts!r} must be a positive int")
    if not isinstance(block_m, int) or block_m < 1:
        raise ValueError(f"block_m={block_m!r} must be a positive int")


def align_by_expert(
    topk_ids: torch.Tensor, num_experts: int, block_m: int, *, validate: bool = True
) -> RoutingPlan:
    """Sort the (token, slot) pairs by expert and pad each expert's run to a multiple of block_m.

    topk_ids: [T, A] int32/int64 in [0, E). No host sync unless `validate` (the id range check), so
    with validate=False it is CUDA-graph capturable: every size below is static in (T, A, E, block_m).
    """
    _check_ids(topk_ids)
    _check_sizes(num_experts, block_m)
    if validate:
        _check_id_range(topk_ids, num_experts)

    device = topk_ids.device
    t, a = topk_ids.shape
    p = t * a
    p_max = max_padded_pairs(p, num_experts, block_m)
    flat = topk_ids.reshape(-1).long()  # [P], expert of pair p

    counts = torch.zeros(num_experts, dtype=torch.int64, device=device)
    counts.scatter_add_(0, flat, torch.ones_like(flat))  # [E] pairs per expert
    padded = (counts + (block_m - 1)) // block_m * block_m  # [E]
    padded_end = torch.cumsum(padded, 0)  # [E] inclusive
    padded_start = padded_end - padded  # [E]
    count_start = torch.cumsum(counts, 0) - counts  # [E] start of each expert in the unpadded order

    order = torch.argsort(flat, stable=True)  # [P] pair ids by expert, ascending p within an expert
    expert_of = flat[order]  # [P]
    rank = torch.arange(p, device=device) - count_start[expert_of]  # [P] position within the expert
    dest = padded_start[expert_of] + rank  # [P] slot in sorted_ids
    sorted_ids = torch.full((p_max,), p, dtype=torch.int64, device=device)
    sorted_ids.scatter_(0, dest, order)  # [P_max]

    max_blocks = p_max // block_m
    block_start = torch.arange(max_blocks, device=device) * block_m  # [NB]
    # the expert owning position s is the first e with padded_end[e] > s; E means "past the used length"
    block_expert = torch.searchsorted(padded_end, block_start, right=True)  # [NB]
    block_expert = torch.where(block_expert < num_experts, block_expert, torch.full_like(block_expert, -1))

    expert_offsets = torch.cat([padded_start, padded_end[-1:]])  # [E+1]
    return RoutingPlan(
        sorted_ids=sorted_ids.to(torch.int32),
        block_expert=block_expert.to(torch.int32),
        expert_offsets=expert_offsets.to(torch.int32),
        num_padded=padded_end[-1:].to(torch.int32),
        block_m=block_m,
        num_pairs=p,
        num_experts=num_experts,
        max_blocks=max_blocks,
        topk=a,
    )


def experts_hit(topk_ids: torch.Tensor, num_experts: int) -> int:
    """Distinct experts the routing uses (spec.layer_bytes reads their weights once). Syncs the device."""
    _check_ids(topk_ids)
    _check_id_range(topk_ids, num_experts)
    flat = topk_ids.reshape(-1).long()
    counts = torch.zeros(num_experts, dtype=torch.int64, device=flat.device)
    counts.scatter_add_(0, flat, torch.ones_like(flat))
    return int((counts > 0).sum())
