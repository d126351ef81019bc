"""The A/A noise floor: one config timed as "baseline" and as "candidate", interleaved.

A campaign's margins must sit above the noise its own protocol produces (REFERENCE.md shortfall 5:
seed708's 2 us win threshold sat under its 8 us noise). `aa_noise` measures A, B, A, B, ... for
several rounds and reports the spread of the relative differences of the medians, how often the
spec would have called a win or a regression between two copies of the same thing (it never
should), and whether `spec.win_margin(t)` sits above the p95 of that spread.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from mxmoe.shapes import MoEShape, Path
from mxmoe.spec import Profile, is_regression, is_win, regression_band_us, win_margin
from mxmoe.tuning.timing.measure import Measurement, MeasureSettings, idle_before, measure
from mxmoe.tuning.timing.stats import PERCENTILE_METHOD

NOISE_SCHEMA_VERSION = 1


@dataclass(frozen=True, slots=True)
class NoiseReport:
    """A/A spread at one grid point. rel_diffs are (B - A) / A of the medians, one per round.

    `margin_above_noise` is True when the win margin exceeds the p95 of |rel diff| and no round
    produced a spurious win; `band_above_noise` likewise for the regression band. Either False
    means: raise the margin (and say so) rather than claim inside the noise (DESIGN.md).
    """

    shape: str | None
    path: str | None
    t: int | None
    profile: str
    rounds: int
    medians_a_us: tuple[float, ...]
    medians_b_us: tuple[float, ...]
    rel_diffs: tuple[float, ...]
    median_abs_rel: float
    p95_abs_rel: float
    max_abs_rel: float
    win_margin: float | None
    regression_band_rel: float | None
    false_wins: int
    false_regressions: int
    margin_above_noise: bool | None
    band_above_noise: bool | None
    checks: tuple[str, ...]

    @property
    def claimable(self) -> bool:
        """A noise floor read from non-claimable timings (fake clock, busy GPU) proves nothing."""
        return not self.checks

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        for key in ("medians_a_us", "medians_b_us", "rel_diffs", "checks"):
            d[key] = list(d[key])
        d["claimable"] = self.claimable
        d["schema"] = NOISE_SCHEMA_VERSION
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NoiseReport:
        d = dict(d)
        if d.pop("schema", None) != NOISE_SCHEMA_VERSION:
            raise ValueError(f"NoiseReport schema must be {NOISE_SCHEMA_VERSION}")
        d.pop("claimable", None)
        names = {f.name for f in fields(cls)}
        if set(d) != names:
            raise ValueError(f"NoiseReport fields differ: {sorted(set(d) ^ names)}")
        for key in ("medians_a_us", "medians_b_us", "rel_diffs", "checks"):
            d[key] = tuple(d[key])
        return cls(**d)


def _with_idle(measure_kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    """measure() keyword arguments (`settings`, `clock`, `nvml`, ...) with one idle check taken now, for the
    settings' idle_sample_s, unless the caller passed `idle` already."""
    kw = dict(measure_kwargs or {})
    if "idle" not in kw:
        kw["idle"] = idle_before(
            clock=kw.get("clock"),
            nvml=kw.get("nvml"),
            device_index=kw.get("device_index"),
            idle_sample_s=(kw.get("settings") or MeasureSettings()).idle_sample_s,
            own_pids=kw.get("own_pids"),
        )
    return kw


def _count(t: int, pairs: list[tuple[Measurement, Measurement]], profile: Profile) -> tuple[int, int]:
    """Spurious wins and regressions between A and B, in either direction."""
    wins = regressions = 0
    for a, b in pairs:
        pa, pb = a.point_stats(), b.point_stats()
        wins += is_win(t, pa, pb, profile) or is_win(t, pb, pa, profile)
        regressions += is_regression(t, pa, pb, profile) or is_regression(t, pb, pa, profile)
    return wins, regressions


def aa_noise(
    fn_a: Callable[..., object],
    fn_b: Callable[..., object],
    *,
    rounds: int,
    measure_kwargs: Mapping[str, Any] | None = None,
    t: int | None = None,
    shape: MoEShape | str | None = None,
    path: Path | str | None = None,
    profile: Profile | str = Profile.MXMOE,
) -> NoiseReport:
    """Time A and B (two builds of the same config) interleaved for `rounds` rounds.

    `measure_kwargs`: measure()'s keyword arguments (`settings`, `clock`, `nvml`, ...). One idle check is taken up
    front and reused (a per-measurement check would see our own kernels), unless `measure_kwargs` already holds
    `idle`. With `t`, the spec's margins and the
    spurious win / regression counts are filled in; without it they are None / 0.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    profile = Profile(profile)
    kw = _with_idle(measure_kwargs)
    pairs = [(measure(fn_a, **kw), measure(fn_b, **kw)) for _ in range(rounds)]
    med_a = np.array([a.timing.median_us for a, _ in pairs])
    med_b = np.array([b.timing.median_us for _, b in pairs])
    rel = (med_b - med_a) / med_a
    absrel = np.abs(rel)
    p95 = float(np.percentile(absrel, 95.0, method=PERCENTILE_METHOD))
    margin = band = None
    wins = regressions = 0
    if t is not None:
        margin = win_margin(t)
        band = regression_band_us(t, float(np.median(med_a))) / float(np.median(med_a))
        wins, regressions = _count(t, pairs, profile)
    return NoiseReport(
        shape=None if shape is None else (shape if isinstance(shape, str) else shape.name),
        path=None if path is None else Path(path).value,
        t=t,
        profile=profile.value,
        rounds=rounds,
        medians_a_us=tuple(float(x) for x in med_a),
        medians_b_us=tuple(float(x) for x in med_b),
        rel_diffs=tuple(float(x) for x in rel),
        median_abs_rel=float(np.median(absrel)),
        p95_abs_rel=p95,
        max_abs_rel=float(absrel.max()),
        win_margin=margin,
        regression_band_rel=band,
        false_wins=wins,
        false_regressions=regressions,
        margin_above_noise=None if margin is None else (margin > p95 and wins == 0),
        band_above_noise=None if band is None else (band > p95 and regressions == 0),
        checks=tuple(sorted({c for pair in pairs for m in pair for c in m.checks})),
    )


def run_noise(
    shape: MoEShape,
    path: Path | str,
    tokens: Iterable[int],
    fn_factory: Callable[[int], Callable[..., object]],
    *,
    rounds: int = 5,
    measure_kwargs: Mapping[str, Any] | None = None,
    profile: Profile | str = Profile.MXMOE,
) -> tuple[NoiseReport, ...]:
    """`mxmoe noise`: at each T, build the config twice with `fn_factory(t)` (two callables, so A and
    B share nothing but the config) and run `aa_noise`. One idle check serves every T."""
    kw = _with_idle(measure_kwargs)
    reports = []
    for t in tokens:
        fn_a, fn_b = fn_factory(t), fn_factory(t)
        reports.append(
            aa_noise(fn_a, fn_b, rounds=rounds, measure_kwargs=kw, t=t, shape=shape, path=path, profile=profile)
        )
    return tuple(reports)
