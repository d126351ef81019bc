"""GPU state and the fail-closed checks, against FakeNvml.

Oracle: the scripted FakeNvml values and nvml.h's clock-event bit assignments. Every busy or
throttled case must end with its own reason code; a clean state must pass (so codes are earned,
not always on).
"""

import json
import os
from pathlib import Path

import pytest
import torch

from mxmoe.tuning.timing import gpu_state as gs
from mxmoe.tuning.timing.gpu_state import (
    DRIFT_MIN_SAMPLES,
    Check,
    CheckResult,
    GpuBusyError,
    GpuState,
    clock_check,
    decode_clock_events,
    idle_check,
    locked_clocks_advice,
    merge_checks,
    process_check,
    read_gpu_state,
    require_idle,
    sample_drift,
    verify_locked,
)
from mxmoe.tuning.timing.nvml import FakeNvml, MissingNvml, Script, open_nvml

THERMAL_SW, THERMAL_HW, POWER_SW, POWER_BRAKE, HW_SLOW = 0x20, 0x40, 0x4, 0x80, 0x8


def no_sleep(_: float) -> None:
    return None


@pytest.mark.parametrize(
    ("mask", "names"),
    [
        (0x0, ()),
        (0x1, ("idle",)),
        (0x2, ("applications_clocks_setting",)),
        (0x4, ("sw_power_cap",)),
        (0x8, ("hw_slowdown",)),
        (0x10, ("sync_boost",)),
        (0x20, ("sw_thermal",)),
        (0x40, ("hw_thermal",)),
        (0x80, ("hw_power_brake",)),
        (0x100, ("display_clocks",)),
        (0x48, ("hw_slowdown", "hw_thermal")),
        (0x1 | 0x800, ("idle", "unknown:0x800")),
    ],
)
def test_decode_clock_events(mask, names):
    assert decode_clock_events(mask) == names


def test_bits_match_pynvml():
    pynvml = pytest.importorskip("pynvml")
    assert pynvml.nvmlClocksThrottleReasonSwThermalSlowdown == THERMAL_SW
    assert pynvml.nvmlClocksThrottleReasonHwThermalSlowdown == THERMAL_HW
    assert pynvml.nvmlClocksThrottleReasonSwPowerCap == POWER_SW
    assert pynvml.nvmlClocksThrottleReasonHwPowerBrakeSlowdown == POWER_BRAKE
    assert pynvml.nvmlClocksThrottleReasonHwSlowdown == HW_SLOW


def test_read_state_of_an_idle_unlocked_h100():
    s = read_gpu_state(FakeNvml())
    assert s.available and s.errors == ()
    assert s.name == "NVIDIA H100 80GB HBM3" and s.uuid.startswith("GPU-")
    assert (s.sm_clock_mhz, s.sm_clock_app_mhz, s.sm_clock_max_mhz) == (1980, 1755, 1980)
    assert s.cuda_driver_version == "13.0"
    assert s.power_w == 120.0 and s.power_limit_w == 700.0
    assert s.compute_pids == () and s.util_gpu_pct == 0
    assert s.clocks_locked is False and not verify_locked(s)


def test_locked_clocks_read_as_locked():
    assert verify_locked(read_gpu_state(FakeNvml(sm_clock=1755)))
    assert verify_locked(read_gpu_state(FakeNvml(clock_event_reasons=0x2)))  # user-defined clocks cap
    throttled = read_gpu_state(FakeNvml(sm_clock=1755, clock_event_reasons=POWER_SW))
    assert throttled.clocks_locked and not verify_locked(throttled)


def test_unsupported_field_is_none_and_recorded():
    s = read_gpu_state(FakeNvml(unsupported={"sm_clock_app", "power_mw"}))
    assert s.available and s.sm_clock_app_mhz is None and s.power_w is None
    assert s.clocks_locked is None
    assert any(e.startswith("sm_clock_app") for e in s.errors) and any(e.startswith("power") for e in s.errors)


def test_unavailable_nvml_gives_a_state_not_an_exception():
    for nvml in (FakeNvml(available=False), MissingNvml("pynvml not importable")):
        s = read_gpu_state(nvml)
        assert not s.available and s.reason
        assert clock_check(s, s).codes == (Check.NVML_UNAVAILABLE.value,)
        assert idle_check(nvml, sleep=no_sleep).codes == (Check.NVML_UNAVAILABLE.value,)
        assert process_check(s).codes == (Check.NVML_UNAVAILABLE.value,)
    assert not read_gpu_state(FakeNvml(), index=3).available


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_real_nvml_without_a_gpu_says_unavailable():
    nvml = open_nvml()
    assert not read_gpu_state(nvml).available


def test_state_json_round_trip_is_strict():
    s = read_gpu_state(FakeNvml(compute_pids=(11, 12), clock_event_reasons=0x5))
    d = json.loads(json.dumps(s.to_dict()))
    assert GpuState.from_dict(d) == s
    with pytest.raises(ValueError):
        GpuState.from_dict({**d, "surprise": 1})
    with pytest.raises(ValueError):
        GpuState.from_dict({**d, "schema": 99})


def test_fake_nvml_rejects_unknown_values():
    with pytest.raises(TypeError):
        FakeNvml(sm_clok=1)


# ---- idle check -----------------------------------------------------------------------------------


def test_idle_gpu_passes():
    assert idle_check(FakeNvml(), sample_s=1.0, sleep=no_sleep).ok


def test_other_process_is_busy_but_our_own_is_not():
    me = os.getpid()
    busy = idle_check(FakeNvml(compute_pids=(me, 4242)), sleep=no_sleep)
    assert busy.codes == (Check.BUSY_OTHER_PROCESS.value,) and "4242" in busy.detail
    assert idle_check(FakeNvml(compute_pids=(me,)), sleep=no_sleep).ok
    assert idle_check(FakeNvml(compute_pids=(7,)), own_pids=(7,), sleep=no_sleep).ok


def test_high_utilisation_is_busy():
    result = idle_check(FakeNvml(utilization_pct=(60, 30)), sleep=no_sleep)
    assert result.codes == (Check.BUSY_UTILIZATION.value,)


def test_utilisation_is_averaged_over_the_sample():
    slept: list[float] = []
    spiky = FakeNvml(utilization_pct=Script((40, 0), *[(0, 0)] * 9))  # one spike in ten polls: 4%
    assert idle_check(spiky, sample_s=1.0, interval_s=0.1, sleep=slept.append).ok
    assert slept == [0.1] * 9
    busy = FakeNvml(utilization_pct=Script((50, 0), *[(0, 0)] * 9))  # 5%: not under 5%
    assert idle_check(busy, sample_s=1.0, interval_s=0.1, sleep=no_sleep).codes == ("busy:utilization",)


def test_busy_in_both_ways_reports_both():
    result = idle_check(FakeNvml(compute_pids=(99999,), utilization_pct=(90, 0)), sleep=no_sleep)
    assert result.codes == ("busy:other_process", "busy:utilization")


def test_require_idle_fails_closed_unless_allowed():
    busy = CheckResult((Check.BUSY_UTILIZATION.value,), "utilization 90%")
    with pytest.raises(GpuBusyError, match="busy:utilization"):
        require_idle(busy, allow_busy=False)
    with pytest.raises(GpuBusyError):
        require_idle(CheckResult((Check.NVML_UNAVAILABLE.value,)), allow_busy=False)
    require_idle(busy, allow_busy=True)
    require_idle(CheckResult(), allow_busy=False)


# ---- clock check ----------------------------------------------------------------------------------


def _pair(before: dict, after: dict) -> tuple[GpuState, GpuState]:
    return read_gpu_state(FakeNvml(**before)), read_gpu_state(FakeNvml(**after))


def test_stable_clocks_pass():
    assert clock_check(*_pair({}, {})).ok
    assert clock_check(*_pair({"sm_clock": 1980}, {"sm_clock": 1950})).ok  # -1.5%: inside 2%
    assert clock_check(*_pair({"clock_event_reasons": 0x1}, {"clock_event_reasons": 0x10})).ok  # idle, sync


def test_clock_drop_over_two_percent():
    result = clock_check(*_pair({"sm_clock": 1980}, {"sm_clock": 1935}))  # -2.3%
    assert result.codes == (Check.CLOCK_DROP.value,) and "1980 -> 1935" in result.detail


@pytest.mark.parametrize(
    ("mask", "code"),
    [
        (THERMAL_SW, "clock:thermal"),
        (THERMAL_HW | HW_SLOW, "clock:hw_slowdown"),
        (POWER_BRAKE, "clock:power"),
        (HW_SLOW, "clock:hw_slowdown"),
    ],
)
@pytest.mark.parametrize("end", ["before", "after"])
def test_throttle_reason_at_either_end(mask, code, end):
    throttled = {"clock_event_reasons": mask}
    before, after = _pair(throttled, {}) if end == "before" else _pair({}, throttled)
    result = clock_check(before, after)
    assert code in result.codes and not result.ok
    if mask & (THERMAL_SW | THERMAL_HW):
        assert "clock:thermal" in result.codes


@pytest.mark.parametrize("end", ["before", "after", "both"])
def test_the_sw_power_cap_alone_is_named_but_voids_nothing(end):
    """Prefill holds the GPU at its default power limit; a steady clock there is a trustworthy sample."""
    capped = {"clock_event_reasons": POWER_SW}
    before, after = _pair(capped if end != "after" else {}, capped if end != "before" else {})
    result = clock_check(before, after)
    assert result.ok and "sw_power_cap" in result.detail


def test_the_sw_power_cap_with_a_clock_drop_is_void():
    before, after = _pair({"sm_clock": 1980}, {"sm_clock": 1700, "clock_event_reasons": POWER_SW})
    assert clock_check(before, after).codes == (Check.CLOCK_DROP.value,)


STEADY = [100.0] * 30  # samples of one clock level
DRIFTED = [100.0] * 10 + [101.0] * 10 + [103.6] * 10  # kimi-k2 T=512 on the H100: the last third 3.6% slower


def test_a_clock_drop_with_steady_samples_is_not_a_void():
    """NVML's clock is an instant's reading that the power cap moves by several percent; steady samples
    show the timed work saw one level (H100, a16w4 prefill: 1965 -> 1740 MHz with samples within 0.4%)."""
    capped = {"clock_event_reasons": POWER_SW}
    before, after = _pair({"sm_clock": 1965, **capped}, {"sm_clock": 1740, **capped})
    result = clock_check(before, after, samples=STEADY)
    assert result.ok and "samples steady" in result.detail and "1965 -> 1740" in result.detail


def test_a_clock_drop_with_drifting_samples_is_void():
    before, after = _pair({"sm_clock": 1980}, {"sm_clock": 1815, "clock_event_reasons": POWER_SW})
    result = clock_check(before, after, samples=DRIFTED)
    assert result.codes == (Check.CLOCK_DROP.value,) and "+3.60%" in result.detail
    faster = list(reversed(DRIFTED))  # a drift either way is two clock levels
    assert clock_check(before, after, samples=faster).codes == (Check.CLOCK_DROP.value,)


def test_drift_just_inside_and_outside_the_limit():
    before, after = _pair({"sm_clock": 1980}, {"sm_clock": 1800})
    inside = [100.0] * 20 + [100.9] * 10
    outside = [100.0] * 20 + [101.1] * 10
    assert clock_check(before, after, samples=inside).ok
    assert not clock_check(before, after, samples=outside).ok


def test_too_few_samples_leave_the_drop_to_decide():
    before, after = _pair({"sm_clock": 1980}, {"sm_clock": 1800})
    assert sample_drift(STEADY[:DRIFT_MIN_SAMPLES - 1]) is None
    assert clock_check(before, after, samples=STEADY[:DRIFT_MIN_SAMPLES - 1]).codes == (Check.CLOCK_DROP.value,)
    assert clock_check(before, after, samples=STEADY[:DRIFT_MIN_SAMPLES]).ok


def test_steady_samples_do_not_excuse_a_thermal_event():
    before, after = _pair({"sm_clock": 1980}, {"sm_clock": 1800, "clock_event_reasons": THERMAL_SW})
    assert clock_check(before, after, samples=STEADY).codes == (Check.CLOCK_THERMAL.value,)


def test_unreadable_sm_clock_fails_closed():
    before, after = _pair({"unsupported": {"sm_clock"}}, {})
    assert clock_check(before, after).codes == (Check.NVML_UNAVAILABLE.value,)


def test_merge_checks_sorts_and_dedups():
    merged = merge_checks(CheckResult(("b", "a"), "x"), CheckResult(("a",), ""), CheckResult())
    assert merged.codes == ("a", "b") and merged.detail == "x"


def test_check_result_json_round_trip():
    r = CheckResult(("busy:utilization",), "90%")
    assert CheckResult.from_dict(json.loads(json.dumps(r.to_dict()))) == r


# ---- advice, and never a setter -------------------------------------------------------------------


def test_locked_clocks_advice_prints_lgc_and_lmc():
    s = read_gpu_state(FakeNvml())
    advice = locked_clocks_advice(s)
    assert f"nvidia-smi -i {s.uuid} -lgc 1755,1755" in advice
    assert f"nvidia-smi -i {s.uuid} -lmc 2619,2619" in advice
    assert "never runs" in advice
    assert "nothing to do" in locked_clocks_advice(read_gpu_state(FakeNvml(sm_clock=1755)))
    assert "unavailable" in locked_clocks_advice(read_gpu_state(MissingNvml("no driver")))


def test_module_never_calls_an_nvml_setter():
    source = Path(gs.__file__).read_text()
    for forbidden in ("nvmlDeviceSet", "nvmlDeviceReset", "subprocess", "os.system"):
        assert forbidden not in source


def test_unreadable_utilisation_fails_closed():
    result = idle_check(FakeNvml(unsupported={"utilization_pct"}), sleep=no_sleep)
    assert result.codes == (Check.NVML_UNAVAILABLE.value,)
