"""How the guardrail compares two graphs: one forward with its decoder-layer and MoE-block outputs captured
(GraphRun), and the metrics over two of them: logits_diff, greedy agreement, per-layer errors.

Axis legend: B batch, S sequence, V vocab, H hidden; P = B*S positions.

It exists apart from `run.py` so that the metric definitions (what "logits_diff <= spec" means) stand on
their own, below the run that builds, patches and judges the models. Imported by `mxmoe.tuning.guardrail.run` (which
re-exports logits_diff and agreement); it never imports it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from mxmoe.spec import E2E_LOGITS_DIFF_MAX
from mxmoe.tolerance import Tolerance, compare
from mxmoe.tuning.guardrail.outcome import LayerError


@dataclass(frozen=True, slots=True)
class GraphRun:
    """What one forward of a model produced."""

    logits: torch.Tensor  # [B, S, V] f32
    layers: tuple[torch.Tensor, ...]  # decoder layer outputs [B, S, H]
    moe: tuple[torch.Tensor, ...]  # MoE block outputs [B, S, H]


def forward(model: nn.Module, ids: torch.Tensor) -> GraphRun:
    """Run `model` on token ids [B, S] without grad or cache, capturing every decoder layer's and MoE block's
    output through forward hooks (removed afterwards)."""
    outs: dict[tuple[str, int], torch.Tensor] = {}

    def hook(key: tuple[str, int]):
        def grab(_mod, _args, out):
            outs[key] = (out[0] if isinstance(out, tuple) else out).detach().float().clone()

        return grab

    decoder = model.model.layers
    handles = [m.register_forward_hook(hook(("layer", i))) for i, m in enumerate(decoder)]
    handles += [m.mlp.register_forward_hook(hook(("moe", i))) for i, m in enumerate(decoder)]
    try:
        with torch.no_grad():
            logits = model(input_ids=ids, use_cache=False).logits.float()
    finally:
        for h in handles:
            h.remove()
    n = len(decoder)
    return GraphRun(logits, tuple(outs[("layer", i)] for i in range(n)), tuple(outs[("moe", i)] for i in range(n)))


def logits_diff(reference: torch.Tensor, actual: torch.Tensor) -> float:
    """max over positions of max over vocab of |log_softmax(reference) - log_softmax(actual)|, in float64
    (inf when either side is non-finite). Both are [..., V] logits."""
    d = (reference.double().log_softmax(-1) - actual.double().log_softmax(-1)).abs()
    return float("inf") if not bool(torch.isfinite(d).all()) else float(d.max())


def agreement(reference: torch.Tensor, actual: torch.Tensor, limit: float = E2E_LOGITS_DIFF_MAX):
    """(greedy agreement over all positions, the same over decisive positions, count of near ties). A position is
    a near tie when the reference's top-2 logit margin is <= 2*limit: there a flip fits inside logits_diff."""
    ref, act = reference.double().reshape(-1, reference.shape[-1]), actual.double().reshape(-1, actual.shape[-1])
    same = ref.argmax(-1) == act.argmax(-1)  # [P]
    top2 = ref.topk(2, dim=-1).values  # [P, 2]
    decisive = (top2[:, 0] - top2[:, 1]) > 2 * limit  # [P]
    dec = float(same[decisive].double().mean()) if bool(decisive.any()) else 1.0
    return float(same.double().mean()), dec, int((~decisive).sum())


def layer_errors(ref: GraphRun, act: GraphRun) -> tuple[LayerError, ...]:
    """Per decoder layer: `act` vs `ref` on the layer output (rms and max) and on the MoE block output (rms)."""
    loose = Tolerance(math.inf, math.inf)
    out = []
    for i, (r, a, rm, am) in enumerate(zip(ref.layers, act.layers, ref.moe, act.moe, strict=True)):
        c = compare(a, r, loose)
        out.append(LayerError(i, c.rms_rel, c.max_rel, compare(am, rm, loose).rms_rel))
    return tuple(out)
