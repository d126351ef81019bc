"""NVML access, read only: the `Nvml` protocol mxmoe's GPU checks query, the real one through pynvml, a stand-in
for machines without it, and a scriptable fake for CPU tests (busy GPU, throttling, clock drop, other processes).

No NVML setter is ever called: clocks are verified, never requested (`gpu_state` says how).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from enum import Enum
from typing import Any, Protocol


class NvmlError(RuntimeError):
    """One NVML query failed (e.g. Not Supported on this GPU); the field is recorded as None."""


class NvmlUnavailableError(NvmlError):
    """NVML cannot be used at all: pynvml missing, no driver, or no such GPU."""


class ClockDomain(str, Enum):
    SM = "sm"
    MEM = "mem"


class ClockKind(str, Enum):
    CURRENT = "current"
    MAX = "max"
    APP = "app"  # application clock target (what -ac sets)
    DEFAULT_APP = "default_app"


class Nvml(Protocol):
    """The read-only NVML queries mxmoe uses; raise NvmlError / NvmlUnavailableError on failure."""

    def device_count(self) -> int: ...
    def name(self, index: int) -> str: ...
    def uuid(self, index: int) -> str: ...
    def driver_version(self) -> str: ...
    def cuda_driver_version(self) -> int: ...
    def clock_mhz(self, index: int, domain: ClockDomain, kind: ClockKind) -> int: ...
    def clock_event_reasons(self, index: int) -> int: ...
    def temperature_c(self, index: int) -> int: ...
    def power_mw(self, index: int) -> int: ...
    def power_limit_mw(self, index: int) -> int: ...
    def memory_bytes(self, index: int) -> tuple[int, int]: ...  # (used, total)
    def compute_pids(self, index: int) -> tuple[int, ...]: ...
    def utilization_pct(self, index: int) -> tuple[int, int]: ...  # (gpu, memory)


class MissingNvml:
    """Stands in where pynvml or the driver is missing: every query raises NvmlUnavailableError."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __getattr__(self, name: str) -> Callable[..., Any]:
        def fail(*_: Any) -> Any:
            raise NvmlUnavailableError(self.reason)

        return fail


class PynvmlNvml:
    """The real NVML, through pynvml. Only getters are called here, never a setter."""

    def __init__(self) -> None:
        try:
            import pynvml
        except ImportError as exc:
            raise NvmlUnavailableError(f"pynvml not importable: {exc}") from exc
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            raise NvmlUnavailableError(f"nvmlInit failed: {exc}") from exc
        self._nv = pynvml

    def close(self) -> None:
        self._nv.nvmlShutdown()

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except self._nv.NVMLError as exc:
            raise NvmlError(str(exc)) from exc

    def _handle(self, index: int) -> Any:
        return self._call(self._nv.nvmlDeviceGetHandleByIndex, index)

    def device_count(self) -> int:
        return int(self._call(self._nv.nvmlDeviceGetCount))

    def name(self, index: int) -> str:
        return _text(self._call(self._nv.nvmlDeviceGetName, self._handle(index)))

    def uuid(self, index: int) -> str:
        return _text(self._call(self._nv.nvmlDeviceGetUUID, self._handle(index)))

    def driver_version(self) -> str:
        return _text(self._call(self._nv.nvmlSystemGetDriverVersion))

    def cuda_driver_version(self) -> int:
        return int(self._call(self._nv.nvmlSystemGetCudaDriverVersion))

    def clock_mhz(self, index: int, domain: ClockDomain, kind: ClockKind) -> int:
        nv, h = self._nv, self._handle(index)
        ctype = nv.NVML_CLOCK_SM if domain is ClockDomain.SM else nv.NVML_CLOCK_MEM
        getter = {
            ClockKind.CURRENT: nv.nvmlDeviceGetClockInfo,
            ClockKind.MAX: nv.nvmlDeviceGetMaxClockInfo,
            ClockKind.APP: nv.nvmlDeviceGetApplicationsClock,
            ClockKind.DEFAULT_APP: nv.nvmlDeviceGetDefaultApplicationsClock,
        }[kind]
        return int(self._call(getter, h, ctype))

    def clock_event_reasons(self, index: int) -> int:
        getter = getattr(self._nv, "nvmlDeviceGetCurrentClocksEventReasons", None)
        getter = getter or self._nv.nvmlDeviceGetCurrentClocksThrottleReasons
        return int(self._call(getter, self._handle(index)))

    def temperature_c(self, index: int) -> int:
        return int(self._call(self._nv.nvmlDeviceGetTemperature, self._handle(index), self._nv.NVML_TEMPERATURE_GPU))

    def power_mw(self, index: int) -> int:
        return int(self._call(self._nv.nvmlDeviceGetPowerUsage, self._handle(index)))

    def power_limit_mw(self, index: int) -> int:
        return int(self._call(self._nv.nvmlDeviceGetEnforcedPowerLimit, self._handle(index)))

    def memory_bytes(self, index: int) -> tuple[int, int]:
        info = self._call(self._nv.nvmlDeviceGetMemoryInfo, self._handle(index))
        return int(info.used), int(info.total)

    def compute_pids(self, index: int) -> tuple[int, ...]:
        procs = self._call(self._nv.nvmlDeviceGetComputeRunningProcesses, self._handle(index))
        return tuple(sorted(int(p.pid) for p in procs))

    def utilization_pct(self, index: int) -> tuple[int, int]:
        u = self._call(self._nv.nvmlDeviceGetUtilizationRates, self._handle(index))
        return int(u.gpu), int(u.memory)


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def open_nvml() -> Nvml:
    """The real NVML if it initialises, else a MissingNvml that makes every state say why not."""
    try:
        return PynvmlNvml()
    except NvmlUnavailableError as exc:
        return MissingNvml(str(exc))


class Script:
    """Successive values for one FakeNvml query: each read takes the next, the last one repeats."""

    def __init__(self, *values: Any) -> None:
        if not values:
            raise ValueError("a Script needs at least one value")
        self._values = values
        self._next = 0

    def take(self) -> Any:
        value = self._values[min(self._next, len(self._values) - 1)]
        self._next += 1
        return value


class FakeNvml:
    """A scriptable NVML for CPU tests. Every keyword is a value or a `Script` of successive values;
    a query named in `unsupported` raises NvmlError("Not Supported"). Defaults: an idle H100 SXM at
    unlocked boost clocks (SM 1980 MHz, application 1755 MHz), no throttling, no other process."""

    def __init__(self, *, available: bool = True, unsupported: Iterable[str] = (), **values: Any) -> None:
        self.available = available
        self.unsupported = frozenset(unsupported)
        self.values: dict[str, Any] = {
            "device_count": 1,
            "name": "NVIDIA H100 80GB HBM3",
            "uuid": "GPU-00000000-fake-0000-0000-000000000000",
            "driver_version": "580.159.04",
            "cuda_driver_version": 13000,
            "sm_clock": 1980,
            "mem_clock": 2619,
            "sm_clock_max": 1980,
            "mem_clock_max": 2619,
            "sm_clock_app": 1755,
            "mem_clock_app": 2619,
            "sm_clock_default_app": 1755,
            "mem_clock_default_app": 2619,
            "clock_event_reasons": 0,
            "temperature_c": 40,
            "power_mw": 120_000,
            "power_limit_mw": 700_000,
            "memory_bytes": (600 * 2**20, 80 * 2**30),
            "compute_pids": (),
            "utilization_pct": (0, 0),
        }
        unknown = set(values) - set(self.values)
        if unknown:
            raise TypeError(f"unknown FakeNvml values {sorted(unknown)}; known: {sorted(self.values)}")
        self.values.update(values)

    def _get(self, key: str) -> Any:
        if not self.available:
            raise NvmlUnavailableError("FakeNvml(available=False)")
        if key in self.unsupported:
            raise NvmlError("Not Supported")
        value = self.values[key]
        return value.take() if isinstance(value, Script) else value

    def device_count(self) -> int:
        return self._get("device_count")

    def name(self, index: int) -> str:
        return self._get("name")

    def uuid(self, index: int) -> str:
        return self._get("uuid")

    def driver_version(self) -> str:
        return self._get("driver_version")

    def cuda_driver_version(self) -> int:
        return self._get("cuda_driver_version")

    def clock_mhz(self, index: int, domain: ClockDomain, kind: ClockKind) -> int:
        suffix = "" if kind is ClockKind.CURRENT else f"_{kind.value}"
        return self._get(f"{domain.value}_clock{suffix}")

    def clock_event_reasons(self, index: int) -> int:
        return self._get("clock_event_reasons")

    def temperature_c(self, index: int) -> int:
        return self._get("temperature_c")

    def power_mw(self, index: int) -> int:
        return self._get("power_mw")

    def power_limit_mw(self, index: int) -> int:
        return self._get("power_limit_mw")

    def memory_bytes(self, index: int) -> tuple[int, int]:
        return self._get("memory_bytes")

    def compute_pids(self, index: int) -> tuple[int, ...]:
        return tuple(self._get("compute_pids"))

    def utilization_pct(self, index: int) -> tuple[int, int]:
        return self._get("utilization_pct")
