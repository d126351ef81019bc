"""Timing: the one value type for "how long one config took": its samples, median, p95 and the CI of the median.

Before it, those five fields were written out by hand in `stats.Summary`, `Measurement`, the worker protocol's
`TrialResult` and the ledger's `Attempt`, and the sweep driver copied them from one to the next field by field
(issue 25). Each of those records now holds a `Timing` (or None when nothing was timed) and passes it on whole.

What is stored does not change: a ledger row keeps the five as its `median_us`, `p95_us`, `ci_lo_us`, `ci_hi_us`
and `samples_us_json` columns, and the worker protocol carries them as five top-level keys. `timing_fields` and
`pop_timing` are the one owner of that flat form, so the nesting lives in the Python records only. That is the
least risky design: old ledgers, old conflict payloads and the result digests already stored (a hash over the flat
dict) still read and compare unchanged, with no migration to get wrong, and a peer of the same protocol version
still understands every message.

No torch or numpy here: the ledger's records, the torch-free sweep driver and the gate import it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

from mxmoe.spec import PointStats

# The flat names a record stores a Timing under (ledger columns, protocol keys, Attempt.to_dict keys).
TIMING_FIELDS = ("median_us", "p95_us", "ci_lo_us", "ci_hi_us", "samples_us")


def _finite(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def rel_ci_halfwidth(median_us: float, ci_lo_us: float, ci_hi_us: float) -> float:
    """(hi - lo) / 2 / median: the quantity the adaptive loop drives under its target."""
    if median_us <= 0:
        return math.inf
    return (ci_hi_us - ci_lo_us) / 2.0 / median_us


@dataclass(frozen=True, slots=True)
class Timing:
    """One config's timing in microseconds: the raw samples and the statistics a verdict reads.

    The CI must contain the median (`spec.PointStats`'s rule, which the win rule relies on). `p95_us` may be None
    and `samples_us` empty only in rows recorded without them; a measurement always fills both.
    """

    median_us: float
    ci_lo_us: float
    ci_hi_us: float
    p95_us: float | None = None
    samples_us: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        s = object.__setattr__
        for name in ("median_us", "ci_lo_us", "ci_hi_us"):
            s(self, name, _finite(f"Timing.{name}", getattr(self, name)))
        if self.p95_us is not None:
            s(self, "p95_us", _finite("Timing.p95_us", self.p95_us))
        s(self, "samples_us", tuple(_finite("Timing.samples_us[i]", x) for x in self.samples_us))
        self.point_stats()  # raises if the CI misses the median

    @property
    def n(self) -> int:
        return len(self.samples_us)

    @property
    def rel_ci_halfwidth(self) -> float:
        return rel_ci_halfwidth(self.median_us, self.ci_lo_us, self.ci_hi_us)

    def point_stats(self) -> PointStats:
        return PointStats(self.median_us, self.ci_lo_us, self.ci_hi_us)


def timing_fields(timing: Timing | None) -> dict[str, Any]:
    """The flat fields a record stores for `timing`: all None and no samples when nothing was timed."""
    if timing is None:
        return {"median_us": None, "p95_us": None, "ci_lo_us": None, "ci_hi_us": None, "samples_us": []}
    return {"median_us": timing.median_us, "p95_us": timing.p95_us, "ci_lo_us": timing.ci_lo_us,
            "ci_hi_us": timing.ci_hi_us, "samples_us": list(timing.samples_us)}


def pop_timing(d: MutableMapping[str, Any], where: str) -> Timing | None:
    """Take the flat timing fields out of `d` (absent ones read as None / no samples) and return their Timing, or
    None when none is set. A partial timing (samples or a p95 without a median and its CI) is a ValueError."""
    flat: Mapping[str, Any] = {name: d.pop(name, None) for name in TIMING_FIELDS}
    samples = flat["samples_us"] or ()
    if any(x is None for x in samples):
        raise ValueError(f"{where}.samples_us holds None; samples are finite numbers")
    if flat["median_us"] is None and flat["ci_lo_us"] is None and flat["ci_hi_us"] is None:
        if flat["p95_us"] is not None or samples:
            raise ValueError(f"{where}: p95_us or samples_us without median_us, ci_lo_us and ci_hi_us")
        return None
    if flat["median_us"] is None or flat["ci_lo_us"] is None or flat["ci_hi_us"] is None:
        raise ValueError(f"{where} needs median_us, ci_lo_us and ci_hi_us together, got "
                         f"{flat['median_us']!r}, {flat['ci_lo_us']!r}, {flat['ci_hi_us']!r}")
    return Timing(flat["median_us"], flat["ci_lo_us"], flat["ci_hi_us"], flat["p95_us"], tuple(samples))
