"""Tile configurations: the levers a kernel launch takes, as frozen, hashable, JSON-stable values.

No torch or triton here. `TileConfig` is one stage's launch; `MoEConfig` pairs the two stages.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields, replace
from enum import Enum
from typing import Any

CONFIG_SCHEMA_VERSION = 1


class Mma(str, Enum):
    """How the MXFP4 weight tile meets the tensor cores. The v1 levers fma, dot_scaled_t and upcast_t were removed
    with Kernels v2 (v2 is the swapped-operand wgmma they tried to be; fma lost at every point measured)."""

    DOT_SCALED = "dot_scaled"  # tl.dot_scaled: the compiler upcasts e2m1 and applies scales (GPU only)
    UPCAST = "upcast"  # unpack nibbles and e8m0 scales by hand, then tl.dot in bf16 (runs in the interpreter)
    # v2 (kernels/swmoe.py): the swap on wgmma with the weights as its register operand, read from the swizzled
    # layout (kernels/layout.py) and decoded in 13 integer ops per 8 values; bf16 activation carriers on every path.
    # Runs on the GPU and, bit for bit the same layout and decode, under the interpreter.
    WGMMA = "wgmma"
    # a8w4 on e4m3 wgmma, either stage (issue 23, docs/fp8.md): the weights rebased into the e4m3 layout
    # (kernels/layout_e4m3.py, MoEWeights(e4m3=True)), the stage's input rebased to one scale per row
    # (quant.quantize_token_e4m3), both scales in the epilogue. Explicit configs and a8w4's candidate spaces take it;
    # the heuristic's rule for a8w4's prefill stage 1 (heuristic.E4M3_*) is off while the guardrail fails it.
    WGMMA_E4M3 = "wgmma_e4m3"

    @property
    def v2(self) -> bool:
        """The v2 kernels (kernels/swmoe.py, swmoe_stage2.py): swizzled weights; bf16 activation carriers, or e4m3
        ones with WGMMA_E4M3."""
        return self in (Mma.WGMMA, Mma.WGMMA_E4M3)

    @property
    def e4m3(self) -> bool:
        """e4m3 operands on both sides of the MMA (a8w4 only)."""
        return self is Mma.WGMMA_E4M3

    @property
    def needs_dot_scaled(self) -> bool:
        """tl.dot_scaled, which the Triton 3.6 interpreter does not implement."""
        return self is Mma.DOT_SCALED


class Combine(str, Enum):
    """How stage 2 sums the top-k slots of a token."""

    ATOMIC = "atomic"  # fp32 atomic add into [T, H], then one cast to bf16
    SLOTS = "slots"  # write [T*A, H] weighted rows, then a reduction over A
    # v2 only: each pair's weighted row rounded to bf16 into [T*A, H], then a combine kernel sums a token's top-k
    # rows in slot order (kernels/combine.py): half the bytes of fp32 rows and no atomics, deterministic
    ROWS = "rows"


@dataclass(frozen=True, slots=True)
class TileConfig:
    """One stage's launch parameters. `combine` only means something in stage 2; `split_k` in both.

    `tail_m` (0: off; v2 stages, a divisor of BLOCK_M below it): the stage's routing plan is aligned to `tail_m`
    rows instead of BLOCK_M, whole BLOCK_M runs of an expert's rows take BLOCK_M tiles and a remainder of one
    `tail_m` block takes a `tail_m`-row tile, so an expert with n rows pads to a multiple of `tail_m` in its last
    tile instead of BLOCK_M (kernels/swmoe.py: TAIL_WHY). Left out of `to_dict` (and the key) while 0."""

    block_m: int = 16
    block_n: int = 64
    block_k: int = 128
    group_m: int = 1
    num_warps: int = 4
    num_stages: int = 3
    mma: Mma = Mma.UPCAST
    combine: Combine = Combine.ATOMIC
    split_k: int = 1
    tail_m: int = 0

    def __post_init__(self) -> None:
        for f in ("block_m", "block_n", "block_k", "group_m", "num_warps", "num_stages", "split_k"):
            v = getattr(self, f)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"TileConfig.{f} must be a positive int, got {v!r}")
        if not isinstance(self.tail_m, int) or isinstance(self.tail_m, bool) or self.tail_m < 0:
            raise ValueError(f"TileConfig.tail_m must be a non-negative int (0: off), got {self.tail_m!r}")
        object.__setattr__(self, "mma", Mma(self.mma))
        object.__setattr__(self, "combine", Combine(self.combine))

    @property
    def plan_rows(self) -> int:
        """The row granularity of the routing plan this stage reads: `tail_m` when set, else BLOCK_M."""
        return self.tail_m or self.block_m

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mma"] = self.mma.value
        d["combine"] = self.combine.value
        if not self.tail_m:  # configs from before the lever keep their keys, ledgers and tables
            del d["tail_m"]
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TileConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown TileConfig fields {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)

    @classmethod
    def from_json(cls, s: str) -> TileConfig:
        return cls.from_dict(json.loads(s))

    def key(self) -> str:
        """Content hash: equal configs share it across processes, machines and releases of one schema."""
        payload = f"tile-v{CONFIG_SCHEMA_VERSION}:{self.to_json()}"
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def replace(self, **changes: Any) -> TileConfig:
        return replace(self, **changes)

    def short(self) -> str:
        s = (
            f"M{self.block_m}N{self.block_n}K{self.block_k}G{self.group_m}"
            f"w{self.num_warps}s{self.num_stages}-{self.mma.value}"
        )
        if self.split_k > 1:
            s += f"-sk{self.split_k}"
        if self.tail_m:
            s += f"-t{self.tail_m}"
        return s + ("" if self.combine is Combine.ATOMIC else f"-{self.combine.value}")


@dataclass(frozen=True, slots=True)
class MoEConfig:
    """The two stages' configs of one layer launch."""

    stage1: TileConfig
    stage2: TileConfig

    def to_dict(self) -> dict[str, Any]:
        return {"stage1": self.stage1.to_dict(), "stage2": self.stage2.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MoEConfig:
        unknown = set(d) - {"stage1", "stage2"}
        if unknown:
            raise ValueError(f"unknown MoEConfig fields {sorted(unknown)}")
        return cls(TileConfig.from_dict(d["stage1"]), TileConfig.from_dict(d["stage2"]))

    def key(self) -> str:
        return hashlib.sha256(f"{self.stage1.key()}:{self.stage2.key()}".encode()).hexdigest()[:16]

    @property
    def e4m3(self) -> bool:
        """A stage runs on e4m3 wgmma (it needs the weights' e4m3 layout, MoEWeights.e4m3)."""
        return self.stage1.mma.e4m3 or self.stage2.mma.e4m3
