"""The public MoE op: config choice, then the layer plan's launches (layer_plan.py: quantize -> align -> stage 1 ->
stage 2).

Axis legend: T tokens, A topk, E experts, H hidden, I inter.
"""

from __future__ import annotations

import functools
import warnings

import torch
from torch import nn

from mxmoe.config import Mma, MoEConfig
from mxmoe.dispatch import check_explicit, choose_config, environment, forced
from mxmoe.layer_plan import CALL_PLANS, LayerPlan, layer_plan
from mxmoe.routing import route_grouped_sigmoid, route_topk_softmax
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
    """The argument checks every call pays: written for the host cost (benchmarks/host_cost.py), each tensor's
    shape and device read once."""
    if not isinstance(hidden, torch.Tensor) or hidden.dim() != 2:
        raise ValueError(f"hidden must be a 2-D tensor [T, H], got {getattr(hidden, 'shape', type(hidden))}")
    if hidden.dtype not in _FLOAT_INPUTS:
        raise TypeError(f"hidden must be bf16, fp16 or fp32, got {hidden.dtype}")
    t, h = hidden.shape
    if h != weights.hidden:
        raise ValueError(f"hidden has H={h} columns, the weights expect H={weights.hidden}")
    ids_shape = topk_ids.shape
    if len(ids_shape) != 2 or ids_shape[0] != t:
        raise ValueError(f"topk_ids must be [T={t}, A], got {tuple(ids_shape)}")
    if topk_weights.shape != ids_shape:
        raise ValueError(f"topk_weights shape {tuple(topk_weights.shape)} != topk_ids shape {tuple(ids_shape)}")
    if not topk_weights.is_floating_point():
        raise TypeError(f"topk_weights must be floating point, got {topk_weights.dtype}")
    dev = weights.device
    if hidden.device != dev or topk_ids.device != dev or topk_weights.device != dev:
        for name, x in (("hidden", hidden), ("topk_ids", topk_ids), ("topk_weights", topk_weights)):
            if x.device != dev:
                raise ValueError(f"{name} is on {x.device}, the weights on {dev}")


def _dispatch(shape: MoEShape, path: Path, tokens: int, weights: MoEWeights) -> tuple[MoEConfig, bool]:
    """dispatch's config for `weights` (a tuned table's entry or the heuristic, told whether the weights carry the
    e4m3 layout) and whether it fell back: a table's e4m3 tiles on weights without the layout run on bf16
    carriers, warned (at the caller of moe() or of dispatched_config)."""
    config = choose_config(shape, path, tokens, e4m3=weights.e4m3)
    if not config.e4m3 or weights.e4m3:
        return config, False
    warnings.warn("the tuned config runs on e4m3 (mma=wgmma_e4m3) but these weights have no e4m3 layout: "
                  "running the same tiles on bf16 carriers; build them with MoEWeights(..., e4m3=True) or "
                  "weights.with_e4m3()", stacklevel=4)
    return MoEConfig(*(s.replace(mma=Mma.WGMMA) if s.mma.e4m3 else s for s in (config.stage1, config.stage2))), True


def dispatched_config(shape: MoEShape, path: Path, tokens: int, weights: MoEWeights) -> MoEConfig:
    """The config moe(config=None) launches for `weights` (`_dispatch`; the transformers patch takes it from here,
    so both fall back alike)."""
    return _dispatch(shape, path, tokens, weights)[0]


_PLANS_MAX = 4096  # moe()'s layer plans kept per call (layer_plan.CALL_PLANS; see call_plan)


def call_plan(weights: MoEWeights, topk: int, tokens: int, path: Path, config: MoEConfig | None = None) -> LayerPlan:
    """The layer plan a moe() call runs: `layer_plan(shape, path, config, T)` with `config` checked
    (`check_explicit`) or, for None, dispatched (`_dispatch`). Kept per (weights' call_key, A, T, path,
    config, dispatch's environment snapshot), so a repeated call is one dict lookup: the shape key, dispatch, the
    explicit check and the plan lookup were about 3.5 us of a 10 us host budget (issue 22). Not kept: a
    config=None call under `mxmoe.override` (the block's config is asked each call) and a table's e4m3 tile on
    weights without the layout (warned each call). `dispatch.clear_cache()` retakes the snapshot, so no entry made
    before it is hit after it; `layer_plan.clear_plans()` forgets them."""
    if config is not None and type(config) is not MoEConfig:
        check_explicit(shape_of(weights, topk), path, config)  # the TypeError that names the fix
    keep = config is not None or forced() is None
    if keep:
        key = (weights.call_key, topk, tokens, path, config, environment())
        plan = CALL_PLANS.get(key)
        if plan is not None:
            return plan
    shape = shape_of(weights, topk)
    if config is None:
        config, fell_back = _dispatch(shape, path, tokens, weights)
        keep = keep and not fell_back
    else:
        check_explicit(shape, path, config)
    plan = layer_plan(shape, path, config, tokens)
    if keep:
        if len(CALL_PLANS) >= _PLANS_MAX:
            CALL_PLANS.clear()
        CALL_PLANS[key] = plan
    return plan


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
    plan = call_plan(weights, a, t, path, config)
    return plan.run(hidden, weights, topk_ids, topk_weights, validate=validate, poison=poison)


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
