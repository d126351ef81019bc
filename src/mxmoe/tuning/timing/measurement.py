"""The record one timing produces: Measurement (the statistics of its samples, the protocol, GPU state and the
checks that fired) with its JSON round trip, the two protocol choices it records (TimingMode, L2Policy), and the
settings a timing is asked for (MeasureSettings).

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
from mxmoe.tuning.timing.stats import CI_RESAMPLES, StopReason, StopRule, Summary
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


@dataclass(frozen=True, slots=True)
class MeasureSettings:
    """How `measure()` times a callable: the protocol's values, apart from the instruments (clock, NVML, the idle
    check) and the arguments it is called with, which measure() takes beside it. Frozen and validated on
    construction, so one settings value serves many measurements (a sweep's workers, an A/A pair) unchanged.

    mode / l2: see TimingMode and L2Policy. warmup_s / warmup_min_iters: the untimed warm-up's time budget and
    floor. min_iters / max_iters / max_time_s / target_rel_ci: the stop rule (`stats.StopRule`). min_iters_budget_s:
    a slow layer takes min_iters only while they fit this much of its warm-up per-iteration time, never fewer than
    `measure.MIN_ITERS_FLOOR` (None: always min_iters); the stop rule still samples until the CI converges.
    bytes_per_set: with l2="rotate", the bytes one call reads, so the row can prove its argument sets exceed L2
    (`measure.rotation_copies`): count the bytes a call reads, not those a set holds (a MoE layer at T=1 reads only
    its hit experts' weights). idle_sample_s: the idle check's sampling time when measure() takes one itself.
    allow_busy: time on a busy GPU anyway (recorded; never claimable). gpu_lead: keep the GPU ahead of the host
    (`measure.LEAD_HOST_FACTOR`), so samples are GPU time in both modes. resamples / seed: the bootstrap CI's.
    """

    mode: TimingMode = TimingMode.EAGER
    l2: L2Policy = L2Policy.FLUSH
    warmup_s: float = 0.1
    warmup_min_iters: int = 10
    min_iters: int = 100
    max_iters: int = 10_000
    max_time_s: float = 5.0
    min_iters_budget_s: float | None = 2.0
    target_rel_ci: float = 0.01
    bytes_per_set: int | None = None
    idle_sample_s: float = 1.0
    allow_busy: bool = False
    gpu_lead: bool = True
    resamples: int = CI_RESAMPLES
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", TimingMode(self.mode))
        object.__setattr__(self, "l2", L2Policy(self.l2))
        self.stop_rule()  # validates the stop rule's fields
        if self.min_iters_budget_s is not None and not self.min_iters_budget_s > 0:
            raise ValueError(f"min_iters_budget_s must be positive or None, got {self.min_iters_budget_s!r}")

    def stop_rule(self) -> StopRule:
        return StopRule(self.target_rel_ci, self.min_iters, self.max_iters, self.max_time_s)


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
