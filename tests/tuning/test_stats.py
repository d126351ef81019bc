"""Statistics on synthetic samples with known answers.

Oracle: closed forms for 1..100 (median 50.5, linear p5 = 5.95, p95 = 95.05, nearest-rank p95 = 95)
and the known median of a lognormal (exp(0) * scale). Tolerance: exact to 1e-12 for closed forms;
loose bounds for the bootstrap's coverage, which is itself a random quantity.
"""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mxmoe.tuning.timing.stats import (
    StopReason,
    StopRule,
    bootstrap_median_ci,
    median,
    percentile,
    summarize,
)
from mxmoe.tuning.timing.value import rel_ci_halfwidth

ONE_TO_100 = [float(i) for i in range(1, 101)]


def test_median_and_percentiles_of_1_to_100():
    assert median(ONE_TO_100) == 50.5
    assert percentile(ONE_TO_100, 5) == pytest.approx(5.95, abs=1e-12)
    assert percentile(ONE_TO_100, 95) == pytest.approx(95.05, abs=1e-12)
    assert percentile(ONE_TO_100, 0) == 1.0
    assert percentile(ONE_TO_100, 100) == 100.0


def test_summary_of_1_to_100_names_both_p95s():
    s = summarize(ONE_TO_100, resamples=500)
    t = s.timing
    assert s.n == 100 and t.samples_us == tuple(ONE_TO_100)
    assert t.median_us == 50.5
    assert s.p5_us == pytest.approx(5.95)
    assert t.p95_us == pytest.approx(95.05)
    assert s.p95_nearest_us == 95.0  # index round(0.95 * 99) = 94 of the sorted samples
    assert s.mean_us == 50.5
    assert s.std_us == pytest.approx(math.sqrt(100 * 101 / 12), rel=1e-12)  # ddof=1 of 1..n
    assert t.ci_lo_us <= t.median_us <= t.ci_hi_us


def test_single_sample_has_a_degenerate_ci_and_zero_std():
    s = summarize([7.0])
    t = s.timing
    assert (t.median_us, t.ci_lo_us, t.ci_hi_us, s.std_us, s.p95_nearest_us) == (7.0, 7.0, 7.0, 0.0, 7.0)


@pytest.mark.parametrize("bad", [[], [1.0, float("nan")], [float("inf")], [[1.0, 2.0]]])
def test_bad_samples_are_rejected(bad):
    with pytest.raises(ValueError):
        summarize(bad)


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError):
        percentile([1.0], 101)
    with pytest.raises(ValueError):
        bootstrap_median_ci([1.0, 2.0], level=1.0)
    with pytest.raises(ValueError):
        bootstrap_median_ci([1.0, 2.0], resamples=0)


def test_bootstrap_is_seeded():
    x = np.random.default_rng(3).lognormal(size=200)
    assert bootstrap_median_ci(x, seed=5) == bootstrap_median_ci(x, seed=5)
    assert bootstrap_median_ci(x, seed=5) != bootstrap_median_ci(x, seed=6)


def test_bootstrap_ci_covers_the_true_median_about_95_percent():
    true_median = 10.0  # lognormal(0, 0.5) * 10 has median 10 exactly
    trials, hits = 200, 0
    for seed in range(trials):
        x = true_median * np.random.default_rng(seed).lognormal(0.0, 0.5, size=51)
        lo, hi = bootstrap_median_ci(x, resamples=1000, seed=seed)
        hits += lo <= true_median <= hi
    assert 0.85 <= hits / trials <= 0.995


def test_ci_shrinks_with_n():
    def mean_width(n: int) -> float:
        widths = []
        for seed in range(10):
            x = np.random.default_rng(seed).lognormal(0.0, 0.3, size=n)
            lo, hi = bootstrap_median_ci(x, resamples=500, seed=seed)
            widths.append(hi - lo)
        return float(np.mean(widths))

    # Width ~ 1/sqrt(n): 10x the samples should give about 0.32x the width.
    assert mean_width(1000) < 0.5 * mean_width(100)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0.1, 1e6, allow_nan=False), min_size=1, max_size=60))
def test_ci_brackets_median_and_stays_in_range(xs):
    s = summarize(xs, resamples=200)
    t = s.timing
    assert min(xs) <= t.ci_lo_us <= t.median_us <= t.ci_hi_us <= max(xs)
    assert min(xs) <= s.p5_us <= t.median_us <= t.p95_us <= max(xs)
    assert t.rel_ci_halfwidth >= 0


def test_rel_ci_halfwidth():
    assert rel_ci_halfwidth(10.0, 9.0, 11.0) == pytest.approx(0.1)
    assert rel_ci_halfwidth(0.0, 0.0, 0.0) == math.inf


# ---- stop rule ------------------------------------------------------------------------------------


def test_stop_rule_order_converged_beats_caps():
    rule = StopRule(target_rel_ci=0.01, min_iters=100, max_iters=1000, max_time_s=1.0)
    assert rule.decide(1000, 0.005, 5.0) is StopReason.CONVERGED
    assert rule.decide(50, 0.0, 0.1) is None  # min_iters always taken
    assert rule.decide(500, 0.02, 0.5) is None
    assert rule.decide(1000, 0.02, 0.5) is StopReason.MAX_ITERS
    assert rule.decide(500, 0.02, 1.0) is StopReason.TIME_CAP


def test_stop_rule_batches():
    rule = StopRule(min_iters=100, max_iters=1000, max_time_s=1.0)
    assert rule.next_batch(0, 0.0) == 100
    assert rule.next_batch(100, 0.01) == 50  # half of n
    assert rule.next_batch(990, 0.01) == 10  # never past max_iters
    assert rule.next_batch(200, 0.99) == 3  # 0.00495 s per sample, 0.01 s left: 2 fit, plus one to cross the cap
    assert rule.next_batch(200, 2.0) == 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"target_rel_ci": 0.0},
        {"min_iters": 0},
        {"min_iters": 10, "max_iters": 5},
        {"max_time_s": 0.0},
    ],
)
def test_stop_rule_rejects_bad_values(kwargs):
    with pytest.raises(ValueError):
        StopRule(**kwargs)
