"""measure() end to end on CPU, with FakeClock and FakeNvml (no CUDA).

Oracle: FakeClock's seeded distribution (median_us exactly, noise known) and FakeNvml's script.
A fake clock never makes a claimable row; `TrustedFakeClock` (a test-only clock that claims to be
real) shows that a clean run IS claimable, so every reason code below is earned by its cause.
"""

import dataclasses
import json

import pytest
import torch

from mxmoe.tuning.timing.clocks import CudaUnavailableError, FakeClock
from mxmoe.tuning.timing.gpu_state import Check, CheckResult
from mxmoe.tuning.timing.measure import (
    HOST_PROBE_ITERS,
    L2Policy,
    Measurement,
    MeasureSettings,
    StopReason,
    TimingMode,
    idle_before,
    measure,
    rotation_copies,
)
from mxmoe.tuning.timing.nvml import FakeNvml, Script

FAST = {"warmup_s": 0.001, "warmup_min_iters": 3, "idle_sample_s": 0.0, "resamples": 300}


def fast(**kw) -> MeasureSettings:
    """Settings that keep a CPU test quick (short warm-up, no idle sampling, a small bootstrap), plus `kw`."""
    return MeasureSettings(**{**FAST, **kw})


class TrustedFakeClock(FakeClock):
    """FakeClock that presents itself as a real clock, to test the checks' own logic."""

    name = "trusted_fake"
    synthetic = False


@pytest.fixture
def no_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")


def test_eager_end_to_end_keeps_samples_and_is_not_claimable():
    calls = []
    m = measure(lambda: calls.append(1), fast(), clock=FakeClock(10.0, 0.02, seed=1), nvml=FakeNvml())
    assert m.mode is TimingMode.EAGER and m.l2 is L2Policy.FLUSH and m.clock == "fake"
    t, s = m.timing, m.summary
    assert len(t.samples_us) == t.n >= 100 and len(calls) == t.n + m.warmup_iters + HOST_PROBE_ITERS
    assert t.median_us == pytest.approx(10.0, rel=0.01)
    assert t.ci_lo_us <= t.median_us <= t.ci_hi_us and s.p5_us <= t.median_us <= t.p95_us
    assert Check.FAKE_CLOCK.value in m.checks and not m.claimable
    assert m.stop_reason is StopReason.CONVERGED and m.rel_ci_halfwidth <= 0.01
    assert m.gpu_before.available and m.gpu_after.available
    assert m.point_stats().median_us == t.median_us


def test_host_time_and_gpu_lead_are_recorded():
    m = measure(lambda: None, fast(), clock=FakeClock(seed=1, overhead_us=4.0), nvml=FakeNvml())
    assert m.host_us == 4.0 and m.lead_us == pytest.approx(1.5 * 4.0 + 20.0)
    off = measure(lambda: None, fast(gpu_lead=False), clock=FakeClock(seed=1), nvml=FakeNvml())
    assert off.lead_us == 0.0


def test_measurement_json_round_trip_is_strict():
    m = measure(lambda: None, fast(), clock=FakeClock(seed=2), nvml=FakeNvml())
    d = json.loads(json.dumps(m.to_dict()))
    assert d["claimable"] is False and d["mode"] == "eager" and d["stop_reason"] == "converged"
    assert Measurement.from_dict(d) == m
    flat = {"samples_us", "n", "median_us", "p5_us", "p95_us", "p95_nearest_us", "mean_us", "std_us", "ci_lo_us",
            "ci_hi_us"}  # stored in every measured row's provenance: flat, as before the Timing was nested
    assert flat <= set(d) and "summary" not in d and d["n"] == len(d["samples_us"])
    with pytest.raises(ValueError, match="does not match"):
        Measurement.from_dict({**d, "n": d["n"] + 1})
    with pytest.raises(ValueError, match="unknown"):
        Measurement.from_dict({**d, "extra": 1})
    with pytest.raises(ValueError, match="missing"):
        Measurement.from_dict({k: v for k, v in d.items() if k != "median_us"})
    with pytest.raises(ValueError, match="contradicts"):
        Measurement.from_dict({**d, "claimable": True})


def test_graph_mode_is_recorded_and_captures_once():
    clock = FakeClock(seed=3)
    m = measure(lambda: None, fast(mode="graph"), clock=clock, nvml=FakeNvml())
    assert m.mode is TimingMode.GRAPH and clock.captures == 1


def test_same_seed_same_samples():
    a = measure(lambda: None, fast(), clock=FakeClock(5.0, 0.1, seed=9), nvml=FakeNvml())
    b = measure(lambda: None, fast(), clock=FakeClock(5.0, 0.1, seed=9), nvml=FakeNvml())
    assert a.timing == b.timing


# ---- adaptive stop --------------------------------------------------------------------------------


def test_low_noise_converges_at_min_iters():
    m = measure(lambda: None, fast(min_iters=50), clock=FakeClock(20.0, 0.005, seed=4), nvml=FakeNvml())
    assert m.stop_reason is StopReason.CONVERGED and m.timing.n == 50


@pytest.mark.parametrize(("median_ms", "budget", "n"), [(100.0, 2.0, 20), (40.0, 2.0, 50), (200.0, 2.0, 20),
                                                        (100.0, None, 100), (0.02, 2.0, 100)])
def test_a_slow_layer_takes_the_min_iters_that_fit_its_budget(median_ms, budget, n):
    """A tight 100 ms layer stops after the floor of 20 samples (2 s), not 100 (10 s); a fast one keeps 100."""
    m = measure(lambda: None, fast(min_iters=100, min_iters_budget_s=budget, max_time_s=60.0),
                clock=FakeClock(median_ms * 1e3, 0.001, seed=4, overhead_us=0.0), nvml=FakeNvml())
    assert m.stop_reason is StopReason.CONVERGED and m.timing.n == n


def test_moderate_noise_takes_more_batches_then_converges():
    m = measure(lambda: None, fast(min_iters=50), clock=FakeClock(20.0, 0.15, seed=4), nvml=FakeNvml())
    assert m.stop_reason is StopReason.CONVERGED and m.timing.n > 50 and m.rel_ci_halfwidth <= 0.01


def test_pathological_noise_hits_the_time_cap():
    clock = FakeClock(10.0, 2.0, seed=5, outlier_rate=0.2, outlier_factor=50.0)
    m = measure(lambda: None, fast(max_time_s=0.02, max_iters=10**6), clock=clock, nvml=FakeNvml())
    assert m.stop_reason is StopReason.TIME_CAP
    assert m.timed_s >= 0.02 and m.rel_ci_halfwidth > 0.01


def test_max_iters_stops():
    m = measure(lambda: None, fast(max_iters=300), clock=FakeClock(10.0, 1.0, seed=6), nvml=FakeNvml())
    assert m.stop_reason is StopReason.MAX_ITERS and m.timing.n == 300


def test_warm_up_runs_for_its_time_budget():
    m = measure(lambda: None, fast(warmup_s=0.01), clock=FakeClock(10.0, 0.0, overhead_us=0.0, seed=0), nvml=FakeNvml())
    assert m.warmup_s >= 0.01 and m.warmup_iters == pytest.approx(1000, abs=5)


# ---- L2 policies ----------------------------------------------------------------------------------


def test_flush_runs_before_every_iteration():
    clock = FakeClock(seed=7)
    m = measure(lambda: None, fast(l2="flush"), clock=clock, nvml=FakeNvml())
    assert clock.flushes == m.warmup_iters + HOST_PROBE_ITERS + m.timing.n


def test_no_flush_with_l2_none():
    clock = FakeClock(seed=7)
    m = measure(lambda: None, fast(l2="none"), clock=clock, nvml=FakeNvml())
    assert clock.flushes == 0 and m.l2 is L2Policy.NONE


def test_rotation_cycles_argument_sets_in_order():
    seen = []
    sets = [(i,) for i in range(5)]
    m = measure(seen.append, fast(l2="rotate"), clock=FakeClock(seed=8), nvml=FakeNvml(), rotate=sets)
    assert m.rotate_sets == 5 and m.l2 is L2Policy.ROTATE
    assert seen[:12] == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1]
    assert seen == [i % 5 for i in range(len(seen))]  # continuous across warm-up and timing


def test_callable_rotation_picks_args_per_iteration():
    seen = []
    m = measure(seen.append, fast(l2="rotate"), clock=FakeClock(seed=8), nvml=FakeNvml(), rotate=lambda i: (i % 3,))
    assert seen[:6] == [0, 1, 2, 0, 1, 2] and m.rotate_sets is None
    assert Check.L2_ROTATION_SHORT.value in m.checks  # a callable's rotation cannot be verified


def test_rotation_verified_against_l2(no_interpreter):
    l2 = 50 * 2**20
    need = rotation_copies(4 * 2**20, l2)
    sets = [(i,) for i in range(need)]
    kw = {"clock": TrustedFakeClock(seed=1, l2=l2), "nvml": FakeNvml()}
    ok = measure(lambda _: None, fast(l2="rotate", bytes_per_set=4 * 2**20), rotate=sets, **kw)
    assert ok.claimable, ok.checks
    short = measure(lambda _: None, fast(l2="rotate", bytes_per_set=4 * 2**20), rotate=sets[:-1], **kw)
    assert short.checks == (Check.L2_ROTATION_SHORT.value,) and "needed" in short.check_detail
    unverified = measure(lambda _: None, fast(l2="rotate"), rotate=sets, **kw)
    assert unverified.checks == (Check.L2_ROTATION_SHORT.value,)


def test_rotation_copies():
    assert rotation_copies(2**20, 50 * 2**20) == 101
    assert rotation_copies(10**9, 50 * 2**20) == 2
    assert rotation_copies(50 * 2**20, 50 * 2**20) == 3
    with pytest.raises(ValueError):
        rotation_copies(0, 2**20)


def test_settings_are_a_validated_frozen_value():
    s = MeasureSettings(mode="graph", l2="none")
    assert (s.mode, s.l2) == (TimingMode.GRAPH, L2Policy.NONE) and MeasureSettings() == MeasureSettings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.min_iters = 1
    with pytest.raises(ValueError, match="max_iters"):
        MeasureSettings(min_iters=10, max_iters=5)
    with pytest.raises(ValueError, match="min_iters_budget_s"):
        MeasureSettings(min_iters_budget_s=0.0)


def test_bad_protocols_are_refused():
    with pytest.raises(ValueError, match="rotate"):
        measure(lambda: None, fast(l2="rotate"), clock=FakeClock())
    with pytest.raises(ValueError, match="graph"):
        measure(lambda _: None, fast(mode="graph"), clock=FakeClock(), rotate=lambda i: (i,))
    with pytest.raises(ValueError):
        measure(lambda: None, fast(mode="replay"), clock=FakeClock())
    with pytest.raises(ValueError):
        measure(lambda: None, fast(l2="sometimes"), clock=FakeClock())
    with pytest.raises(ValueError):
        measure(lambda _: None, fast(), clock=FakeClock(), rotate=[])


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_default_clock_needs_cuda():
    with pytest.raises(CudaUnavailableError, match="FakeClock"):
        measure(lambda: None, fast())


# ---- fail-closed checks through measure() ---------------------------------------------------------


def _trusted(nvml, idle=None, **kw):
    return measure(lambda: None, fast(**kw), clock=TrustedFakeClock(seed=11), nvml=nvml, idle=idle)


def test_clean_run_is_claimable(no_interpreter):
    m = _trusted(FakeNvml())
    assert m.checks == () and m.claimable and m.to_dict()["claimable"] is True


def test_interpreter_and_fake_clock_codes(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    m = measure(lambda: None, fast(), clock=FakeClock(seed=1), nvml=FakeNvml())
    assert m.checks == (Check.FAKE_CLOCK.value, Check.INTERPRETER.value)


def test_no_nvml_is_unavailable(no_interpreter):
    m = measure(lambda: None, fast(), clock=FakeClock(seed=1))  # fake clock: NVML not consulted
    assert Check.NVML_UNAVAILABLE.value in m.checks and not m.gpu_before.available
    m = _trusted(FakeNvml(available=False))
    assert m.checks == (Check.NVML_UNAVAILABLE.value,) and not m.claimable


@pytest.mark.parametrize(
    ("nvml_kwargs", "code"),
    [
        ({"compute_pids": (424242,)}, "busy:other_process"),
        ({"utilization_pct": (80, 40)}, "busy:utilization"),
        ({"clock_event_reasons": 0x20}, "clock:thermal"),
        ({"clock_event_reasons": 0x40 | 0x8}, "clock:thermal"),
        ({"clock_event_reasons": 0x80}, "clock:power"),
        ({"clock_event_reasons": 0x8}, "clock:hw_slowdown"),
    ],
)
def test_each_failure_is_non_claimable_with_its_code(no_interpreter, nvml_kwargs, code):
    m = _trusted(FakeNvml(**nvml_kwargs))
    assert code in m.checks and not m.claimable


class SlowingFakeClock(TrustedFakeClock):
    """Each sample 0.1% slower than the one before: the samples of a GPU whose clock falls while it is timed."""

    def time_batch(self, step, indices, before=None, lead_us=0.0):
        samples = super().time_batch(step, indices, before, lead_us)
        return [x * 1.001**i for x, i in zip(samples, indices, strict=True)]


def test_clock_drop_between_before_and_after(no_interpreter):
    # idle passed in, so the state reads are exactly: before, after.
    nvml = lambda: FakeNvml(sm_clock=Script(1980, 1900))  # noqa: E731
    m = measure(lambda: None, fast(), clock=SlowingFakeClock(seed=11, rel_noise=0.001), nvml=nvml(), idle=CheckResult())
    assert m.checks == (Check.CLOCK_DROP.value,) and not m.claimable and "samples drifted" in m.check_detail
    assert (m.gpu_before.sm_clock_mhz, m.gpu_after.sm_clock_mhz) == (1980, 1900)
    steady = _trusted(nvml(), idle=CheckResult())  # the same drop, samples of one level: the drop alone voids nothing
    assert steady.claimable and "samples steady" in steady.check_detail


def test_process_appearing_during_the_run(no_interpreter):
    m = _trusted(FakeNvml(compute_pids=Script((), (), (5150,))))  # idle read, before, after
    assert m.checks == (Check.BUSY_OTHER_PROCESS.value,)


def test_allow_busy_is_recorded_and_never_claimable(no_interpreter):
    busy = _trusted(FakeNvml(utilization_pct=(90, 0)), allow_busy=True)
    assert set(busy.checks) == {"busy:allowed", "busy:utilization"}
    idle = _trusted(FakeNvml(), allow_busy=True)
    assert idle.checks == (Check.BUSY_ALLOWED.value,) and not idle.claimable


def test_idle_before_is_reused(no_interpreter):
    nvml = FakeNvml()
    idle = idle_before(clock=TrustedFakeClock(), nvml=nvml, idle_sample_s=0.0)
    assert idle.ok
    nvml.values["utilization_pct"] = (100, 100)  # our own kernels now load the GPU
    assert _trusted(nvml, idle=idle).claimable
