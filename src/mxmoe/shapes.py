"""Model shapes, the token grid and the activation paths: the one registry every module reads.

No torch or triton here, so the CLI, the sweep driver and CPU tests import it instantly.
Axis legend used across mxmoe: T tokens, E experts, A topk (slots per token), H hidden, I expert inter.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from enum import Enum


class Path(str, Enum):
    """Activation precision of a layer; the weights are always MXFP4."""

    A16W4 = "a16w4"  # bf16 activations
    A8W4 = "a8w4"  # MXFP8 (e4m3) activations
    A4W4 = "a4w4"  # MXFP4 (e2m1) activations

    @property
    def act_bits(self) -> int:
        return {"a16w4": 16, "a8w4": 8, "a4w4": 4}[self.value]


class Activation(str, Enum):
    """Fused activation of stage 1."""

    SILU = "silu"  # SwiGLU: silu(gate) * up, gate and up the two halves of W13
    SWIGLU_OAI = "swiglu_oai"  # GPT-OSS: interleaved gate/up, clamp 7, alpha 1.702, (up + 1)


class RoutingDist(str, Enum):
    """How tokens are spread over experts (DESIGN.md "Routing distributions"); problem.py draws them."""

    UNIFORM = "uniform"  # random logits through the model's own router: experts hit almost evenly
    SKEWED = "skewed"  # Zipf-like expert popularity added to the logits, as real routers are
    FEW_ACTIVE = "few_active"  # every token among max(topk, 4) experts
    ALL_ACTIVE = "all_active"  # every expert gets a pair whenever T*A >= E
    SENTINEL_PADDING = "sentinel_padding"  # counts of 1 + 64k per expert: each last block is mostly padding


@dataclass(frozen=True, slots=True)
class MoEShape:
    """One MoE layer's dimensions.

    `shared_expert` marks the #708 shapes whose last expert is a fused shared expert: every token
    picks it with weight 1 in its last top-k slot.
    """

    name: str
    experts: int
    topk: int
    hidden: int
    inter: int
    activation: Activation
    bias: bool = False
    shared_expert: bool = False
    min_tokens: int = 1

    def __post_init__(self) -> None:
        for field in ("experts", "topk", "hidden", "inter"):
            if getattr(self, field) <= 0:
                raise ValueError(f"{field} must be positive, got {getattr(self, field)}")
        if self.topk > self.experts:
            raise ValueError(f"topk={self.topk} exceeds experts={self.experts}")
        for field in ("hidden", "inter"):
            if getattr(self, field) % 32:
                raise ValueError(f"{field}={getattr(self, field)} is not a multiple of the MX block size 32")
        if self.shared_expert and self.topk < 2:
            raise ValueError("a fused shared expert needs topk >= 2 (one routed slot and the shared one)")

    @property
    def routed_experts(self) -> int:
        return self.experts - 1 if self.shared_expert else self.experts

    @property
    def routed_topk(self) -> int:
        return self.topk - 1 if self.shared_expert else self.topk

    def to_dict(self) -> dict:
        d = asdict(self)
        d["activation"] = self.activation.value
        return d


_SWI = Activation.SWIGLU_OAI
_SILU = Activation.SILU

MODELS: dict[str, MoEShape] = {
    s.name: s
    for s in (
        MoEShape("gpt-oss-20b", 32, 4, 2880, 2880, _SWI, bias=True),
        MoEShape("gpt-oss-120b", 128, 4, 2880, 2880, _SWI, bias=True),
        MoEShape("deepseek-v3", 256, 8, 7168, 2048, _SILU),
        MoEShape("kimi-k2", 384, 8, 7168, 2048, _SILU),
        # The #708 target shapes (tensor-parallel shards of 8 GPUs), as the reference measured them.
        MoEShape("deepseek-v3-tp8", 257, 9, 7168, 256, _SILU, shared_expert=True),
        MoEShape("deepseek-v4-tp8", 385, 7, 7168, 512, _SILU, shared_expert=True),
        MoEShape("kimi-k2-tp8", 384, 8, 7168, 256, _SILU),
        MoEShape("gpt-oss-3072", 128, 4, 3072, 3072, _SWI, bias=True, min_tokens=256),
        # Test shapes: the same code paths at a size the Triton interpreter runs in seconds.
        MoEShape("tiny", 4, 2, 64, 64, _SILU),
        MoEShape("tiny-oai", 4, 2, 64, 64, _SWI, bias=True),
    )
}

FULL_MODELS = ("gpt-oss-20b", "gpt-oss-120b", "deepseek-v3", "kimi-k2")
WORKLOAD_708 = ("deepseek-v3-tp8", "deepseek-v4-tp8", "kimi-k2-tp8", "gpt-oss-3072")
# The paths the reference harness measured per #708 shape (a16w4 is added on top of it by mxmoe).
WORKLOAD_708_PATHS: dict[str, tuple[Path, ...]] = {
    "deepseek-v3-tp8": (Path.A4W4, Path.A8W4),
    "deepseek-v4-tp8": (Path.A8W4,),
    "kimi-k2-tp8": (Path.A4W4, Path.A8W4),
    "gpt-oss-3072": (Path.A4W4, Path.A8W4),
}

TOKEN_GRID: tuple[int, ...] = tuple(2**i for i in range(16))  # 1 .. 32768
DECODE_MAX_T = 64
PREFILL_MIN_T = 4096

_CUSTOM = re.compile(r"^\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*(?:,\s*(silu|swiglu_oai))?\s*$")


def get_shape(spec: str) -> MoEShape:
    """A model name from MODELS, or a custom `E,topk,hidden,inter[,activation]`."""
    if spec in MODELS:
        return MODELS[spec]
    m = _CUSTOM.match(spec)
    if not m:
        known = ", ".join(MODELS)
        raise ValueError(f"unknown shape {spec!r}: use one of {known} or 'E,topk,hidden,inter[,activation]'")
    e, k, h, i = (int(g) for g in m.groups()[:4])
    act = Activation(m.group(5) or "silu")
    return MoEShape(f"custom-E{e}-k{k}-H{h}-I{i}", e, k, h, i, act)


def parse_tokens(spec: str) -> tuple[int, ...]:
    """`1,16,128`, `grid` (the full TOKEN_GRID) or `decode` / `prefill` slices of it."""
    s = spec.strip().lower()
    if s in ("grid", "full", "all"):
        return TOKEN_GRID
    if s == "decode":
        return tuple(t for t in TOKEN_GRID if t <= DECODE_MAX_T)
    if s == "prefill":
        return tuple(t for t in TOKEN_GRID if t >= PREFILL_MIN_T)
    try:
        out = tuple(int(x) for x in s.split(",") if x.strip())
    except ValueError as exc:
        raise ValueError(f"token list {spec!r} must be comma-separated integers or 'grid'") from exc
    if not out or any(t < 0 for t in out):
        raise ValueError(f"token list {spec!r} must hold at least one non-negative integer")
    return out


def model_tokens(shape: MoEShape, tokens: tuple[int, ...]) -> tuple[int, ...]:
    """The grid points a shape is measured at (gpt-oss-3072 starts at 256 in the #708 workload)."""
    return tuple(t for t in tokens if t >= shape.min_tokens)


def regime(t: int) -> str:
    if t <= DECODE_MAX_T:
        return "decode"
    if t >= PREFILL_MIN_T:
        return "prefill"
    return "crossover"
