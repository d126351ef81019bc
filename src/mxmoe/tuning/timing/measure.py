"""Timing: per-iteration CUDA-event samples, adaptive until the median's CI is tight, with GPU state.

One sample array per measurement; median, p5, p95, mean, std and the bootstrap CI all come from it
(REFERENCE.md shortfall 2). Every iteration has its own event pair; anything done to defeat L2 (a
flush, or choosing the next rotating argument set) runs before the start event, outside the timing,
and so does a GPU busy-wait long enough that the host has queued the iteration before the GPU
reaches it: samples are GPU time, and the host's launch cost is recorded apart (`host_us`).
The clock is injectable (`mxmoe.tuning.timing.clocks`): `CudaEventClock` on a GPU, `FakeClock` for CPU tests and
the interpreter sweep (its rows carry "fake_clock" and are never claimable). The record a timing returns
(Measurement, TimingMode, L2Policy) and the settings measure() takes (MeasureSettings) are `measurement.py`'s; this
module re-exports them.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from mxmoe.dispatch import interpreter_active
from mxmoe.tuning.timing.clocks import L2_FLUSH_FACTOR, Clock, CudaEventClock, Step
from mxmoe.tuning.timing.gpu_state import (
    Check,
    CheckResult,
    GpuState,
    idle_check,
    merge_checks,
    process_check,
    read_gpu_state,
    unavailable_state,
)
from mxmoe.tuning.timing.gpu_state import clock_check as gpu_clock_check
from mxmoe.tuning.timing.measurement import (
    MEASUREMENT_SCHEMA_VERSION,
    L2Policy,
    Measurement,
    MeasureSettings,
    TimingMode,
)
from mxmoe.tuning.timing.nvml import MissingNvml, Nvml, open_nvml
from mxmoe.tuning.timing.stats import (
    CI_LEVEL,
    PERCENTILE_METHOD,
    StopReason,
    StopRule,
    bootstrap_median_ci,
    summarize,
)
from mxmoe.tuning.timing.value import rel_ci_halfwidth

GRAPH_WARMUP_REPLAYS = 3  # untimed replays after capture: the first replay uploads the graph
MAX_WARMUP_ITERS = 100_000
# The GPU lead: a busy-wait kernel before each iteration's start event, 1.5x the host's enqueue time
# plus 20 us for the event records, so the GPU never waits on the CPU inside an event pair. Without
# it, a 16 MB torch.sum timed at 32 us (the host's launch cost) instead of its GPU time (H100, l2=none).
LEAD_HOST_FACTOR = 1.5
LEAD_EXTRA_US = 20.0
# A slow layer (tens of ms at T=32768) takes min_iters only while they fit in `min_iters_budget_s` of the warm-up's
# per-iteration time, and never fewer than MIN_ITERS_FLOOR: its run-to-run noise is ~0.01% (A/A on the H100),
# so 100 samples of 80 ms would spend 8 s per row to tighten a CI already far inside the 1% target.
MIN_ITERS_FLOOR = 20
HOST_PROBE_ITERS = 20  # few enough that the launch queue never fills (which would time the GPU instead)


def rotation_copies(bytes_per_set: int, l2_bytes: int, *, factor: float = L2_FLUSH_FACTOR) -> int:
    """Argument sets to cycle so that, between two uses of one set, the others touch `factor` x L2.

    With k sets, k - 1 others are read between two uses of a set: k = ceil(factor * L2 / bytes) + 1,
    at least 2. E.g. 1 MiB of weights on a 50 MiB L2: 101 sets.
    """
    if bytes_per_set <= 0 or l2_bytes <= 0:
        raise ValueError(f"bytes_per_set ({bytes_per_set}) and l2_bytes ({l2_bytes}) must be positive")
    return max(2, math.ceil(factor * l2_bytes / bytes_per_set) + 1)


ArgSets = Sequence[Sequence[object]] | Callable[[int], Sequence[object]]


@dataclass(frozen=True, slots=True)
class _Plan:
    """How each iteration is driven: the step to time and the untimed work before it."""

    eager: Step
    before: Step | None
    calls: tuple[Callable[[], object], ...]  # one per argument set, for graph capture
    rotate_sets: int | None


def _plan(fn: Callable[..., object], rotate: ArgSets | None, flush: Callable[[], None] | None) -> _Plan:
    if rotate is None or not callable(rotate):
        sets = [()] if rotate is None else [tuple(a) for a in rotate]
        if not sets:
            raise ValueError("rotate holds no argument sets")
        calls = tuple(functools.partial(fn, *args) for args in sets)
        before = None if flush is None else (lambda i: flush())
        return _Plan(lambda i: calls[i % len(calls)](), before, calls, None if rotate is None else len(sets))
    pending: list[Sequence[object]] = [()]

    def pick(i: int) -> None:  # choose the set before the start event, so it is never timed
        pending[0] = rotate(i)
        if flush is not None:
            flush()

    return _Plan(lambda i: fn(*pending[0]), pick, (), None)


def _warm_up(clock: Clock, step: Step, before: Step | None, warmup_s: float, min_iters: int) -> tuple[int, float]:
    """Run until `warmup_s` of the clock's time has passed and at least `min_iters` ran; the batch
    grows at most 2x, because the first call's time (compile, autotune) overstates later ones."""
    iters, elapsed, batch = 0, 0.0, 1
    while True:
        t0 = clock.now_s()
        clock.time_batch(step, range(iters, iters + batch), before)
        elapsed += clock.now_s() - t0
        iters += batch
        if (elapsed >= warmup_s and iters >= min_iters) or iters >= MAX_WARMUP_ITERS:
            return iters, elapsed
        per = elapsed / iters
        want = math.ceil((warmup_s - elapsed) / per) if per > 0 else iters
        batch = max(1, min(max(want, min_iters - iters), 2 * iters, MAX_WARMUP_ITERS - iters))


def _budgeted_min_iters(min_iters: int, budget_s: float | None, per_iter_s: float) -> int:
    if budget_s is None or per_iter_s <= 0:
        return min_iters
    return min(min_iters, max(MIN_ITERS_FLOOR, math.ceil(budget_s / per_iter_s)))


def _timed(
    clock: Clock,
    step: Step,
    before: Step | None,
    lead_us: float,
    rule: StopRule,
    first: int,
    resamples: int,
    seed: int,
) -> tuple[list[float], StopReason, float]:
    """Batches until the stop rule fires; `elapsed` counts batch time only (not the bootstrap)."""
    samples: list[float] = []
    elapsed = 0.0
    while True:
        batch = rule.next_batch(len(samples), elapsed)
        start = first + len(samples)
        t0 = clock.now_s()
        samples.extend(clock.time_batch(step, range(start, start + batch), before, lead_us))
        elapsed += clock.now_s() - t0
        lo, hi = bootstrap_median_ci(samples, level=CI_LEVEL, resamples=resamples, seed=seed)
        reason = rule.decide(len(samples), rel_ci_halfwidth(float(np.median(samples)), lo, hi), elapsed)
        if reason is not None:
            return samples, reason, elapsed


def _nvml_index(nvml: Nvml, uuid: str | None) -> int | None:
    """NVML index of the CUDA device by UUID (CUDA_VISIBLE_DEVICES renumbers devices); None if not found."""
    if uuid is None:
        return 0
    want = uuid.lower().removeprefix("gpu-")
    try:
        count = nvml.device_count()
        for i in range(count):
            if nvml.uuid(i).lower().removeprefix("gpu-") == want:
                return i
    except RuntimeError:
        return 0  # NVML unusable: index 0 reads as unavailable, which is what the row must say
    return None


def resolve_device(clock: Clock | None, nvml: Nvml | None, device_index: int | None) -> tuple[Clock, Nvml, int | None]:
    """measure()'s defaults: a CUDA-event clock, the real NVML (none for a synthetic clock), and the
    NVML index of the clock's device (None when it cannot be found: the row then says so)."""
    clock = clock if clock is not None else CudaEventClock()
    if nvml is None:
        nvml = MissingNvml("fake clock: NVML not consulted") if clock.synthetic else open_nvml()
    index = device_index if device_index is not None else _nvml_index(nvml, clock.device_uuid())
    return clock, nvml, index


def idle_before(
    *,
    clock: Clock | None = None,
    nvml: Nvml | None = None,
    device_index: int | None = None,
    idle_sample_s: float = 1.0,
    own_pids: Iterable[int] | None = None,
) -> CheckResult:
    """One idle check, for a caller that times many configs: take it before this process loads the
    GPU and pass it to every measure(idle=...), since NVML's utilisation counts our own kernels."""
    _, nvml, index = resolve_device(clock, nvml, device_index)
    if index is None:
        return CheckResult((Check.NVML_UNAVAILABLE.value,), "CUDA device not found in NVML")
    return idle_check(nvml, idle_sample_s, index=index, own_pids=own_pids)


def _protocol_checks(clock: Clock, s: MeasureSettings, plan: _Plan) -> CheckResult:
    codes: list[str] = []
    detail: list[str] = []
    if clock.synthetic:
        codes.append(Check.FAKE_CLOCK.value)
    if interpreter_active():
        codes.append(Check.INTERPRETER.value)
    if s.allow_busy:
        codes.append(Check.BUSY_ALLOWED.value)
    if s.l2 is L2Policy.ROTATE:
        l2_bytes = clock.l2_bytes()
        if plan.rotate_sets is None or s.bytes_per_set is None or l2_bytes is None:
            codes.append(Check.L2_ROTATION_SHORT.value)
            detail.append("rotation unverified: pass a list of argument sets and bytes_per_set")
        elif plan.rotate_sets < (need := rotation_copies(s.bytes_per_set, l2_bytes)):
            codes.append(Check.L2_ROTATION_SHORT.value)
            detail.append(f"{plan.rotate_sets} argument sets, {need} needed to exceed L2")
    return CheckResult(tuple(codes), "; ".join(detail))


@dataclass(frozen=True, slots=True)
class _Prepared:
    """The timed phase's inputs, fixed by the warm-up: the step to time, its first index, the stop rule with the
    budgeted min_iters, and what the warm-up and the host probe measured."""

    step: Step
    first: int
    rule: StopRule
    warmup_iters: int
    warmup_s: float
    host_us: float
    lead_us: float


def _prepare(clock: Clock, plan: _Plan, s: MeasureSettings) -> _Prepared:
    """Warm up eagerly, budget min_iters from the warm-up's pace, capture and warm the graph replays (graph mode),
    then probe the host's enqueue cost, which sets the GPU lead."""
    warmup_iters, warmup_s = _warm_up(clock, plan.eager, plan.before, s.warmup_s, s.warmup_min_iters)
    min_iters = _budgeted_min_iters(s.min_iters, s.min_iters_budget_s, warmup_s / warmup_iters)
    step, first = plan.eager, warmup_iters
    if s.mode is TimingMode.GRAPH:
        replays = clock.capture(plan.calls)
        step = lambda i: replays[i % len(replays)]()
        clock.time_batch(step, range(first, first + GRAPH_WARMUP_REPLAYS), plan.before)
        first += GRAPH_WARMUP_REPLAYS
    host_us = clock.host_us(step, range(first, first + HOST_PROBE_ITERS), plan.before)
    lead_us = LEAD_HOST_FACTOR * host_us + LEAD_EXTRA_US if s.gpu_lead else 0.0
    rule = replace(s.stop_rule(), min_iters=min_iters)
    return _Prepared(step, first + HOST_PROBE_ITERS, rule, warmup_iters, warmup_s, host_us, lead_us)


def _check_arguments(s: MeasureSettings, rotate: ArgSets | None) -> None:
    if s.l2 is L2Policy.ROTATE and rotate is None:
        raise ValueError("l2='rotate' needs rotate= (argument sets whose bytes exceed L2)")
    if s.mode is TimingMode.GRAPH and callable(rotate):
        raise ValueError("graph mode captures one graph per argument set: pass rotate as a list, not a callable")


def measure(
    fn: Callable[..., object],
    settings: MeasureSettings | None = None,
    *,
    rotate: ArgSets | None = None,
    clock: Clock | None = None,
    nvml: Nvml | None = None,
    device_index: int | None = None,
    idle: CheckResult | None = None,
    own_pids: Iterable[int] | None = None,
) -> Measurement:
    """Time `fn` (called as fn(*args) with `rotate`'s sets, or fn()) as `settings` say (MeasureSettings() when None)
    and return every statistic.

    `rotate`: a list of argument sets cycled in order, or a callable i -> args (eager only, and its rotation cannot
    be verified, so the row is not claimable). `clock` / `nvml` / `device_index`: see `resolve_device`. `idle`: an
    idle_check result taken before this process loaded the GPU (`idle_before`); when None, one is taken here.
    `own_pids`: processes whose GPU use is ours. A failed check never raises: the row is returned with its reason
    codes and is not claimable. The host's own enqueue cost per iteration is recorded beside the samples (`host_us`).
    """
    s = settings if settings is not None else MeasureSettings()
    _check_arguments(s, rotate)
    clock, nvml, index = resolve_device(clock, nvml, device_index)
    if index is None:
        idle = CheckResult((Check.NVML_UNAVAILABLE.value,), "CUDA device not found in NVML")
    elif idle is None:
        idle = idle_check(nvml, s.idle_sample_s, index=index, own_pids=own_pids)
    plan = _plan(fn, rotate, clock.flusher() if s.l2 is L2Policy.FLUSH else None)
    prep = _prepare(clock, plan, s)

    def state() -> GpuState:
        return unavailable_state("CUDA device not found in NVML") if index is None else read_gpu_state(nvml, index)

    before = state()
    samples, stop, timed_s = _timed(clock, prep.step, plan.before, prep.lead_us, prep.rule, prep.first, s.resamples,
                                    s.seed)
    after = state()
    checks = merge_checks(
        idle,
        process_check(before, own_pids),
        process_check(after, own_pids),
        gpu_clock_check(before, after, samples=samples),
        _protocol_checks(clock, s, plan),
    )
    return Measurement(
        summary=summarize(samples, level=CI_LEVEL, resamples=s.resamples, seed=s.seed), ci_level=CI_LEVEL,
        ci_resamples=s.resamples, ci_seed=s.seed, percentile_method=PERCENTILE_METHOD, target_rel_ci=s.target_rel_ci,
        stop_reason=stop, mode=s.mode, l2=s.l2, rotate_sets=plan.rotate_sets, l2_bytes=clock.l2_bytes(),
        warmup_iters=prep.warmup_iters, warmup_s=prep.warmup_s, host_us=prep.host_us, lead_us=prep.lead_us,
        timed_s=timed_s, clock=clock.name, gpu_before=before, gpu_after=after, checks=checks.codes,
        check_detail=checks.detail,
    )


__all__ = ["GRAPH_WARMUP_REPLAYS", "HOST_PROBE_ITERS", "LEAD_EXTRA_US", "LEAD_HOST_FACTOR", "MAX_WARMUP_ITERS",
           "MEASUREMENT_SCHEMA_VERSION", "MIN_ITERS_FLOOR", "ArgSets", "L2Policy", "MeasureSettings", "Measurement",
           "StopReason", "TimingMode", "idle_before", "measure", "resolve_device", "rotation_copies"]
