"""The locked spec: formulas on hand-computed cases, and both profiles' predicates at their edges.

Oracle: arithmetic done by hand in the comments. Exact comparisons (or 1e-12 relative) because these
are closed-form formulas; the predicates are checked at the boundaries the reference harness pinned.
"""

from __future__ import annotations

import pytest

from mxmoe import spec
from mxmoe.shapes import MODELS, Path
from mxmoe.spec import PointStats, Profile, is_regression, is_win


def pt(us: float, half: float = 0.0) -> PointStats:
    return PointStats(us, us - half, us + half)


def test_flops_hand_computed():
    s = MODELS["tiny"]  # E=4, A=2, H=64, I=64
    # 2 * T * A * (H * 2I + I * H) = 2 * 3 * 2 * (64*128 + 64*64) = 12 * 12288 = 147456
    assert spec.flops(s, 3) == 147456
    ds = MODELS["deepseek-v3"]
    assert spec.flops(ds, 1) == 2 * 8 * (7168 * 4096 + 2048 * 7168)


def test_bytes_and_floors_hand_computed():
    s = MODELS["tiny"]
    # (2*64*64 + 64*64) = 12288 elements * 17/32 B = 6528
    assert spec.expert_weight_bytes(s) == pytest.approx(6528)
    # 2 experts hit, T=3: weights + input 3*64*2 B (bf16) + output 3*64*2 B
    b = spec.layer_bytes(s, Path.A16W4, 3, 2)
    assert b == pytest.approx(2 * 6528 + 3 * 64 * 4)
    b8 = spec.layer_bytes(s, Path.A8W4, 3, 2)
    assert b8 == pytest.approx(2 * 6528 + 3 * 64 * (1 + 1 / 32 + 2))
    assert spec.memory_floor_us(3e6, 3e12) == pytest.approx(1.0)
    assert spec.compute_floor_us(790e6, 790e12) == pytest.approx(1.0)
    assert spec.roofline_fraction(4.0, 1.0, 2.0) == 0.5
    with pytest.raises(ValueError):
        spec.layer_bytes(s, Path.A16W4, 3, 5)
    with pytest.raises(ValueError):
        spec.memory_floor_us(1.0, 0.0)


def test_mfu_and_vendor_peak():
    assert spec.mfu(989.4e6, 1.0, 989.4e12) == pytest.approx(1.0)
    assert spec.vendor_peak("NVIDIA H100 80GB HBM3") == 989.4e12
    assert spec.vendor_peak("Tesla T4") is None
    s = MODELS["deepseek-v3-tp8"]
    # seed708 MFU: 2*T*topk*3*H*I / time over the measured ceiling
    assert spec.seed708_mfu(s, 16384, 1000.0, 800e12) == pytest.approx(2 * 16384 * 9 * 3 * 7168 * 256 / 1e-3 / 800e12)


def test_p95_nearest_rank_of_1_to_100_is_95():
    assert spec.p95_nearest_rank(list(range(1, 101))) == 95
    with pytest.raises(ValueError):
        spec.p95_nearest_rank([])


# ---- mxmoe profile --------------------------------------------------------------------------------


def test_mxmoe_win_needs_margin_and_disjoint_ci():
    base = pt(100.0, 0.5)
    assert is_win(16, base, pt(96.9, 0.5))  # 3.1% faster, CIs apart
    assert not is_win(16, base, pt(97.5, 0.5))  # 2.5% < the 3% decode margin
    assert is_win(128, base, pt(97.5, 0.5))  # 2.5% >= the 2% margin elsewhere
    assert not is_win(128, base, pt(97.5, 2.0))  # CIs overlap


def test_mxmoe_regression_band():
    assert not is_regression(16, pt(10.0), pt(10.9))  # decode: max(2%, 1 us) = 1 us
    assert is_regression(16, pt(10.0), pt(11.1))
    assert not is_regression(16, pt(100.0), pt(101.9))  # 2% of 100 = 2 us
    assert is_regression(16, pt(100.0), pt(102.1))
    assert not is_regression(4096, pt(1000.0), pt(1009.0))  # 1% elsewhere
    assert is_regression(4096, pt(1000.0), pt(1011.0))


def test_aa_is_neither_win_nor_regression():
    for t in (1, 128, 32768):
        for profile in Profile:
            assert not is_win(t, pt(50.0, 1.0), pt(50.0, 1.0), profile)
            assert not is_regression(t, pt(50.0, 1.0), pt(50.0, 1.0), profile)


def test_point_stats_rejects_ci_without_median():
    with pytest.raises(ValueError):
        PointStats(10.0, 11.0, 12.0)


# ---- seed708 profile: the reference harness's own edge cases --------------------------------------

S = Profile.SEED708


def test_seed708_large_shape_mfu_win_at_exactly_ten_percent():
    # MFU ratio = base / cand: exactly +10% MFU is a win, +9.8% is not; only at T in {16384, 32768}
    assert is_win(16384, pt(110.0), pt(100.0), S)
    assert is_win(32768, pt(1.1), pt(1.0), S)
    assert not is_win(16384, pt(109.8), pt(100.0), S)
    assert not is_win(8192, pt(200.0), pt(100.0), S)  # 128..8192 can only regress


def test_seed708_regression_is_strict():
    assert not is_regression(1024, pt(100.0), pt(102.0), S)  # 102.0 vs 100.0: not a regression
    assert is_regression(1024, pt(100.0), pt(102.5), S)


def test_seed708_regression_floors():
    assert not is_regression(16, pt(100.0), pt(105.0), S)  # 5 us at T=16: under the 8 us floor
    assert is_regression(16, pt(100.0), pt(109.0), S)  # 9 us is over it
    assert is_regression(128, pt(100.0), pt(105.0), S)  # at T=128 the floor is 2 us


def test_seed708_small_token_win():
    assert is_win(16, pt(100.0), pt(88.0), S)  # 12% faster, saves 12 us
    assert not is_win(16, pt(10.0), pt(8.8), S)  # 12% of a 10 us point saves 1.2 us < 2 us
    assert not is_win(16, pt(100.0), pt(92.0), S)  # 8% < 10%
