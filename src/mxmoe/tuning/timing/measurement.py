"""The record one timing produces: Measurement (the statistics of its samples, the protocol, GPU state and the
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
from mxmoe.tuning.timing.stats import StopReason, Summary
from mxmoe.tuning.timing.value import TIMING_FIELDS, Timing, pop_timing, timing_fields

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


# The descriptive statistics a Measurement stores beside its Timing's fields (its dict is flat, as it always was).
_SPREAD_FIELDS = ("p5_us", "p95_nearest_us", "mean_us", "std_us")


@dataclass(frozen=True, slots=True)
class Measurement:
    """One timed config: the statistics of its samples (`summary`, whose `timing` is what a ledger row keeps), the
    protocol, GPU state and checks.

    `claimable` is derived: True only when no check fired. Percentiles are numpy `linear`;
    `p95_nearest_us` is seed708's nearest rank. CI is a seeded percentile bootstrap of the median.
    The dict form stays flat (`samples_us`, `n`, `median_us`, ... beside `mode`, `l2`, ...): it is stored in every
    measured row's provenance, so its keys do not follow the nesting.
    """

    summary: Summary
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
    def timing(self) -> Timing:
        return self.summary.timing

    @property
    def claimable(self) -> bool:
        return not self.checks

    @property
    def rel_ci_halfwidth(self) -> float:
        return self.timing.rel_ci_halfwidth

    def point_stats(self) -> PointStats:
        return self.timing.point_stats()

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = timing_fields(self.timing) | {"n": self.summary.n}
        d |= {name: getattr(self.summary, name) for name in _SPREAD_FIELDS}
        d |= {f.name: getattr(self, f.name) for f in fields(self) if f.name != "summary"}
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
        names = {f.name for f in fields(cls)} - {"summary"} | {*TIMING_FIELDS, "n", *_SPREAD_FIELDS}
        if set(d) != names:
            raise ValueError(
                f"Measurement fields differ: unknown {sorted(set(d) - names)}, missing {sorted(names - set(d))}"
            )
        n, timing = d.pop("n"), pop_timing(d, "Measurement")
        if timing is None or timing.n != n:
            raise ValueError(f"Measurement n={n} does not match its {0 if timing is None else timing.n} samples")
        d.update(
            summary=Summary(timing, **{name: float(d.pop(name)) for name in _SPREAD_FIELDS}),
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
