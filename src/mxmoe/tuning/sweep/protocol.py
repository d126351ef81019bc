"""The worker protocol: the messages a sweep driver (executors.py and its pools) and a measuring worker
(worker.py) exchange, and the records they carry.

It sits below both sides so that each imports it and neither imports the other for the types (issue 25: the
harness reads bottom-up, with no import cycle): the driver starts a worker by naming `worker.serve`, and the
worker needs nothing of the driver. torch-free, like the driver.

Messages are dicts over a multiprocessing Pipe, so a host or Ray executor can carry them as JSON:
  worker -> driver  {"op": "hello", "info": WorkerInfo, "protocol": PROTOCOL_VERSION}   once (or "fatal")
  driver -> worker  {"op": "run", "job": Job}                   one candidate
  worker -> driver  {"op": "phase", "key", "phase"}             prepare | compile | check | time
  worker -> driver  {"op": "result", "key", "result": TrialResult}
  driver -> worker  {"op": "stop"}
Each record is a frozen dataclass with `to_dict` / `from_dict`; `from_dict` refuses unknown fields, so a record
from a peer of another version is an error, never a silently dropped field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from mxmoe.tuning.timing.value import TIMING_FIELDS, Timing, pop_timing, timing_fields

PROTOCOL_VERSION = 1


def _strict(cls: type, d: Mapping[str, Any]) -> dict[str, Any]:
    unknown = set(d) - {f.name for f in fields(cls)}
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields {sorted(unknown)}")
    return dict(d)


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """What a worker needs to start. `floors` and `idle` come from the first worker's hello, so a
    restarted worker neither re-measures the floors nor takes an idle check on a GPU we just used."""

    model: str
    path: str
    argv: tuple[str, ...] = ()
    seed: int = 0
    floors: dict[str, Any] | None = None
    idle: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["argv"] = list(self.argv)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> WorkerConfig:
        d = _strict(cls, d)
        d["argv"] = tuple(d.get("argv", ()))
        return cls(**d)


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """The worker's hello: the device every row is keyed on, and what the sweep measured once."""

    pid: int
    device: str  # torch.cuda.get_device_name(), or "interpreter"
    device_uuid: str | None
    interpreter: bool
    kernel_hash: str
    triton_version: str | None
    floors: dict[str, Any]
    idle: dict[str, Any]
    limits: dict[str, Any]  # legality.DeviceLimits fields of the device (the driver has no CUDA to ask)
    provenance: dict[str, Any]  # collect_provenance at start-up, plus git_commit: for rows with no timing

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> WorkerInfo:
        return cls(**_strict(cls, d))


@dataclass(frozen=True, slots=True)
class Job:
    """One candidate: `key` is its ledger key, `config` a MoEConfig dict (both stages, always)."""

    key: str
    stage: str  # "1" | "2" | "layer"
    tokens: int
    routing: str
    config: dict[str, Any]
    config_key: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Job:
        return cls(**_strict(cls, d))


@dataclass(frozen=True, slots=True)
class TrialResult:
    """What became of a job. `status` is a records.Status text (`measured`, `unmeasured:<reason>`...); `timing` is
    the measurement's Timing, which the driver puts in the row whole. On the wire the timing stays five top-level
    keys (`value.timing_fields`), as before it was nested, so the message format and PROTOCOL_VERSION are unchanged."""

    status: str
    detail: str | None = None
    timing: Timing | None = None
    tflops: float | None = None
    roofline_fraction: float | None = None
    nonclaimable_reasons: tuple[str, ...] = ()
    provenance: dict[str, Any] = field(default_factory=dict)
    device_uuid: str | None = None
    restart: bool = False

    def to_dict(self) -> dict[str, Any]:
        d = asdict(replace(self, timing=None))
        del d["timing"]
        d |= timing_fields(self.timing)
        d["nonclaimable_reasons"] = list(self.nonclaimable_reasons)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrialResult:
        unknown = set(d) - ({f.name for f in fields(cls)} - {"timing"} | set(TIMING_FIELDS))
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields {sorted(unknown)}")
        d = dict(d)
        timing = pop_timing(d, cls.__name__)
        d["nonclaimable_reasons"] = tuple(d.get("nonclaimable_reasons", ()))
        return cls(**d, timing=timing)
