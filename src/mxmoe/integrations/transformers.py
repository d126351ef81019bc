"""Drop-in MXFP4 experts for transformers (5.x) GPT-OSS and DeepSeek-V3 models.

Axis legend: T tokens, A topk, E experts, H hidden, I expert inter, N = 2*I.

What is replaced, and what is kept:
  GPT-OSS      GptOssMLP.experts (GptOssExperts) -> MXFP4Experts. GptOssMLP.router (GptOssTopKRouter: top-k of
               the logits, then softmax over the k) stays, and GptOssMLP.forward still calls it.
  DeepSeek-V3  DeepseekV3MoE.experts (DeepseekV3Experts) -> MXFP4Experts. DeepseekV3MoE.gate (DeepseekV3TopkRouter:
               sigmoid + e_score_correction_bias, n_group / topk_group, norm_topk_prob, routed_scaling_factor) and
               DeepseekV3MoE.shared_experts (a dense MLP) stay.
Only the experts module is swapped, so the model's own block calls its own router and hands its ids and
weights to mxmoe: routing conventions are preserved exactly because they are never reimplemented.

Weight layouts (transformers -> MoEWeights.from_float, which takes w13 [E, N, H] and w2 [E, H, I]):
  GPT-OSS      gate_up_proj [E, H, N], used as x @ gate_up_proj, columns interleaved (gate = [..., ::2],
               up = [..., 1::2]); gate_up_proj_bias [E, N] interleaved alike; down_proj [E, I, H];
               down_proj_bias [E, H].  w13 = gate_up_proj^T (rows interleaved, as swiglu_oai expects),
               w2 = down_proj^T.  Activation swiglu_oai: min(gate, 7), clamp(up, -7, 7), alpha 1.702, (up + 1) * glu.
  DeepSeek-V3  gate_up_proj [E, N, H], used as linear(x, W).chunk(2): gate half then up half; down_proj [E, H, I];
               no biases.  w13, w2 as they are.  Activation silu.
A GPT-OSS checkpoint loaded with transformers' own MXFP4 experts (Mxfp4GptOssExperts) must be loaded
dequantized (`Mxfp4Config(dequantize=True)`) first: the patch reads float expert weights.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

import torch
from torch import nn

from mxmoe.config import MoEConfig
from mxmoe.moe import dispatched_config, moe, shape_of
from mxmoe.reference import SWIGLU_OAI_ALPHA, SWIGLU_OAI_LIMIT, moe_reference_from_weights
from mxmoe.shapes import Activation, Path
from mxmoe.weights import MoEWeights

SUPPORTED_MODELS = ("GptOssForCausalLM", "DeepseekV3ForCausalLM")
INSTALL_HINT = "pip install 'mxmoe[guardrail]' (transformers>=5,<6)"
_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")
DEBUG_ENV = "MXMOE_DEBUG"  # "1": range-check the router's ids on every call (a host sync per layer per step)


class Backend(str, Enum):
    """What a patched experts module runs."""

    KERNEL = "kernel"  # mxmoe.moe.moe: the fused Triton kernels
    REFERENCE = "reference"  # mxmoe.reference: the fp32 oracle, with the path's activation fake-quantization


@dataclass(frozen=True, slots=True)
class _Family:
    name: str
    experts_class: str  # the transformers class that is replaced
    activation: Activation
    transposed: bool  # stored [E, H, N] / [E, I, H] (x @ W) rather than [E, N, H] / [E, H, I] (linear)


_FAMILIES = (
    _Family("gpt-oss", "GptOssExperts", Activation.SWIGLU_OAI, transposed=True),
    _Family("deepseek-v3", "DeepseekV3Experts", Activation.SILU, transposed=False),
)
FAMILIES = tuple(f.name for f in _FAMILIES)


def _experts_classes() -> dict[type, _Family]:
    """The transformers experts classes, imported only when a model is patched (transformers is optional)."""
    try:
        from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3Experts
        from transformers.models.gpt_oss.modeling_gpt_oss import GptOssExperts
    except ImportError as exc:
        raise ImportError(f"mxmoe.integrations.transformers needs transformers 5.x: {INSTALL_HINT}") from exc
    return {GptOssExperts: _FAMILIES[0], DeepseekV3Experts: _FAMILIES[1]}


@dataclass(frozen=True, slots=True)
class ExpertsBlock:
    """One experts module of the model: where it sits and its dimensions."""

    layer: int  # decoder layer index (-1 if the module path names none)
    name: str  # module path, e.g. "model.layers.0.mlp.experts"
    module_type: str  # the transformers class found there, e.g. "GptOssExperts"
    experts: int
    hidden: int
    inter: int
    activation: Activation
    bias: bool

    def to_dict(self) -> dict[str, Any]:
        return {"layer": self.layer, "name": self.name, "module_type": self.module_type, "experts": self.experts,
                "hidden": self.hidden, "inter": self.inter, "activation": self.activation.value, "bias": self.bias}


@dataclass(frozen=True, slots=True)
class PatchReport:
    """What `patch_model` replaced. `config_key` is the forced MoEConfig's key, None when dispatch chooses."""

    family: str
    model_type: str
    path: Path
    config_key: str | None
    blocks: tuple[ExpertsBlock, ...]

    @property
    def layers(self) -> tuple[int, ...]:
        return tuple(b.layer for b in self.blocks)

    def to_dict(self) -> dict[str, Any]:
        return {"family": self.family, "model_type": self.model_type, "path": self.path.value,
                "config_key": self.config_key, "blocks": [b.to_dict() for b in self.blocks]}


class _Tape(Protocol):
    """What a patched experts call hands its inputs to before running (mxmoe.tuning.guardrail.model.ExpertsTape)."""

    def apply(self, x: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]: ...


class MXFP4Experts(nn.Module):
    """Drop-in for a transformers experts module: (hidden [T, H], top_k_index [T, A], top_k_weights [T, A]) -> [T, H].

    Holds MXFP4 `MoEWeights` as plain tensors, not parameters (they are not trained, and `model.to()` does not
    move them: patch the model on the device it runs on). Every MoEConfig it launches is kept in `launched`,
    so a caller can prove which tiles ran (REFERENCE.md shortfall 1).
    """

    def __init__(self, weights: MoEWeights, *, path: Path | str, config: MoEConfig | None, block: ExpertsBlock):
        super().__init__()
        self.weights, self.path, self.moe_config, self.block = weights, Path(path), config, block
        self.num_experts = weights.num_experts
        self.backend = Backend.KERNEL
        self.launched: dict[str, MoEConfig] = {}
        self.tape: _Tape | None = None
        # The ids come from the model's own router, so they are range-checked (a host sync) on this module's first
        # call only, or on every call under MXMOE_DEBUG=1: a patched model never syncs the host per layer per step.
        self.ids_checked = False

    def forward(self, hidden_states: torch.Tensor, top_k_index: torch.Tensor,
                top_k_weights: torch.Tensor) -> torch.Tensor:
        # bf16 in and out on both backends: the kernels' contract, so the oracle sees what the kernels see
        x = hidden_states.reshape(-1, hidden_states.shape[-1]).to(torch.bfloat16)  # [T, H]
        t = x.shape[0]
        ids = top_k_index.reshape(t, -1)  # [T, A]
        w = top_k_weights.reshape(t, -1).float()  # [T, A]
        if self.tape is not None:
            x, ids, w = self.tape.apply(x, ids, w)
        if self.backend is Backend.REFERENCE:
            out = moe_reference_from_weights(x, self.weights, ids, w, self.path, dtype=torch.bfloat16)
        else:
            cfg = self.moe_config or dispatched_config(shape_of(self.weights, ids.shape[1]), self.path, t,
                                                           self.weights)
            self.launched[cfg.key()] = cfg
            validate = not self.ids_checked or os.environ.get(DEBUG_ENV) == "1"
            out = moe(x, self.weights, ids, w, self.path, cfg, validate=validate)
            self.ids_checked = True
        return out.to(hidden_states.dtype).reshape(hidden_states.shape)

    def extra_repr(self) -> str:
        w = self.weights
        return (f"experts={w.num_experts}, hidden={w.hidden}, inter={w.inter}, activation={w.activation.value}, "
                f"path={self.path.value}, backend={self.backend.value}")


def _unsupported(model: nn.Module) -> ValueError:
    return ValueError(
        f"{type(model).__name__} has no supported experts module: mxmoe patches transformers "
        f"{' and '.join(SUPPORTED_MODELS)} (experts {', '.join(f.experts_class for f in _FAMILIES)}); "
        "GPT-OSS checkpoints with transformers' MXFP4 experts must be loaded dequantized first"
    )


def _find_experts(model: nn.Module) -> list[tuple[str, nn.Module, _Family]]:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    classes = _experts_classes()
    found = [(n, m, classes[type(m)]) for n, m in model.named_modules() if type(m) in classes]
    if not found:
        if any(isinstance(m, MXFP4Experts) for m in model.modules()):
            raise ValueError(f"{type(model).__name__} is already patched: patch a model with its own experts")
        raise _unsupported(model)
    if len({f.name for _, _, f in found}) > 1:
        raise ValueError(f"{type(model).__name__} mixes experts families {sorted({f.name for _, _, f in found})}")
    return found


def _check_constants(name: str, module: nn.Module, family: _Family) -> None:
    """mxmoe's kernels hard-code the activation; refuse a model whose experts compute another one."""
    if family.activation is Activation.SWIGLU_OAI:
        if (module.alpha, module.limit) != (SWIGLU_OAI_ALPHA, SWIGLU_OAI_LIMIT):
            raise ValueError(f"{name}: swiglu alpha={module.alpha}, limit={module.limit}; mxmoe's swiglu_oai "
                             f"computes alpha={SWIGLU_OAI_ALPHA}, limit={SWIGLU_OAI_LIMIT}")
    else:
        act = getattr(getattr(module, "config", None), "hidden_act", None)
        if act != "silu":
            raise ValueError(f"{name}: experts activation {act!r}; mxmoe's DeepSeek-V3 path computes silu")


def _float_weights(module: nn.Module, family: _Family):
    """The model's expert weights in MoEWeights.from_float's layout: w13 [E, N, H], w2 [E, H, I], b13 [E, N], b2."""
    if family.transposed:
        return (module.gate_up_proj.detach().transpose(1, 2), module.down_proj.detach().transpose(1, 2),
                module.gate_up_proj_bias.detach(), module.down_proj_bias.detach())
    return module.gate_up_proj.detach(), module.down_proj.detach(), None, None


def _block(name: str, module: nn.Module, family: _Family) -> ExpertsBlock:
    w13, w2, b13, _ = _float_weights(module, family)
    m = _LAYER.search(name)
    return ExpertsBlock(layer=int(m.group(1)) if m else -1, name=name, module_type=type(module).__name__,
                        experts=w13.shape[0], hidden=w13.shape[2], inter=w2.shape[2], activation=family.activation,
                        bias=b13 is not None)


def family_of(model: nn.Module) -> str:
    """"gpt-oss" or "deepseek-v3": the family of the model's experts modules (ValueError when unsupported)."""
    return _find_experts(model)[0][2].name


def patch_model(model: nn.Module, path: Path | str = Path.A16W4, config: MoEConfig | None = None, *,
                e4m3: bool = False) -> PatchReport:
    """Replace every experts module of a transformers GPT-OSS / DeepSeek-V3 model by MXFP4Experts, in place.

    Expert weights are quantized to MXFP4 from the model's current float weights; routers and shared
    experts are kept. `config=None` lets mxmoe's dispatch choose per call (tuned table or heuristic, and
    `mxmoe.dispatch.override` applies); a MoEConfig forces it for every layer. `e4m3=True` also builds the
    weights' e4m3 layout (`MoEWeights.with_e4m3`, the weights' size again), so a8w4's prefill may run on FP8
    tensor cores (docs/fp8.md); a forced config with a stage on e4m3 builds it whatever `e4m3` says.
    """
    path = Path(path)
    if config is not None and not isinstance(config, MoEConfig):
        raise TypeError(f"config must be a MoEConfig or None, got {type(config).__name__}")
    e4m3 = e4m3 or (config is not None and config.e4m3)
    found = _find_experts(model)
    blocks = []
    for name, module, family in found:
        _check_constants(name, module, family)
        block = _block(name, module, family)
        weights = MoEWeights.from_float(*_float_weights(module, family), activation=family.activation)
        weights = weights.with_e4m3() if e4m3 else weights
        model.set_submodule(name, MXFP4Experts(weights, path=path, config=config, block=block))
        blocks.append(block)
    return PatchReport(found[0][2].name, type(model).__name__, path, None if config is None else config.key(),
                       tuple(blocks))


def dequantize_model_experts(model: nn.Module) -> tuple[ExpertsBlock, ...]:
    """Replace each expert weight by its MXFP4-dequantized value, in place (biases stay: the kernels read
    them in float). A model treated so holds exactly the weights the kernels of a later `patch_model` see."""
    blocks = []
    for name, module, family in _find_experts(model):
        _check_constants(name, module, family)
        w13, w2, b13, b2 = _float_weights(module, family)
        q = MoEWeights.from_float(w13, w2, b13, b2, family.activation)
        with torch.no_grad():
            for dst, src in ((w13, q.w13_model_layout()), (w2, q.w2_float())):
                dst.copy_(src)  # dst is a view (transposed for GPT-OSS) of the parameter itself
                if not torch.equal(dst.float(), src):
                    raise ValueError(f"{name}: dtype {dst.dtype} cannot hold the MXFP4 values exactly")
        blocks.append(_block(name, module, family))
        del q
    return tuple(blocks)


def patched_modules(model: nn.Module) -> list[MXFP4Experts]:
    """The MXFP4Experts of a patched model, in module order."""
    return [m for m in model.modules() if isinstance(m, MXFP4Experts)]


def launched_configs(model: nn.Module) -> dict[str, MoEConfig]:
    """Every MoEConfig the model's patched modules launched so far, by key."""
    out: dict[str, MoEConfig] = {}
    for m in patched_modules(model):
        out |= m.launched
    return out


__all__ = ["FAMILIES", "SUPPORTED_MODELS", "Backend", "ExpertsBlock", "MXFP4Experts", "PatchReport",
           "dequantize_model_experts", "family_of", "launched_configs", "patch_model", "patched_modules"]
