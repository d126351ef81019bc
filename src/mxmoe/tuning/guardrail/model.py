"""The guardrail's model factory: seeded random GPT-OSS / DeepSeek-V3 transformers models built from configs
(never downloaded), and the hooks that run a patched model's experts on the oracle or record and replay their
inputs (ExpertsTape, use_backend, experts_tape).

Owns: random_model / random_model_config and their init rules, model_summary, ExpertsTape, use_backend and
experts_tape. May import: anything above `mxmoe.tuning` (the runtime patcher `mxmoe.integrations.transformers`
included) and torch; transformers only inside functions (it is the optional 'guardrail' extra). Imported by
`mxmoe.tuning.guardrail.run` and tests only; nothing above the harness imports it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from mxmoe.integrations.transformers import FAMILIES, INSTALL_HINT, Backend, MXFP4Experts, patched_modules
from mxmoe.shapes import MoEShape, Path


class ExpertsTape:
    """What each patched experts call of one forward was given, in call order: record it from one run (the
    oracle graph), replay it in another (the kernels).

    Both inputs the experts take from the model hold discrete decisions that tiny upstream differences flip:
    the router's top-k (an fp32 sum in another order can swap a near-tied expert and change that token's output
    by O(1)) and the path's activation quantization (the block input lands on the other side of a bf16, e4m3 or
    e2m1 rounding boundary: one e4m3 flip moves an element by 6-12%). Neither is an error of the kernels, and
    through a few layers of random weights they compound into the logits. Replaying the recorded (hidden, ids,
    weights) makes each kernel call see exactly its oracle call's input, so the comparison measures the
    kernels' own arithmetic in every layer, while attention, norms and residuals stay the candidate graph's.
    `flips` counts per replayed call the tokens whose own top-k set differed from the recording; `drift` the
    rms relative difference of the block input the candidate graph itself produced.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.flips: list[int] = []
        self.drift: list[float] = []
        self.replaying = False
        self._next = 0

    def replay(self) -> ExpertsTape:
        """Switch from recording to replaying, from the first recorded call."""
        self.replaying, self._next, self.flips, self.drift = True, 0, [], []
        return self

    def apply(self, x: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if not self.replaying:
            self.calls.append((x.clone(), ids.clone(), weights.clone()))
            return x, ids, weights
        if self._next >= len(self.calls):
            raise RuntimeError(f"experts replay: call {self._next + 1} but only {len(self.calls)} were recorded")
        rec_x, rec_ids, rec_w = self.calls[self._next]
        if rec_ids.shape != ids.shape or rec_x.shape != x.shape:
            raise RuntimeError(f"experts replay: call {self._next + 1} takes {tuple(x.shape)} / {tuple(ids.shape)}, "
                               f"the recording {tuple(rec_x.shape)} / {tuple(rec_ids.shape)}")
        self._next += 1
        same = (ids.sort(dim=1).values == rec_ids.sort(dim=1).values).all(dim=1)
        self.flips.append(int((~same).sum()))
        ref = rec_x.float()
        self.drift.append(float((x.float() - ref).norm() / ref.norm().clamp_min(1e-30)))
        return rec_x, rec_ids, rec_w


@contextmanager
def use_backend(model: nn.Module, backend: Backend | str, path: Path | str | None = None
                ) -> Iterator[list[MXFP4Experts]]:
    """Run the patched modules on `backend` (and `path`, when given) inside the block, e.g. the oracle for a
    path-emulating reference model."""
    backend = Backend(backend)
    modules = patched_modules(model)
    if not modules:
        raise ValueError(f"{type(model).__name__} has no MXFP4Experts: call patch_model first")
    before = [(m.backend, m.path) for m in modules]
    for m in modules:
        m.backend, m.path = backend, m.path if path is None else Path(path)
    try:
        yield modules
    finally:
        for m, (b, p) in zip(modules, before, strict=True):
            m.backend, m.path = b, p


@contextmanager
def experts_tape(model: nn.Module, tape: ExpertsTape) -> Iterator[ExpertsTape]:
    """Record into (or replay from) `tape` every patched experts call inside the block (see ExpertsTape)."""
    modules = patched_modules(model)
    if not modules:
        raise ValueError(f"{type(model).__name__} has no MXFP4Experts: call patch_model first")
    for m in modules:
        m.tape = tape
    try:
        yield tape
    finally:
        for m in modules:
            m.tape = None


# ---- seeded random models: the guardrail's graphs (built from configs, never downloaded) --------------------

# gate_up_proj std = gain / sqrt(H). GPT-OSS 2.5: ~1% of gate/up pre-activations pass the +-7 clamp, so the
# clamp is exercised; DeepSeek-V3 1.0 keeps silu's inputs O(1).
_GATE_UP_GAIN = {"gpt-oss": 2.5, "deepseek-v3": 1.0}
_BIAS_STD, _CORRECTION_STD = 0.1, 0.05
# non-MoE dims: tiny for the interpreter; otherwise transformers' defaults (the real attention dims and vocab)
_SMALL_ATTN = {
    "gpt-oss": dict(num_attention_heads=4, num_key_value_heads=2, head_dim=16, vocab_size=128),
    "deepseek-v3": dict(num_attention_heads=4, num_key_value_heads=4, q_lora_rank=32, kv_lora_rank=16,
                        qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=16, vocab_size=128),
}


def _grouping(experts: int, topk: int) -> tuple[int, int]:
    """DeepSeek-V3's n_group / topk_group for a reduced expert count: groups of >= 2 experts, half kept."""
    n_group = next(g for g in (8, 4, 2, 1) if experts % g == 0 and experts // g >= 2)
    size = experts // n_group
    return n_group, min(n_group, max(n_group // 2, -(-topk // size)))


def random_model_config(family: str, shape: MoEShape, *, layers: int, small: bool, max_experts: int):
    """A transformers config with the shape's hidden, inter and routed top-k, min(routed experts, max_experts)
    experts, `layers` decoder layers (all MoE; DeepSeek's shared expert stays dense) and eager attention."""
    if family not in FAMILIES:
        raise ValueError(f"family={family!r}: supported {FAMILIES}")
    if not isinstance(layers, int) or layers < 1:
        raise ValueError(f"layers={layers!r} must be a positive int")
    e = max(min(shape.routed_experts, max_experts), shape.routed_topk)
    common = dict(num_hidden_layers=layers, num_experts_per_tok=shape.routed_topk, hidden_size=shape.hidden,
                  attn_implementation="eager", **(_SMALL_ATTN[family] if small else {}))
    if family == "gpt-oss":
        from transformers import GptOssConfig

        return GptOssConfig(num_local_experts=e, intermediate_size=shape.inter, **common)
    from transformers import DeepseekV3Config

    n_group, topk_group = _grouping(e, shape.routed_topk)
    return DeepseekV3Config(n_routed_experts=e, moe_intermediate_size=shape.inter, intermediate_size=shape.inter,
                            n_group=n_group, topk_group=topk_group, first_k_dense_replace=0, n_shared_experts=1,
                            **common)


def _init_weights(model: nn.Module, family: str, seed: int, device: torch.device) -> None:
    """Seeded init keeping activations and logits O(1): Linear N(0, 1/fan_in), embeddings N(0, 1), norms 1,
    biases N(0, 0.1); experts' fan-in is H for gate_up and I for down. Same (seed, device type) -> same model."""
    g = torch.Generator(device=device).manual_seed(seed)
    cfg = model.config
    inter = getattr(cfg, "moe_intermediate_size", None) or cfg.intermediate_size
    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if "norm" in name:
                p.fill_(1.0)
                continue
            if leaf == "gate_up_proj":
                std = _GATE_UP_GAIN[family] / math.sqrt(cfg.hidden_size)
            elif leaf == "down_proj":
                std = 1 / math.sqrt(inter)
            elif leaf.endswith("bias"):
                std = _BIAS_STD
            elif leaf == "sinks" or "embed_tokens" in name:
                std = 1.0
            elif p.dim() == 2:
                std = 1 / math.sqrt(p.shape[1])
            else:
                raise AssertionError(f"no init rule for parameter {name} {tuple(p.shape)}")
            p.normal_(0.0, std, generator=g)
        for name, b in model.named_buffers():
            if name.endswith("e_score_correction_bias"):
                b.normal_(0.0, _CORRECTION_STD, generator=g)


def random_model(family: str, shape: MoEShape, *, layers: int = 2, small: bool = True, seed: int = 0,
                 device: torch.device | str = "cpu", max_experts: int = 32) -> nn.Module:
    """A seeded fp32 GptOssForCausalLM / DeepseekV3ForCausalLM (eval mode) on `device` (random_model_config)."""
    try:
        import transformers
    except ImportError as exc:
        raise ImportError(f"random_model needs transformers 5.x: {INSTALL_HINT}") from exc
    device = torch.device(device)
    cfg = random_model_config(family, shape, layers=layers, small=small, max_experts=max_experts)
    cls = transformers.GptOssForCausalLM if family == "gpt-oss" else transformers.DeepseekV3ForCausalLM
    with torch.device(device):
        model = cls(cfg).to(torch.float32).eval()
    _init_weights(model, family, seed, device)
    return model


def model_summary(model: nn.Module) -> dict[str, Any]:
    """The config fields that say what graph ran, plus the library versions."""
    import transformers

    keys = ("model_type", "num_hidden_layers", "hidden_size", "intermediate_size", "moe_intermediate_size",
            "vocab_size", "num_attention_heads", "num_experts_per_tok", "num_local_experts", "n_group",
            "topk_group", "n_shared_experts", "routed_scaling_factor", "norm_topk_prob")
    out = {k: getattr(model.config, k) for k in keys if getattr(model.config, k, None) is not None}
    return out | {"dtype": str(next(model.parameters()).dtype), "transformers": transformers.__version__,
                  "torch": torch.__version__}


__all__ = ["ExpertsTape", "experts_tape", "model_summary", "random_model", "random_model_config", "use_backend"]
