"""GPU state, read only, and the fail-closed checks a measurement must pass to be claimable.

Everything goes through the small `Nvml` protocol of `mxmoe.tuning.timing.nvml`: `PynvmlNvml` reads a real GPU,
`FakeNvml` is scriptable for CPU tests.
No NVML setter is ever called: clocks are verified, never requested. An administrator who wants
locked clocks gets the `nvidia-smi` command printed by `locked_clocks_advice`, never run.
A missing pynvml or GPU gives a state with available=False, so a row says so instead of crashing.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from mxmoe.tuning.timing.nvml import ClockDomain, ClockKind, Nvml, NvmlError, NvmlUnavailableError

GPU_STATE_SCHEMA_VERSION = 1
IDLE_MAX_UTIL_PCT = 5.0  # averaged over the idle sample; above it another job shares the GPU
CLOCK_MAX_DROP = 0.02  # relative SM clock drop between before and after that calls for the drift test
CLOCK_MAX_DRIFT = 0.01  # |median of the last third / median of the first third - 1| that voids a dropped-clock row
DRIFT_MIN_SAMPLES = 9  # fewer samples: thirds too small to judge, the NVML drop alone decides


class Check(str, Enum):
    """Machine-readable reasons a measurement is not claimable (one code each)."""

    BUSY_OTHER_PROCESS = "busy:other_process"  # another compute process holds the GPU
    BUSY_UTILIZATION = "busy:utilization"  # GPU utilisation >= 5% over the idle sample
    BUSY_ALLOWED = "busy:allowed"  # the user timed with allow_busy: idleness was not enforced
    CLOCK_DROP = "clock:drop"  # SM clock fell by more than 2% from before to after and the samples drifted
    CLOCK_THERMAL = "clock:thermal"  # sw or hw thermal slowdown active at either end
    CLOCK_POWER = "clock:power"  # hw power brake active at either end (the sw power cap alone: see clock_check)
    CLOCK_HW_SLOWDOWN = "clock:hw_slowdown"  # hw slowdown active at either end
    NVML_UNAVAILABLE = "nvml:unavailable"  # no pynvml or no GPU: nothing could be verified
    INTERPRETER = "interpreter"  # TRITON_INTERPRET=1: the kernel ran on the CPU interpreter
    FAKE_CLOCK = "fake_clock"  # synthetic samples, not a real GPU timing
    L2_ROTATION_SHORT = "l2:rotation_short"  # fewer rotating argument sets than needed to exceed L2


# NVML clock-event (formerly "throttle") reason bits, from nvml.h; names are ours.
CLOCK_EVENT_BITS: dict[int, str] = {
    0x1: "idle",
    0x2: "applications_clocks_setting",  # also "user defined clocks": set while -lgc / -ac cap clocks
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal",
    0x40: "hw_thermal",
    0x80: "hw_power_brake",
    0x100: "display_clocks",
}
_THERMAL = frozenset({"sw_thermal", "hw_thermal"})
_POWER = frozenset({"hw_power_brake"})
POWER_CAP = "sw_power_cap"
_HW_SLOWDOWN = frozenset({"hw_slowdown"})


def decode_clock_events(mask: int) -> tuple[str, ...]:
    """Names of the set bits of an NVML clock-event mask; unknown bits as `unknown:0x..`."""
    names = [name for bit, name in CLOCK_EVENT_BITS.items() if mask & bit]
    rest = mask & ~sum(CLOCK_EVENT_BITS)
    if rest:
        names.append(f"unknown:{rest:#x}")
    return tuple(names)


@dataclass(frozen=True, slots=True)
class GpuState:
    """One read of a GPU. Any field NVML could not give is None, with the error kept in `errors`."""

    available: bool
    index: int
    read_at: str  # UTC ISO-8601
    reason: str | None = None  # why unavailable
    name: str | None = None
    uuid: str | None = None
    driver_version: str | None = None
    cuda_driver_version: str | None = None
    sm_clock_mhz: int | None = None
    mem_clock_mhz: int | None = None
    sm_clock_max_mhz: int | None = None
    mem_clock_max_mhz: int | None = None
    sm_clock_app_mhz: int | None = None
    mem_clock_app_mhz: int | None = None
    sm_clock_default_app_mhz: int | None = None
    mem_clock_default_app_mhz: int | None = None
    clock_event_mask: int | None = None
    clock_events: tuple[str, ...] = ()
    temperature_c: int | None = None
    power_w: float | None = None
    power_limit_w: float | None = None
    memory_used_bytes: int | None = None
    memory_total_bytes: int | None = None
    compute_pids: tuple[int, ...] = ()
    util_gpu_pct: int | None = None
    util_mem_pct: int | None = None
    clocks_locked: bool | None = None
    errors: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        for key in ("clock_events", "compute_pids", "errors"):
            d[key] = list(d[key])
        d["schema"] = GPU_STATE_SCHEMA_VERSION
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GpuState:
        d = dict(d)
        if d.pop("schema", None) != GPU_STATE_SCHEMA_VERSION:
            raise ValueError(f"GpuState schema must be {GPU_STATE_SCHEMA_VERSION}")
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown GpuState fields: {sorted(unknown)}")
        for key in ("clock_events", "compute_pids", "errors"):
            d[key] = tuple(d.get(key, ()))
        return cls(**d)


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def unavailable_state(reason: str, index: int = 0) -> GpuState:
    return GpuState(available=False, index=index, read_at=_utc_now(), reason=reason)


def _clocks_locked(sm: int | None, sm_app: int | None, events: tuple[str, ...]) -> bool | None:
    """Current SM clock equals the application target, or NVML says user-defined clocks cap it."""
    if sm is None:
        return None
    if "applications_clocks_setting" in events:
        return True
    return None if sm_app is None else sm == sm_app


def read_gpu_state(nvml: Nvml, index: int = 0) -> GpuState:
    """Read everything once; per-field failures become None plus an `errors` entry, never a raise."""
    try:
        count = nvml.device_count()
    except NvmlUnavailableError as exc:
        return unavailable_state(str(exc), index)
    if not 0 <= index < count:
        return unavailable_state(f"no GPU index {index} (NVML sees {count})", index)
    errors: list[str] = []

    def get(label: str, query: Callable[[], Any]) -> Any:
        try:
            return query()
        except NvmlError as exc:
            errors.append(f"{label}: {exc}")
            return None

    def clock(domain: ClockDomain, kind: ClockKind) -> int | None:
        return get(f"{domain.value}_clock_{kind.value}", lambda: nvml.clock_mhz(index, domain, kind))

    mask = get("clock_event_reasons", lambda: nvml.clock_event_reasons(index))
    events = decode_clock_events(mask) if mask is not None else ()
    cuda = get("cuda_driver_version", nvml.cuda_driver_version)
    power = get("power", lambda: nvml.power_mw(index))
    limit = get("power_limit", lambda: nvml.power_limit_mw(index))
    memory = get("memory", lambda: nvml.memory_bytes(index)) or (None, None)
    util = get("utilization", lambda: nvml.utilization_pct(index)) or (None, None)
    sm, sm_app = clock(ClockDomain.SM, ClockKind.CURRENT), clock(ClockDomain.SM, ClockKind.APP)
    return GpuState(
        available=True,
        index=index,
        read_at=_utc_now(),
        name=get("name", lambda: nvml.name(index)),
        uuid=get("uuid", lambda: nvml.uuid(index)),
        driver_version=get("driver_version", nvml.driver_version),
        cuda_driver_version=None if cuda is None else f"{cuda // 1000}.{cuda % 1000 // 10}",
        sm_clock_mhz=sm,
        mem_clock_mhz=clock(ClockDomain.MEM, ClockKind.CURRENT),
        sm_clock_max_mhz=clock(ClockDomain.SM, ClockKind.MAX),
        mem_clock_max_mhz=clock(ClockDomain.MEM, ClockKind.MAX),
        sm_clock_app_mhz=sm_app,
        mem_clock_app_mhz=clock(ClockDomain.MEM, ClockKind.APP),
        sm_clock_default_app_mhz=clock(ClockDomain.SM, ClockKind.DEFAULT_APP),
        mem_clock_default_app_mhz=clock(ClockDomain.MEM, ClockKind.DEFAULT_APP),
        clock_event_mask=mask,
        clock_events=events,
        temperature_c=get("temperature", lambda: nvml.temperature_c(index)),
        power_w=None if power is None else power / 1000.0,
        power_limit_w=None if limit is None else limit / 1000.0,
        memory_used_bytes=memory[0],
        memory_total_bytes=memory[1],
        compute_pids=tuple(get("compute_pids", lambda: nvml.compute_pids(index)) or ()),
        util_gpu_pct=util[0],
        util_mem_pct=util[1],
        clocks_locked=_clocks_locked(sm, sm_app, events),
        errors=tuple(errors),
    )


# ---- checks ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CheckResult:
    """Outcome of one check: no codes means passed; `detail` says what was seen, for people."""

    codes: tuple[str, ...] = ()
    detail: str = ""

    @property
    def ok(self) -> bool:
        return not self.codes

    def to_dict(self) -> dict[str, Any]:
        return {"codes": list(self.codes), "detail": self.detail}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CheckResult:
        if set(d) != {"codes", "detail"}:
            raise ValueError(f"CheckResult needs exactly codes and detail, got {sorted(d)}")
        return cls(codes=tuple(d["codes"]), detail=str(d["detail"]))


def merge_checks(*results: CheckResult) -> CheckResult:
    """Union of codes (sorted, deduplicated) and details of several checks."""
    codes = sorted({c for r in results for c in r.codes})
    detail = "; ".join(r.detail for r in results if r.detail)
    return CheckResult(tuple(codes), detail)


def _own(own_pids: Iterable[int] | None) -> frozenset[int]:
    return frozenset((os.getpid(),) if own_pids is None else own_pids)


def process_check(state: GpuState, own_pids: Iterable[int] | None = None) -> CheckResult:
    """Another compute process on the GPU (pids other than ours) makes a timing non-claimable."""
    if not state.available:
        return CheckResult((Check.NVML_UNAVAILABLE.value,), f"nvml: {state.reason}")
    others = sorted(set(state.compute_pids) - _own(own_pids))
    if others:
        return CheckResult((Check.BUSY_OTHER_PROCESS.value,), f"other compute processes: {others}")
    return CheckResult()


def idle_check(
    nvml: Nvml,
    sample_s: float = 1.0,
    *,
    index: int = 0,
    own_pids: Iterable[int] | None = None,
    interval_s: float = 0.1,
    sleep: Callable[[float], None] = time.sleep,
) -> CheckResult:
    """No other compute process, and GPU utilisation under 5% averaged over `sample_s`.

    Run it before this process starts GPU work: NVML's utilisation counts our own kernels too.
    """
    state = read_gpu_state(nvml, index)
    result = process_check(state, own_pids)
    if not state.available:
        return result
    polls = max(1, round(sample_s / interval_s))
    # The state read above is the first poll; the rest follow at `interval_s`.
    readings = [] if state.util_gpu_pct is None else [state.util_gpu_pct]
    while len(readings) < polls:
        sleep(interval_s)
        try:
            readings.append(nvml.utilization_pct(index)[0])
        except NvmlError as exc:
            return merge_checks(result, CheckResult((Check.NVML_UNAVAILABLE.value,), f"utilization: {exc}"))
    avg = sum(readings) / len(readings)
    if avg >= IDLE_MAX_UTIL_PCT:
        busy = CheckResult((Check.BUSY_UTILIZATION.value,), f"utilization {avg:.1f}% over {sample_s:g} s")
        return merge_checks(result, busy)
    return result


def sample_drift(samples: Sequence[float]) -> float | None:
    """Median of the last third of the samples over the median of the first third, minus 1: the trend a change
    of clock level leaves in the samples themselves (None below DRIFT_MIN_SAMPLES)."""
    if len(samples) < DRIFT_MIN_SAMPLES:
        return None
    k = len(samples) // 3
    return statistics.median(samples[-k:]) / statistics.median(samples[:k]) - 1.0


def clock_check(before: GpuState, after: GpuState, *, max_drop: float = CLOCK_MAX_DROP,
                samples: Sequence[float] | None = None, max_drift: float = CLOCK_MAX_DRIFT) -> CheckResult:
    """The samples may not come from one steady clock: the SM clock fell more than `max_drop` from before to
    after and (given `samples`) the samples drifted more than `max_drift`; or a thermal / power-brake / hw
    slowdown reason was active at either end.

    Why the drift arbitrates the drop: NVML's SM clock is one instant's reading, and under the power cap the
    board moves it by 2-10% within milliseconds (an H100 at 700 W in a16w4 prefill read 1740-1980 MHz across
    rows whose samples agreed to 0.1%). Two instants then differ with no change in what was timed; a run that
    really moved from one clock level to another shows it in its own samples (kimi-k2 T=512 started at 1980 MHz
    uncapped and ended capped: its last third ran 3.6% slower than its first). Without samples, or with fewer
    than DRIFT_MIN_SAMPLES, the drop alone voids.

    The sw power cap alone is named in the detail but voids nothing: it is the board's own default limit
    (never changed here), and dense prefill holds an H100 or H200 at it for as long as it runs, so a
    prefill row taken without it does not exist on a GPU whose clocks are not locked. Steady at the cap, the
    A/A noise at T=4096 was 0.01% (H100, session 3)."""
    if not (before.available and after.available):
        reason = before.reason if not before.available else after.reason
        return CheckResult((Check.NVML_UNAVAILABLE.value,), f"nvml: {reason}")
    codes: list[str] = []
    details: list[str] = []
    b, a = before.sm_clock_mhz, after.sm_clock_mhz
    if b is None or a is None:
        codes.append(Check.NVML_UNAVAILABLE.value)
        details.append("SM clock unreadable")
    elif a < b * (1.0 - max_drop):
        drift = sample_drift(samples) if samples is not None else None
        if drift is None or abs(drift) > max_drift:
            codes.append(Check.CLOCK_DROP.value)
            details.append(f"SM clock {b} -> {a} MHz" + ("" if drift is None else f", samples drifted {drift:+.2%}"))
        else:
            details.append(f"SM clock {b} -> {a} MHz, samples steady (drift {drift:+.2%}; not a void)")
    active = set(before.clock_events) | set(after.clock_events)
    for names, code in (
        (_THERMAL, Check.CLOCK_THERMAL),
        (_POWER, Check.CLOCK_POWER),
        (_HW_SLOWDOWN, Check.CLOCK_HW_SLOWDOWN),
    ):
        hit = sorted(active & names)
        if hit:
            codes.append(code.value)
            details.append(f"clock events {hit}")
    if POWER_CAP in active:
        details.append(f"{POWER_CAP} (steady at the board's power limit; not a void: see clock_check)")
    return CheckResult(tuple(sorted(set(codes))), "; ".join(details))


def verify_locked(state: GpuState) -> bool:
    """Clocks read as locked (current SM == application/locked clock) and nothing throttles them."""
    throttled = set(state.clock_events) & (_THERMAL | _POWER | {POWER_CAP} | _HW_SLOWDOWN)
    return bool(state.available and state.clocks_locked and not throttled)


def locked_clocks_advice(state: GpuState) -> str:
    """The nvidia-smi commands an administrator could run to lock clocks. Printed, never run."""
    if not state.available:
        return f"# NVML unavailable ({state.reason}): cannot read clocks, no advice"
    if verify_locked(state):
        return f"# clocks on GPU {state.index} read as locked at {state.sm_clock_mhz} MHz; nothing to do"
    target = state.uuid or str(state.index)
    # The default application clock is the sustained clock the board is rated for; locking to the
    # boost maximum invites power-cap throttling under tensor-core load.
    sm = state.sm_clock_default_app_mhz or state.sm_clock_app_mhz or state.sm_clock_max_mhz
    mem = state.mem_clock_max_mhz or state.mem_clock_app_mhz
    lines = [
        f"# clocks on GPU {state.index} ({state.name}) are not verified locked: SM {state.sm_clock_mhz} MHz "
        f"now, application {state.sm_clock_app_mhz} MHz, events {list(state.clock_events)}",
        "# an administrator may lock them (mxmoe prints these, it never runs them):",
    ]
    if sm:
        lines.append(f"sudo nvidia-smi -i {target} -lgc {sm},{sm}")
    if mem:
        lines.append(f"sudo nvidia-smi -i {target} -lmc {mem},{mem}  # not every GPU allows memory locks")
    lines.append(f"# undo: sudo nvidia-smi -i {target} -rgc && sudo nvidia-smi -i {target} -rmc")
    return "\n".join(lines)


class GpuBusyError(RuntimeError):
    """The GPU is not verified idle and the user did not allow timing on a busy GPU."""


def require_idle(result: CheckResult, *, allow_busy: bool) -> None:
    """Fail closed before a sweep starts: raise GpuBusyError unless idle or the user allowed busy."""
    busy = [c for c in result.codes if c.startswith("busy:") or c == Check.NVML_UNAVAILABLE.value]
    if busy and not allow_busy:
        raise GpuBusyError(
            f"GPU is not verified idle ({', '.join(busy)}): {result.detail}; "
            "pass allow_busy to time anyway (rows will be non-claimable)"
        )
