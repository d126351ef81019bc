"""The statistics of one timing: median, percentiles, bootstrap CI of the median, and the stop rule.

numpy only (no torch), so every number a claim rests on is unit-tested on CPU with known answers.
Times are microseconds. Percentiles use numpy's `linear` method (Hyndman-Fan type 7, numpy's
default); the seed708 profile's nearest-rank p95 (`spec.p95_nearest_rank`) is kept beside it, so a
reader never has to guess which p95 a row holds (REFERENCE.md shortfall 3: name statistics truthfully).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

import numpy as np

from mxmoe.spec import p95_nearest_rank
from mxmoe.tuning.timing.value import Timing

PERCENTILE_METHOD = "linear"
CI_LEVEL = 0.95
CI_RESAMPLES = 2000
# Resampled elements drawn per numpy call: bounds the bootstrap's memory at ~16 MB whatever n is.
_BOOTSTRAP_CHUNK_ELEMENTS = 2_000_000


class StopReason(str, Enum):
    """Why the adaptive loop stopped taking samples."""

    CONVERGED = "converged"  # CI half-width fell under target_rel_ci of the median
    TIME_CAP = "time_cap"  # max_time_s of timed work spent before converging
    MAX_ITERS = "max_iters"  # max_iters samples taken before converging


@dataclass(frozen=True, slots=True)
class Summary:
    """Every statistic of one sample array, all from the same samples (no mixing of arrays): the `Timing` every
    record keeps (samples, median, p95, CI of the median) and the descriptive statistics only a Measurement
    records beside it (p5, seed708's nearest-rank p95, mean, std)."""

    timing: Timing
    p5_us: float
    p95_nearest_us: float
    mean_us: float
    std_us: float

    @property
    def n(self) -> int:
        return self.timing.n


def _as_array(samples: Sequence[float]) -> np.ndarray:
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"need a non-empty 1-D sample array, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("samples hold NaN or inf: a timing must be a finite number")
    return x


def percentile(samples: Sequence[float], q: float) -> float:
    """q-th percentile (0..100) by numpy's linear interpolation (type 7)."""
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile q must be in [0, 100], got {q}")
    return float(np.percentile(_as_array(samples), q, method=PERCENTILE_METHOD))


def median(samples: Sequence[float]) -> float:
    return float(np.median(_as_array(samples)))


def bootstrap_median_ci(
    samples: Sequence[float],
    *,
    level: float = CI_LEVEL,
    resamples: int = CI_RESAMPLES,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile-bootstrap CI of the median, seeded so the same samples always give the same interval.

    The interval is widened to contain the sample median if resampling noise left it just outside,
    because `spec.PointStats` (and the win rule that reads it) requires lo <= median <= hi.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"CI level must be in (0, 1), got {level}")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    x = _as_array(samples)
    med = float(np.median(x))
    n = x.size
    if n == 1:
        return med, med
    rng = np.random.default_rng(seed)
    medians = np.empty(resamples, dtype=np.float64)
    chunk = max(1, _BOOTSTRAP_CHUNK_ELEMENTS // n)
    for start in range(0, resamples, chunk):
        rows = min(chunk, resamples - start)
        idx = rng.integers(0, n, size=(rows, n))
        medians[start : start + rows] = np.median(x[idx], axis=1)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(medians, [alpha, 1.0 - alpha])
    return min(float(lo), med), max(float(hi), med)


def summarize(
    samples: Sequence[float],
    *,
    level: float = CI_LEVEL,
    resamples: int = CI_RESAMPLES,
    seed: int = 0,
) -> Summary:
    """All statistics of `samples`; std is the sample std (ddof=1), 0 for a single sample."""
    x = _as_array(samples)
    lo, hi = bootstrap_median_ci(x, level=level, resamples=resamples, seed=seed)
    p5, p95 = np.percentile(x, [5.0, 95.0], method=PERCENTILE_METHOD)
    timing = Timing(median_us=float(np.median(x)), ci_lo_us=lo, ci_hi_us=hi, p95_us=float(p95),
                    samples_us=tuple(x.tolist()))
    return Summary(
        timing=timing,
        p5_us=float(p5),
        p95_nearest_us=float(p95_nearest_rank(x.tolist())),
        mean_us=float(x.mean()),
        std_us=float(x.std(ddof=1)) if x.size > 1 else 0.0,
    )


@dataclass(frozen=True, slots=True)
class StopRule:
    """When the adaptive loop stops: converged beats the caps, and min_iters is always taken.

    `max_time_s` bounds the timed phase only (warm-up has its own budget), measured on the clock's
    own time line so a fake clock makes the rule deterministic.
    """

    target_rel_ci: float = 0.01
    min_iters: int = 100
    max_iters: int = 10_000
    max_time_s: float = 5.0

    def __post_init__(self) -> None:
        if self.target_rel_ci <= 0:
            raise ValueError(f"target_rel_ci must be positive, got {self.target_rel_ci}")
        if self.min_iters < 1:
            raise ValueError(f"min_iters must be >= 1, got {self.min_iters}")
        if self.max_iters < self.min_iters:
            raise ValueError(f"max_iters={self.max_iters} is below min_iters={self.min_iters}")
        if self.max_time_s <= 0:
            raise ValueError(f"max_time_s must be positive, got {self.max_time_s}")

    def decide(self, n: int, rel_halfwidth: float, elapsed_s: float) -> StopReason | None:
        """The reason to stop after `n` samples, or None to take another batch."""
        if n >= self.min_iters and rel_halfwidth <= self.target_rel_ci:
            return StopReason.CONVERGED
        if n >= self.max_iters:
            return StopReason.MAX_ITERS
        if elapsed_s >= self.max_time_s:
            return StopReason.TIME_CAP
        return None

    def next_batch(self, n: int, elapsed_s: float) -> int:
        """Samples to take next: min_iters first, then grow by half of n (the CI is re-computed per
        batch, so geometric growth keeps the bootstrap cost a constant factor of the last one), never
        past max_iters and, once a per-sample time is known, not far past the time cap."""
        if n < self.min_iters:
            return self.min_iters - n
        batch = max(n // 2, 1)
        if elapsed_s > 0 and n > 0:
            per_sample = elapsed_s / n
            left = max(self.max_time_s - elapsed_s, 0.0)
            batch = min(batch, max(int(left / per_sample) + 1, 1))
        return max(1, min(batch, self.max_iters - n))
