"""The record one timing produces: Measurement (raw samples, their statistics, the protocol, GPU state and the
checks that fired) with its JSON round trip, and the two protocol choices it records (TimingMode, L2Policy).

It exists apart from `measure.py` so that the record and its stored schema (what a row's provenance holds;
gate.PROTOCOL_KEYS names its fields) stand apart from the timing loop that fills it. No torch here. Imported by
`mxmoe.tuning.timing.measure` (which re-exports every name); it never imports it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from enum import Enum
from typing import Any

from mxmoe.spec import PointStats
from mxmoe.tuning.timing.gpu_state import GpuState
from mxmoe.tuning.timing.stats import StopReason, rel_ci_halfwidth

MEASUREMENT_SCHEMA_VERSION = 1


class TimingMode(str, Enum):
    """How each timed iteration launches the work."""

    EAGER = "eager"  # call fn: its kernels launched one by one, as a framework launches them
    GRAPH = "graph"  # replay a CUDA graph captured once after warm-up: no per-kernel launch on the GPU


class L2Policy(str, Enum):
    """How a measurement keeps L2 from serving data the previous iteration left there."""

    ROTATE = "rotate"  # cycle through argument sets whose total bytes exceed L2
    FLUSH = "flush"  # write a 2x-L2 buffer before every iteration, outside the events
    NONE = "none"  # nothing: warm-L2 timing, for prefill shapes whose working set dwarfs L2


@dataclass(frozen=True, slots=True)
class Measurement:
    """One timed config: the raw samples, their statistics, the protocol, GPU state and checks.

    `claimable` is derived: True only when no check fired. Percentiles are numpy `linear`;
    `p95_nearest_us` is seed708's nearest rank. CI is a seeded percentile bootstrap of the median.
    """

    samples_us: tuple[float, ...]
    n: int
    median_us: float
    p5_us: float
    p95_us: float
    p95_nearest_us: float
    mean_us: float
    std_us: float
    ci_lo_us: float
    ci_hi_us: float
    ci_level: float
    ci_resamples: int
    ci_seed: int
    percentile_method: str
    target_rel_ci: float
    stop_reason: StopReason
    mode: TimingMode
    l2: L2Policy
    rotate_sets: int | None  # distinct argument sets cycled; None when a callable made them
    l2_bytes: int | None
    warmup_iters: int
    warmup_s: float
    host_us: float  # host enqueue time of one iteration (launch overhead), not in the samples
    lead_us: float  # GPU busy-wait before each start event (0: the host may starve the GPU)
    timed_s: float
    clock: str
    gpu_before: GpuState
    gpu_after: GpuState
    checks: tuple[str, ...]
    check_detail: str

    @property
    def claimable(self) -> bool:
        return not self.checks

    @property
    def rel_ci_halfwidth(self) -> float:
        return rel_ci_halfwidth(self.median_us, self.ci_lo_us, self.ci_hi_us)

    def point_stats(self) -> PointStats:
        return PointStats(self.median_us, self.ci_lo_us, self.ci_hi_us)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        d["samples_us"] = list(self.samples_us)
        d["checks"] = list(self.checks)
        for key in ("stop_reason", "mode", "l2"):
            d[key] = d[key].value
        d["gpu_before"] = self.gpu_before.to_dict()
        d["gpu_after"] = self.gpu_after.to_dict()
        d["claimable"] = self.claimable
        d["schema"] = MEASUREMENT_SCHEMA_VERSION
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Measurement:
        d = dict(d)
        if d.pop("schema", None) != MEASUREMENT_SCHEMA_VERSION:
            raise ValueError(f"Measurement schema must be {MEASUREMENT_SCHEMA_VERSION}")
        claimable = d.pop("claimable", None)
        names = {f.name for f in fields(cls)}
        if set(d) != names:
            raise ValueError(
                f"Measurement fields differ: unknown {sorted(set(d) - names)}, missing {sorted(names - set(d))}"
            )
        d.update(
            samples_us=tuple(float(x) for x in d["samples_us"]),
            checks=tuple(d["checks"]),
            stop_reason=StopReason(d["stop_reason"]),
            mode=TimingMode(d["mode"]),
            l2=L2Policy(d["l2"]),
            gpu_before=GpuState.from_dict(d["gpu_before"]),
            gpu_after=GpuState.from_dict(d["gpu_after"]),
        )
        m = cls(**d)
        if claimable is not None and claimable != m.claimable:
            raise ValueError(f"stored claimable={claimable} contradicts checks {m.checks}")
        return m
