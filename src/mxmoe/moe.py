"""The public MoE op: routing plan -> config choice -> stage 1 -> stage 2.

Axis legend: T tokens, A topk, E experts, H hidden, I inter.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from mxmoe.config import MoEConfig
from mxmoe.dispatch import check_explicit, choose_config
from mxmoe.kernels.align import align
from mxmoe.kernels.quant import quantize_input
from mxmoe.kernels.stage1 import stage1
from mxmoe.kernels.stage2 import stage2
from mxmoe.kernels.swmoe import counters_needed, finishes_atomic_in_kernel
from mxmoe.routing import max_padded_pairs, route_grouped_sigmoid, route_topk_softmax
from mxmoe.shapes import Activation, MoEShape, Path
from mxmoe.weights import MoEWeights

_FLOAT_INPUTS = (torch.bfloat16, torch.float16, torch.float32)


def shape_of(weights: MoEWeights, topk: int) -> MoEShape:
    """The MoEShape a set of weights and a top-k describe (the dispatch key)."""
    return _shape(weights.num_experts, topk, weights.hidden, weights.inter, weights.activation, weights.b13 is not None)


@functools.lru_cache(maxsize=256)
def _shape(experts: int, topk: int, hidden: int, inter: int, activation: Activation, bias: bool) -> MoEShape:
    return MoEShape("runtime", experts, topk, hidden, inter, activation, bias=bias)


def _check_inputs(hidden: torch.Tensor, weights: MoEWeights, topk_ids: torch.Tensor,
                  topk_weights: torch.Tensor) -> None:
    if not isinstance(hidden, torch.Tensor) or hidden.dim() != 2:
        raise ValueError(f"hidden must be a 2-D tensor [T, H], got {getattr(hidden, 'shape', type(hidden))}")
    if hidden.dtype not in _FLOAT_INPUTS:
        raise TypeError(f"hidden must be bf16, fp16 or fp32, got {hidden.dtype}")
    if hidden.shape[1] != weights.hidden:
        raise ValueError(f"hidden has H={hidden.shape[1]} columns, the weights expect H={weights.hidden}")
    if topk_ids.dim() != 2 or topk_ids.shape[0] != hidden.shape[0]:
        raise ValueError(f"topk_ids must be [T={hidden.shape[0]}, A], got {tuple(topk_ids.shape)}")
    if tuple(topk_weights.shape) != tuple(topk_ids.shape):
        raise ValueError(f"topk_weights shape {tuple(topk_weights.shape)} != topk_ids shape {tuple(topk_ids.shape)}")
    if not topk_weights.is_floating_point():
        raise TypeError(f"topk_weights must be floating point, got {topk_weights.dtype}")
    for name, t in (("hidden", hidden), ("topk_ids", topk_ids), ("topk_weights", topk_weights)):
        if t.device != weights.device:
            raise ValueError(f"{name} is on {t.device}, the weights on {weights.device}")


def moe(
    hidden: torch.Tensor,
    weights: MoEWeights,
    topk_ids: torch.Tensor,
    topk_weights: torch.Tensor,
    path: Path | str = Path.A16W4,
    config: MoEConfig | None = None,
    *,
    validate: bool = True,
    poison: bool = False,
) -> torch.Tensor:
    """Fused MXFP4 MoE: hidden [T, H] -> bf16 [T, H].

    topk_ids [T, A] int32/int64 and topk_weights [T, A] come from the caller's router. `config=None`
    takes the tuned table (or the heuristic). `validate=False` skips the id range check, the one
    step that reads device data back, so the call can be captured in a CUDA graph. `poison=True` fills
    the intermediate (NaN, or 0xFF bytes on the MX paths) and the per-slot combine buffer with NaN before the
    launches, so a tile the kernels skip shows in the output instead of passing on whatever memory held (the
    tuning harness's correctness check; off by default).

    An explicit `config` must be a `MoEConfig` (a dict is refused with a TypeError: convert it with
    `MoEConfig.from_dict`) and goes through the legality check tuned tables get (`mxmoe.dispatch.launchable`,
    on the running device): a config that cannot launch is refused with a ValueError naming the stage and the
    reason code (e.g. `tile_too_large` for BLOCK_M=24, `warp_layout` for num_warps=3) before any kernel runs.
    """
    path = path if type(path) is Path else Path(path)
    _check_inputs(hidden, weights, topk_ids, topk_weights)
    t, a = topk_ids.shape
    if config is None:
        config = choose_config(shape_of(weights, a), path, t)
    else:
        check_explicit(shape_of(weights, a), path, config)
    x = quantize_input(hidden.to(torch.bfloat16).contiguous(), path, bf16=config.stage1.mma.v2)
    e = weights.num_experts
    n1, n2 = _counters(config, e, t, a, weights)
    plan1 = align(topk_ids, e, config.stage1.block_m, validate=validate, counters=n1 + n2)
    plan2 = plan1
    if config.stage2.block_m != config.stage1.block_m:
        plan2 = align(topk_ids, e, config.stage2.block_m, validate=False)
    c1 = plan1.counters[:n1] if n1 else None
    c2 = plan1.counters[n1:] if n2 else None
    sums = None  # the v2 atomic combine's fp32 [T, H], zeroed by stage 1's programs: no memset launch
    if config.stage1.mma.v2 and config.stage2.mma.v2 and finishes_atomic_in_kernel(config.stage2, weights.inter):
        sums = torch.empty(t, weights.hidden, dtype=torch.float32, device=hidden.device)
    h = stage1(x, weights, plan1, config.stage1, poison=poison, counters=c1, zero=sums)
    return stage2(h, weights, plan2, topk_weights.float(), config.stage2, t, poison=poison, counters=c2, out=sums,
                  zeroed=sums is not None)


def _counters(config: MoEConfig, experts: int, tokens: int, topk: int, weights: MoEWeights) -> tuple[int, int]:
    """The v2 stages' arrival counters, which the (first) align kernel zeroes: no memset launch."""
    if not (config.stage1.mma.v2 and config.stage2.mma.v2):
        return 0, 0
    blocks = [max_padded_pairs(tokens * topk, experts, c.block_m) // c.block_m
              for c in (config.stage1, config.stage2)]
    return (counters_needed(config.stage1, 1, weights.inter, weights.hidden, blocks[0], tokens),
            counters_needed(config.stage2, 2, weights.hidden, weights.inter, blocks[1], tokens))


class MoELayer(nn.Module):
    """Router + fused experts. `routing="softmax_topk"` (GPT-OSS) or `"grouped_sigmoid"` (DeepSeek-V3)."""

    def __init__(self, weights: MoEWeights, router_weight: torch.Tensor, topk: int, *,
                 router_bias: torch.Tensor | None = None, routing: str = "softmax_topk",
                 n_group: int = 1, topk_group: int = 1, routed_scaling_factor: float = 1.0,
                 correction_bias: torch.Tensor | None = None, path: Path | str = Path.A16W4,
                 config: MoEConfig | None = None) -> None:
        super().__init__()
        if routing not in ("softmax_topk", "grouped_sigmoid"):
            raise ValueError(f"routing={routing!r}: expected 'softmax_topk' or 'grouped_sigmoid'")
        if tuple(router_weight.shape) != (weights.num_experts, weights.hidden):
            raise ValueError(f"router_weight shape {tuple(router_weight.shape)}, expected "
                             f"{(weights.num_experts, weights.hidden)}")
        self.weights = weights
        self.router = nn.Linear(weights.hidden, weights.num_experts, bias=router_bias is not None,
                                device=router_weight.device, dtype=router_weight.dtype)
        with torch.no_grad():
            self.router.weight.copy_(router_weight)
            if router_bias is not None:
                self.router.bias.copy_(router_bias)
        self.topk, self.routing, self.path, self.config = topk, routing, Path(path), config
        self.n_group, self.topk_group, self.scaling = n_group, topk_group, routed_scaling_factor
        self.correction_bias = correction_bias

    def route(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.router(hidden.to(self.router.weight.dtype))
        if self.routing == "softmax_topk":
            return route_topk_softmax(logits, self.topk)
        return route_grouped_sigmoid(logits, self.correction_bias, self.topk, self.n_group, self.topk_group,
                                     self.scaling)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        lead = hidden.shape[:-1]
        x = hidden.reshape(-1, hidden.shape[-1])
        ids, w = self.route(x)
        return moe(x, self.weights, ids, w, self.path, self.config).reshape(*lead, -1)


__all__ = ["Activation", "MoELayer", "MoEWeights", "moe", "shape_of"]
