"""The locked spec: FLOP and byte formulas, floors, and the win / regression predicates.

Pure functions of numbers; no torch or triton. Times are microseconds, rates are per second.
Two profiles: `mxmoe` (the default, DESIGN.md "Locked spec") and `seed708` (the reference
harness's constants, reproduced exactly so a claim can be stated in #708's own terms).
Do not change these constants as part of tuning.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from mxmoe.shapes import DECODE_MAX_T, MoEShape, Path

# MXFP4 weights: 4 bits per element plus one e8m0 byte per 32 elements.
WEIGHT_BYTES_PER_ELEMENT = 0.5 + 1 / 32
# Activation bytes per element at each path's width (MX paths carry their per-32 scale byte).
ACT_BYTES_PER_ELEMENT = {Path.A16W4: 2.0, Path.A8W4: 1.0 + 1 / 32, Path.A4W4: 0.5 + 1 / 32}
OUTPUT_BYTES_PER_ELEMENT = 2.0  # the layer always returns bf16

# Vendor dense bf16 peaks (MFU denominator of the mxmoe profile), TFLOP/s without sparsity.
VENDOR_BF16_PEAK = {"H100": 989.4e12, "H200": 989.4e12}

E2E_LOGITS_DIFF_MAX = 0.01  # guardrail threshold, both profiles
# Relative slack when comparing ratios, so that "exactly +10%" is not lost to binary rounding.
_EPS = 1e-9


class Profile(str, Enum):
    """Which locked constants judge a claim."""

    MXMOE = "mxmoe"
    SEED708 = "seed708"


@dataclass(frozen=True, slots=True)
class PointStats:
    """One side of a grid point: the median and its 95% CI, in microseconds."""

    median_us: float
    ci_lo_us: float
    ci_hi_us: float

    def __post_init__(self) -> None:
        if not (self.ci_lo_us <= self.median_us <= self.ci_hi_us):
            raise ValueError(f"CI [{self.ci_lo_us}, {self.ci_hi_us}] does not contain median {self.median_us}")


def flops(shape: MoEShape, t: int) -> float:
    """2 * T * topk * (hidden * 2 * inter + inter * hidden): both stages' multiply-adds."""
    return 2.0 * t * shape.topk * (shape.hidden * 2 * shape.inter + shape.inter * shape.hidden)


def expert_weight_bytes(shape: MoEShape) -> float:
    """W13 and W2 of one expert in MXFP4, scales included."""
    return (2 * shape.inter * shape.hidden + shape.hidden * shape.inter) * WEIGHT_BYTES_PER_ELEMENT


def layer_bytes(shape: MoEShape, path: Path, t: int, experts_hit: int) -> float:
    """Fewest bytes a layer must move: the weights of the experts hit, read once, the input
    activations read at the path's width and the bf16 output written once.

    The stage-1 intermediate is left out on purpose: a fused kernel need not spill it, so counting
    it would raise the floor above what the best kernel must pay.
    """
    if not 0 <= experts_hit <= shape.experts:
        raise ValueError(f"experts_hit={experts_hit} outside [0, {shape.experts}]")
    acts = t * shape.hidden * (ACT_BYTES_PER_ELEMENT[Path(path)] + OUTPUT_BYTES_PER_ELEMENT)
    return experts_hit * expert_weight_bytes(shape) + acts


def expected_experts_hit(shape: MoEShape, t: int) -> float:
    """Expected distinct experts under uniform routing (used only where no routing is at hand)."""
    if t == 0:
        return 0.0
    routed = shape.routed_experts
    p_miss = (1 - shape.routed_topk / routed) ** t
    return routed * (1 - p_miss) + (1 if shape.shared_expert else 0)


def memory_floor_us(bytes_moved: float, bandwidth: float) -> float:
    """bytes / B, with B the device copy bandwidth measured in the same run (bytes/s)."""
    if bandwidth <= 0:
        raise ValueError(f"bandwidth must be positive, got {bandwidth}")
    return bytes_moved / bandwidth * 1e6


def compute_floor_us(flop: float, rate: float) -> float:
    """FLOPs / P, with P the dense bf16 matmul rate measured in the same run (FLOP/s)."""
    if rate <= 0:
        raise ValueError(f"rate must be positive, got {rate}")
    return flop / rate * 1e6


def roofline_fraction(time_us: float, memory_floor: float, compute_floor: float) -> float:
    """max(floors) / time: 1.0 is as fast as the GPU allows."""
    if time_us <= 0:
        raise ValueError(f"time must be positive, got {time_us}")
    return max(memory_floor, compute_floor) / time_us


def mfu(flop: float, time_us: float, peak: float) -> float:
    """Model FLOP utilisation against `peak` (vendor peak for mxmoe, measured ceiling for seed708)."""
    if time_us <= 0 or peak <= 0:
        raise ValueError(f"time ({time_us}) and peak ({peak}) must be positive")
    return flop / (time_us * 1e-6) / peak


def vendor_peak(gpu_name: str) -> float | None:
    for key, peak in VENDOR_BF16_PEAK.items():
        if key in gpu_name:
            return peak
    return None


def p95_nearest_rank(samples: Sequence[float]) -> float:
    """seed708's p95: index round(0.95 * (n - 1)) of the sorted samples."""
    if not samples:
        raise ValueError("p95 of no samples")
    ordered = sorted(samples)
    return ordered[round(0.95 * (len(ordered) - 1))]


# ---- mxmoe profile -------------------------------------------------------------------------------


def win_margin(t: int) -> float:
    """Relative speedup a win needs: 3% in decode, 2% in the crossover and prefill."""
    return 0.03 if t <= DECODE_MAX_T else 0.02


def regression_band_us(t: int, baseline_us: float) -> float:
    """Slowdown that counts as a regression: max(2%, 1 us) in decode, 1% elsewhere."""
    if t <= DECODE_MAX_T:
        return max(0.02 * baseline_us, 1.0)
    return 0.01 * baseline_us


def _is_win_mxmoe(t: int, base: PointStats, cand: PointStats) -> bool:
    faster = cand.median_us <= base.median_us * (1 - win_margin(t)) * (1 + _EPS)
    return faster and cand.ci_hi_us < base.ci_lo_us


def _is_regression_mxmoe(t: int, base: PointStats, cand: PointStats) -> bool:
    return cand.median_us - base.median_us > regression_band_us(t, base.median_us) * (1 + _EPS)


# ---- seed708 profile -----------------------------------------------------------------------------

SEED708_SMALL_T_MAX = 64
SEED708_LARGE_T = (16384, 32768)
SEED708_SMALL_SPEEDUP = 0.90  # tuned <= 0.90 * baseline
SEED708_SMALL_MIN_SAVING_US = 2.0
SEED708_MFU_GAIN = 1.10  # tuned_mfu >= 1.10 * baseline_mfu
SEED708_REGRESSION_RATIO = 1.02
SEED708_REGRESSION_FLOOR_SMALL_US = 8.0
SEED708_REGRESSION_FLOOR_US = 2.0


def _is_win_seed708(t: int, base: PointStats, cand: PointStats) -> bool:
    b, c = base.median_us, cand.median_us
    if t <= SEED708_SMALL_T_MAX:
        return c <= SEED708_SMALL_SPEEDUP * b * (1 + _EPS) and b - c >= SEED708_SMALL_MIN_SAVING_US * (1 - _EPS)
    if t in SEED708_LARGE_T:
        # MFU has the same FLOPs and denominator on both sides, so the MFU ratio is b / c.
        return b / c >= SEED708_MFU_GAIN * (1 - _EPS)
    return False  # 128 .. 8192 are only regression-guarded in the reference


def _is_regression_seed708(t: int, base: PointStats, cand: PointStats) -> bool:
    b, c = base.median_us, cand.median_us
    floor = SEED708_REGRESSION_FLOOR_SMALL_US if t <= SEED708_SMALL_T_MAX else SEED708_REGRESSION_FLOOR_US
    return c > SEED708_REGRESSION_RATIO * b * (1 + _EPS) and c - b > floor * (1 + _EPS)


def is_win(t: int, base: PointStats, cand: PointStats, profile: Profile = Profile.MXMOE) -> bool:
    """Does `cand` beat `base` at grid point T under the profile's rules?"""
    return _is_win_seed708(t, base, cand) if Profile(profile) is Profile.SEED708 else _is_win_mxmoe(t, base, cand)


def is_regression(t: int, base: PointStats, cand: PointStats, profile: Profile = Profile.MXMOE) -> bool:
    """Is `cand` slower than `base` at grid point T by more than the profile's band?"""
    if Profile(profile) is Profile.SEED708:
        return _is_regression_seed708(t, base, cand)
    return _is_regression_mxmoe(t, base, cand)


def seed708_mfu(shape: MoEShape, t: int, time_us: float, measured_ceiling: float) -> float:
    """2 * T * topk * 3 * hidden * inter / time over the device's measured dense ceiling."""
    return mfu(2.0 * t * shape.topk * 3 * shape.hidden * shape.inter, time_us, measured_ceiling)


def crossover_tokens(shape: MoEShape, bandwidth: float, rate: float) -> float:
    """T where the compute floor meets the memory floor, every expert hit (for plots and heuristics)."""
    per_token_flop = flops(shape, 1)
    all_weights = shape.experts * expert_weight_bytes(shape)
    return all_weights / bandwidth * rate / per_token_flop if per_token_flop else math.inf
