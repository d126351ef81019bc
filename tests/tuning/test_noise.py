"""A/A noise floor on FakeClock.

Oracle: FakeClock's known noise. Low noise must leave the spec's margins above the floor with no
spurious win; heavy noise with few samples must put the floor above the 3% decode margin.
"""

import json

import pytest

from mxmoe.shapes import MODELS, Path
from mxmoe.spec import win_margin
from mxmoe.tuning.timing.clocks import FakeClock
from mxmoe.tuning.timing.measure import MeasureSettings
from mxmoe.tuning.timing.noise import NoiseReport, aa_noise, run_noise
from mxmoe.tuning.timing.nvml import FakeNvml

FAST = {"warmup_s": 0.0, "warmup_min_iters": 1, "idle_sample_s": 0.0, "resamples": 300}


def kwargs(rel_noise, seed=0, **settings):
    """measure()'s keyword arguments: a FakeClock of `rel_noise`, a quiet NVML, FAST settings plus `settings`."""
    return {"clock": FakeClock(10.0, rel_noise, seed=seed), "nvml": FakeNvml(),
            "settings": MeasureSettings(**{**FAST, **settings})}


def test_low_noise_floor_sits_under_the_margins():
    order = []
    r = aa_noise(lambda: order.append("a"), lambda: order.append("b"), rounds=4, measure_kwargs=kwargs(0.01), t=1)
    assert r.rounds == 4 and len(r.rel_diffs) == len(r.medians_a_us) == 4
    assert 0 <= r.median_abs_rel <= r.p95_abs_rel <= r.max_abs_rel < 0.01
    assert r.win_margin == 0.03 and r.regression_band_rel == pytest.approx(0.1, rel=0.01)  # 1 us of ~10 us
    assert r.false_wins == 0 and r.false_regressions == 0
    assert r.margin_above_noise and r.band_above_noise
    assert "fake_clock" in r.checks and not r.claimable  # a fake floor proves nothing
    # interleaved: A's calls, then B's, then A's again
    runs = [k for i, k in enumerate(order) if i == 0 or order[i - 1] != k]
    assert runs == ["a", "b"] * 4


def test_heavy_noise_floor_exceeds_the_decode_margin():
    noisy = kwargs(0.6, seed=3, min_iters=10, max_iters=10)
    r = aa_noise(lambda: None, lambda: None, rounds=6, measure_kwargs=noisy, t=16)
    assert r.p95_abs_rel > win_margin(16)
    assert r.margin_above_noise is False


def test_without_t_there_is_no_verdict():
    r = aa_noise(lambda: None, lambda: None, rounds=2, measure_kwargs=kwargs(0.01))
    assert r.t is None and r.win_margin is None and r.margin_above_noise is None


def test_round_trip_and_rounds_validation():
    r = aa_noise(lambda: None, lambda: None, rounds=2, measure_kwargs=kwargs(0.01), t=4096, path="a8w4")
    d = json.loads(json.dumps(r.to_dict()))
    assert d["claimable"] is False and d["win_margin"] == 0.02 and d["path"] == "a8w4"
    assert NoiseReport.from_dict(d) == r
    with pytest.raises(ValueError):
        aa_noise(lambda: None, lambda: None, rounds=0, measure_kwargs=kwargs(0.01))


def test_run_noise_builds_each_side_separately_per_t():
    built = []

    def factory(t):
        built.append(t)
        return lambda: None

    reports = run_noise(MODELS["tiny"], Path.A16W4, (1, 128, 4096), factory, rounds=2, measure_kwargs=kwargs(0.01))
    assert built == [1, 1, 128, 128, 4096, 4096]
    assert [r.t for r in reports] == [1, 128, 4096]
    assert [r.win_margin for r in reports] == [0.03, 0.02, 0.02]
    assert all(r.shape == "tiny" and r.path == "a16w4" for r in reports)


def test_busy_gpu_marks_the_noise_report():
    busy = {**kwargs(0.01), "nvml": FakeNvml(compute_pids=(31337,))}
    r = aa_noise(lambda: None, lambda: None, rounds=1, measure_kwargs=busy, t=1)
    assert "busy:other_process" in r.checks
