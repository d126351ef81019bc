"""The typed values of "Failure is data": one `Attempt` per candidate, whatever became of it.

No torch or triton here: the sweep driver, the gate and the CLI load this instantly.

Keys are content hashes (DESIGN.md "Failure is data"), so a re-run of the same probe gets the same
key and a resumed sweep skips it. The key material is the probe, plus the kernel source hash and the
row it supersedes:

- **probe** = (campaign, model, shape, path, stage, tokens, routing, config_key, device): the question
  asked. `campaign` is part of it on purpose: the same probe in two campaigns (a baseline and a
  candidate, or an A/A pair) is measured separately and both rows must live in one ledger.
  `device` is the GPU *name*, not its uuid, so a probe sent to any H100 of a host is the same probe.
- **kernel_hash**: a changed kernel is a new measurement of the same probe (a new key).
- **supersedes**: a retry of a probe (after `worker_lost`, `timeout`, `unmeasured:...`) names the row
  it replaces, which gives it a key of its own; re-running the same retry gets the same key again.

Two rows with one key but different results are a conflict, never an overwrite (see `store.py`).
"""

from __future__ import annotations

import hashlib
import json
import math
import shlex
from collections.abc import Iterable
from dataclasses import MISSING, dataclass, field, fields, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from mxmoe.spec import E2E_LOGITS_DIFF_MAX, PointStats
from mxmoe.tuning.timing.value import TIMING_FIELDS, Timing, pop_timing, timing_fields

KEY_VERSION = 1
STAGES = ("1", "2", "layer")
INTERPRETER = "interpreter"
# Fields that do not make a result different: when a key is recorded twice and only these differ,
# the second row is a harmless duplicate (e.g. a deterministic `illegal` row recorded by a resumed
# sweep on another day), not a conflict.
NON_RESULT_FIELDS = ("created_at", "provenance", "argv", "detail", "device_uuid")
# The key material (see the module docstring) and the probe: the key material less kernel_hash and supersedes.
PROBE_FIELDS = ("campaign", "model", "shape", "path", "stage", "tokens", "routing", "config_key", "device")
KEY_FIELDS = (*PROBE_FIELDS, "kernel_hash", "supersedes")


class Status(StrEnum):
    """What became of a candidate; `illegal` and `unmeasured` carry a reason."""

    MEASURED = "measured"  # compiled, correct, timed
    ILLEGAL = "illegal"  # rejected by legality.check before compiling (reason: the Reason code)
    COMPILE_ERROR = "compile_error"  # the compiler failed
    LAUNCH_ERROR = "launch_error"  # the launch raised or faulted
    INCORRECT = "incorrect"  # ran, but failed tolerance against the reference
    TIMEOUT = "timeout"  # the worker exceeded its per-candidate time limit
    WORKER_LOST = "worker_lost"  # the worker process died (segfault, OOM kill, ...)
    UNMEASURED = "unmeasured"  # not attempted (reason: e.g. clocks_unverified, budget)

    @property
    def needs_reason(self) -> bool:
        return self in (Status.ILLEGAL, Status.UNMEASURED)

    @staticmethod
    def parse(text: str) -> tuple[Status, str | None]:
        """`illegal:SMEM` -> (ILLEGAL, "SMEM"); `measured` -> (MEASURED, None)."""
        name, sep, reason = text.partition(":")
        status = Status(name)
        if status.needs_reason != bool(sep and reason):
            raise ValueError(f"status text {text!r}: only illegal/unmeasured carry a ':<reason>'")
        return status, (reason if sep else None)


def utc_now() -> str:
    """ISO 8601 UTC timestamp with microseconds, the one format every record uses."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def canonical_json(obj: Any) -> str:
    """Sorted, compact, finite-only JSON: the text every hash and identity check is taken over."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _digest(payload: str) -> str:
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def attempt_key(
    *,
    campaign: str,
    model: str,
    shape: dict[str, Any],
    path: str,
    stage: str,
    tokens: int,
    routing: str,
    config_key: str,
    kernel_hash: str,
    device: str,
    supersedes: str | None = None,
) -> str:
    """Content hash of a probe (see the module docstring for why each part is in it)."""
    material = {
        "v": KEY_VERSION,
        "campaign": campaign,
        "model": model,
        "shape": shape,
        "path": str(getattr(path, "value", path)),
        "stage": stage,
        "tokens": tokens,
        "routing": routing,
        "config_key": config_key,
        "kernel_hash": kernel_hash,
        "device": device,
        "supersedes": supersedes,
    }
    return _digest(canonical_json(material))


def _check_time(name: str, value: str) -> None:
    try:
        ts = datetime.fromisoformat(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}={value!r} is not an ISO 8601 timestamp") from exc
    if ts.utcoffset() is None or ts.utcoffset().total_seconds() != 0:
        raise ValueError(f"{name}={value!r} must be UTC (end in +00:00 or Z)")


def _json_dict(name: str, value: Any) -> dict[str, Any]:
    """A detached, JSON-clean copy, so a frozen record cannot change behind the ledger's back."""
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be a dict, got {type(value).__name__}")
    try:
        return json.loads(canonical_json(value))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} is not JSON-serialisable with finite numbers: {exc}") from exc


def _opt_float(name: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number or None, got {value!r}")
    return float(value)


@dataclass(frozen=True, slots=True, kw_only=True)
class Attempt:
    """One ledger row: a candidate at one (model, path, stage, tokens, routing) point, and its fate.

    `claimable` says the measurement's provenance is clean (committed source, verified clocks, idle
    GPU, a real GPU); when it is False, `nonclaimable_reasons` says why. Interpreter rows never are.
    `timing` is the worker's Timing, whole (None when nothing was timed; a measured row always has one); the dict
    form keeps its five fields flat (see `to_dict`). Build new rows with `Attempt.make(...)`, which computes the key
    from the fields.
    """

    key: str
    campaign: str
    status: Status
    reason: str | None = None
    model: str
    shape: dict[str, Any]
    path: str
    stage: str
    tokens: int
    routing: str = "uniform"
    config: dict[str, Any]
    config_key: str
    kernel_hash: str
    device: str
    device_uuid: str | None = None
    timing: Timing | None = None
    tflops: float | None = None
    roofline_fraction: float | None = None
    claimable: bool = False
    nonclaimable_reasons: tuple[str, ...] = ()
    provenance: dict[str, Any] = field(default_factory=dict)
    argv: tuple[str, ...] = ()
    created_at: str = field(default_factory=utc_now)
    supersedes: str | None = None
    detail: str | None = None

    def __post_init__(self) -> None:
        s = object.__setattr__
        s(self, "status", Status(self.status))
        s(self, "path", str(getattr(self.path, "value", self.path)))
        for name in ("key", "campaign", "model", "config_key"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"Attempt.{name} must be a non-empty str, got {getattr(self, name)!r}")
        if self.stage not in STAGES:
            raise ValueError(f"Attempt.stage={self.stage!r}; expected one of {STAGES}")
        if isinstance(self.tokens, bool) or not isinstance(self.tokens, int) or self.tokens < 0:
            raise ValueError(f"Attempt.tokens must be a non-negative int, got {self.tokens!r}")
        if self.status.needs_reason != bool(self.reason):
            want = "needs" if self.status.needs_reason else "takes no"
            raise ValueError(f"status {self.status.value} {want} a reason, got reason={self.reason!r}")
        for name in ("shape", "config", "provenance"):
            s(self, name, _json_dict(f"Attempt.{name}", getattr(self, name)))
        for name in ("tflops", "roofline_fraction"):
            s(self, name, _opt_float(f"Attempt.{name}", getattr(self, name)))
        if self.timing is not None and not isinstance(self.timing, Timing):
            raise ValueError(f"Attempt.timing must be a Timing or None, got {type(self.timing).__name__}")
        s(self, "nonclaimable_reasons", tuple(str(r) for r in self.nonclaimable_reasons))
        s(self, "argv", tuple(str(a) for a in self.argv))
        if not isinstance(self.claimable, bool):
            raise ValueError(f"Attempt.claimable must be a bool, got {self.claimable!r}")
        _check_time("Attempt.created_at", self.created_at)
        self._check_result()

    def _check_result(self) -> None:
        if self.status is Status.MEASURED and self.timing is None:
            raise ValueError(f"measured row {self.key} needs median_us, ci_lo_us and ci_hi_us (a timing)")
        if self.claimable:
            if self.status is not Status.MEASURED:
                raise ValueError(f"row {self.key} is {self.status_text}: only measured rows are claimable")
            if self.nonclaimable_reasons:
                raise ValueError(f"row {self.key} is claimable yet lists {self.nonclaimable_reasons}")
            if self.device == INTERPRETER:
                raise ValueError(f"row {self.key} ran on the interpreter: never claimable")

    @classmethod
    def make(cls, **kwargs: Any) -> Attempt:
        """An Attempt whose key is computed from its (validated, normalised) fields."""
        if "key" in kwargs:
            raise ValueError("Attempt.make computes the key; do not pass key=")
        draft = cls(key="pending", **kwargs)
        return replace(draft, key=draft.computed_key())

    def computed_key(self) -> str:
        """The key this row's fields hash to; the integrity scan flags rows whose stored key differs."""
        return attempt_key(**{name: getattr(self, name) for name in KEY_FIELDS})

    @property
    def status_text(self) -> str:
        return f"{self.status.value}:{self.reason}" if self.status.needs_reason else self.status.value

    @property
    def probe(self) -> tuple[Any, ...]:
        """The question this row answers: key material less kernel_hash and supersedes."""
        return tuple(canonical_json(getattr(self, n)) if n == "shape" else getattr(self, n) for n in PROBE_FIELDS)

    @property
    def point(self) -> tuple[str, str, str, int]:
        """(model, path, routing, tokens): a grid point of the gate's coverage."""
        return (self.model, self.path, self.routing, self.tokens)

    def stats(self) -> PointStats | None:
        return None if self.timing is None else self.timing.point_stats()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready and flat: enums as values, tuples as lists, the timing as its five fields (`median_us`, ...,
        `samples_us`), so the ledger columns, stored conflict payloads and result digests keep the form they had
        before `timing` was nested."""
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "timing"}
        out |= timing_fields(self.timing)
        out["status"] = self.status.value
        for name in ("nonclaimable_reasons", "argv"):
            out[name] = list(out[name])
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Attempt:
        """Strict, from the flat form `to_dict` writes: an unknown or missing field is a ValueError naming it."""
        known = {f.name for f in fields(cls)} - {"timing"} | set(TIMING_FIELDS)
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown Attempt fields {sorted(unknown)}; known: {sorted(known)}")
        required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
        missing = required - set(d)
        if missing:
            raise ValueError(f"Attempt fields {sorted(missing)} are missing")
        d = dict(d)
        timing = pop_timing(d, "Attempt")
        return cls(**d, timing=timing)

    def result_digest(self) -> str:
        """Hash of everything but NON_RESULT_FIELDS: equal digests under one key are one result."""
        d = self.to_dict()
        for name in NON_RESULT_FIELDS:
            d.pop(name)
        return _digest(canonical_json(d))


def active(rows: Iterable[Attempt]) -> list[Attempt]:
    """Rows no other row in `rows` supersedes: the ones a verdict may use."""
    rows = list(rows)
    superseded = {r.supersedes for r in rows if r.supersedes}
    return [r for r in rows if r.key not in superseded]


@dataclass(frozen=True, slots=True, kw_only=True)
class GuardrailResult:
    """One e2e guardrail run: the candidate's configs inside a real model graph vs the reference.

    `passed` requires logits_diff <= spec.E2E_LOGITS_DIFF_MAX; a record claiming otherwise is refused.
    """

    campaign: str
    model: str
    path: str
    config_keys: tuple[str, ...]
    logits_diff: float
    agreement: float
    passed: bool
    detail: str | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    created_at: str = field(default_factory=utc_now)

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", str(getattr(self.path, "value", self.path)))
        object.__setattr__(self, "config_keys", tuple(str(k) for k in self.config_keys))
        object.__setattr__(self, "provenance", _json_dict("GuardrailResult.provenance", self.provenance))
        if not self.config_keys:
            raise ValueError("GuardrailResult.config_keys is empty: name the configs that ran")
        for name in ("logits_diff", "agreement"):
            object.__setattr__(self, name, _opt_float(f"GuardrailResult.{name}", getattr(self, name)))
        if not isinstance(self.passed, bool):
            raise ValueError(f"GuardrailResult.passed must be a bool, got {self.passed!r}")
        if self.passed and self.logits_diff > E2E_LOGITS_DIFF_MAX:
            raise ValueError(f"logits_diff={self.logits_diff} > {E2E_LOGITS_DIFF_MAX} cannot pass")
        _check_time("GuardrailResult.created_at", self.created_at)

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["config_keys"] = list(self.config_keys)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GuardrailResult:
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown GuardrailResult fields {sorted(unknown)}")
        return cls(**d)

    def key(self) -> str:
        """Content hash of the whole record: recording the same result twice is a no-op."""
        return _digest(canonical_json(self.to_dict()))


# ---- CSV view --------------------------------------------------------------------------------------

CSV_LEAD = ("key", "campaign", "status", "model", "path", "stage", "tokens", "routing")
CSV_TAIL = (
    ("config_key", "kernel_hash", "device", "device_uuid", "median_us", "p95_us", "ci_lo_us", "ci_hi_us")
    + ("n_samples", "tflops", "roofline_fraction", "claimable", "nonclaimable_reasons", "supersedes", "created_at")
    + ("argv", "provenance", "detail", "samples_us")
)


def _flatten(prefix: str, d: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k in sorted(d):
        v = d[k]
        out.update(_flatten(f"{prefix}{k}.", v) if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def csv_rows(attempts: list[Attempt]) -> list[dict[str, Any]]:
    """Flat rows: the lead columns, `shape.*`, `config.*` (stage configs as `config.stage1.block_m`),
    then the result; status as `illegal:<reason>`; samples ';'-joined (repr floats, exact) so a CSV
    alone can recompute every statistic; provenance as one JSON column; argv shell-quoted."""
    shape_cols = sorted({k for a in attempts for k in _flatten("shape.", a.shape)})
    config_cols = sorted({k for a in attempts for k in _flatten("config.", a.config)})
    rows = []
    for a in attempts:
        d = a.to_dict()
        row = {k: d[k] for k in CSV_LEAD}
        row["status"] = a.status_text
        flat = _flatten("shape.", a.shape) | _flatten("config.", a.config)
        row |= {k: flat.get(k, "") for k in (*shape_cols, *config_cols)}
        row |= {k: d.get(k) for k in CSV_TAIL}
        row |= {
            "n_samples": len(d["samples_us"]),
            "claimable": int(a.claimable),
            "nonclaimable_reasons": ";".join(a.nonclaimable_reasons),
            "argv": shlex.join(a.argv),
            "provenance": canonical_json(a.provenance),
            "samples_us": ";".join(repr(x) for x in d["samples_us"]),
        }
        rows.append({k: ("" if v is None else v) for k, v in row.items()})
    return rows
