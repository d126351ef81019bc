"""fp8_rebase.py (docs/fp8.md's contract) against the fp32 MX oracle and an independent e4m3 rounding.

Oracles: `mxmoe.mx.dequantize` (the exact f32 value of every MX element) and ml_dtypes' float8_e4m3fn cast
(round to nearest even, shares no code with fp8_rebase, which builds its bytes from integers). Each rebased value
is compared with ml_dtypes' rounding of the oracle value divided by the row (token) scale, a power of two.

Tolerances:
  BIT_EXACT (0): inside the exact range (weights: D_MIN <= d <= D_MAX; activations: d = 0) a rebased element is
    the oracle's value bit for bit, NaN where it is NaN and the same signed inf where 6 x 2**127 overflows f32.
  Past the range the rounding is the documented one (equal to the ml_dtypes rounding, bit for bit) and its error
    is at most half the e4m3 subnormal step times the row scale, `half_step(base)` = 2**-10 x 2**(base - 127).
  a16w4 per-token quantization: per element |x_hat - x| <= max(2**-4 |x|, 2**-10 x 2**shared): half an e4m3
    ulp relative (3 mantissa bits) in the normal range, half the subnormal step below it (docs/fp8.md).
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mxmoe import fp8_rebase as fr
from mxmoe.mx import MXFormat, MXTensor, dequantize, quantize_mxfp4, quantize_mxfp8

BIT_EXACT = 0.0
E2M1 = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0)
RELATIVE_HALF_ULP = 2.0**-4


def half_step(base: torch.Tensor) -> torch.Tensor:
    """2**-10 x 2**(base - 127) in f64: the largest rounding error past the exact range (module docstring)."""
    return torch.pow(2.0, base.to(torch.float64) - 137)


def ml_e4m3(v: np.ndarray) -> np.ndarray:
    """ml_dtypes' RNE to e4m3fn as f64 (handed f32, which every ml_dtypes version rounds the same way)."""
    return v.astype(np.float32).astype(ml_dtypes.float8_e4m3fn).astype(np.float64)


def exact64(x: MXTensor) -> torch.Tensor:
    """mx.dequantize in f64, where 4 or 6 x 2**127 stays finite: the value the rebasing divides by its scale."""
    if x.fmt is MXFormat.E2M1:
        vals = torch.tensor(E2M1, dtype=torch.float64)[torch.stack([x.data & 15, x.data >> 4], -1).flatten(-2).long()]
    else:
        vals = x.data.view(torch.float8_e4m3fn).to(torch.float64)
    s = x.scales.to(torch.float64)
    scale = torch.where(s == 255, float("nan"), torch.pow(2.0, s - 127)).repeat_interleave(32, -1)
    return vals * scale


def expected_rounding(exact: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The contract's value of every element, as f32: ml_dtypes' e4m3 rounding of exact / scale, times scale."""
    o = exact.to(torch.float64).numpy()
    s = scale.to(torch.float64).unsqueeze(-1).numpy()
    with np.errstate(invalid="ignore", over="ignore"):
        return torch.from_numpy(ml_e4m3(o / s) * s).to(torch.float32)


def assert_same(actual: torch.Tensor, expected: torch.Tensor, where: torch.Tensor) -> None:
    """Bit-for-bit agreement on `where` (NaN with NaN, inf with the same inf)."""
    a, e = actual.to(torch.float64)[where], expected.to(torch.float64)[where]
    assert torch.equal(a.isnan(), e.isnan()), "NaN positions differ"
    ok = ~e.isnan()
    bad = a[ok] != e[ok]
    assert not bool(bad.any()), f"{int(bad.sum())} values differ, first {a[ok][bad][:4]} vs {e[ok][bad][:4]}"


# ---------------------------------------------------------------- the table


def test_table_is_the_independent_rounding_of_every_code_and_d():
    """All 21 x 16 entries (d = -13..6 and NaN) against ml_dtypes; the exact range is exactly [-8, 6]."""
    t = fr.e4m3_table()
    vals = np.array(E2M1)
    for dcode in range(fr.DCODE_NAN):
        d = dcode + fr.D_FLUSH
        want = ml_e4m3(vals * 2.0**d)
        got = t[dcode].view(torch.float8_e4m3fn).to(torch.float64).numpy()
        assert np.array_equal(np.signbit(got), np.signbit(vals)) and np.array_equal(got, want), d
        assert np.array_equal(got, vals * 2.0**d) == (fr.D_MIN <= d <= fr.D_MAX), d
    assert 6.0 * 2.0**(fr.D_MAX + 1) > 448 and 0.5 * 2.0 ** (fr.D_MIN - 1) < 2.0**-9  # one step past either end
    assert np.all(ml_e4m3(vals * 2.0**fr.D_FLUSH) == 0)  # every value flushes at and below D_FLUSH
    assert torch.equal(t[fr.DCODE_NAN], torch.tensor([0x7F] * 8 + [0xFF] * 8, dtype=torch.uint8))


def test_table_words_and_the_affine_form():
    """The kernel's words are the table's magnitude bytes; from D_AFFINE up they are two multiply-adds, below it
    the table bends (subnormal results); byte 0 of word 0 (code 0) is 0 even for a dead group's negative D."""
    words = fr.table_words().to(torch.int64)
    t = fr.e4m3_table().to(torch.int64)
    for b in range(8):
        assert torch.equal((words[:, b // 4] >> (8 * (b % 4))) & 255, t[:, b])
    dcode = torch.arange(fr.DCODE_NAN)
    aff = fr.affine_words(dcode) & 0xFFFFFFFF
    first = fr.D_AFFINE - fr.D_FLUSH
    assert torch.equal(aff[first:], words[first:fr.DCODE_NAN])
    assert not bool((aff[:first] == words[:first]).all(-1).any())
    assert bool(((aff[:, 0] & 255) == 0).all())


# ---------------------------------------------------------------- weights


def _weights(seed: int, rows: int, groups: int, top: int, spread: int, p_nan: float, p_zero: float) -> MXTensor:
    """Random codes; scale bytes top - U[0, spread] (clamped at 0); some groups NaN (255) or all-zero codes."""
    g = torch.Generator().manual_seed(seed)
    data = torch.randint(0, 256, (2, rows, 16 * groups), generator=g, dtype=torch.uint8)
    s = (top - torch.randint(0, spread + 1, (2, rows, groups), generator=g)).clamp(0, 254)
    zero = torch.rand(2, rows, groups, generator=g) < p_zero
    data = torch.where(zero.repeat_interleave(16, -1), torch.zeros_like(data), data)
    s = torch.where(torch.rand(2, rows, groups, generator=g) < p_nan, 255, s)
    return MXTensor(data, s.to(torch.uint8), MXFormat.E2M1, 2, (2, rows, 32 * groups))


def check_weights(w: MXTensor) -> None:
    r = fr.rebase_weights(w)
    s = w.scales.to(torch.int32)
    codes = torch.stack([w.data & 15, w.data >> 4], -1).flatten(-2).to(torch.int32)
    live = (codes & 7).ne(0).view(*s.shape, 32).any(-1) & s.ne(255)
    top = torch.where(live, s, -1).amax(-1)
    want_base = torch.where(top < 0, fr.BASE_EMPTY, (top - fr.D_MAX).clamp(fr.BASE_MIN, 254))
    assert torch.equal(r.base, want_base.to(torch.int32))
    d = s - r.base.unsqueeze(-1)
    assert not bool((live & (d > fr.D_MAX)).any())  # the top lands at or below D_MAX: nothing saturates
    got, oracle = r.dequantize(), dequantize(w)
    per_elem = lambda m: m.repeat_interleave(32, -1)  # noqa: E731
    exact = per_elem((d >= fr.D_MIN) | (s == 255))
    assert_same(got, oracle, exact)
    assert_same(got, expected_rounding(exact64(w), r.row_scale), torch.ones_like(exact))
    err = (got.to(torch.float64) - oracle.to(torch.float64)).abs()
    fin = oracle.isfinite()
    assert bool((err[fin & exact] <= BIT_EXACT).all())
    bound = half_step(r.base).unsqueeze(-1).expand_as(err)
    assert bool((err[fin] <= bound[fin]).all())


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31), rows=st.integers(1, 5), groups=st.integers(1, 6), top=st.integers(0, 254),
       spread=st.integers(0, 254), p_nan=st.sampled_from([0.0, 0.1]), p_zero=st.sampled_from([0.0, 0.3]))
def test_weights_follow_the_contract_over_drawn_spreads(seed, rows, groups, top, spread, p_nan, p_zero):
    check_weights(_weights(seed, rows, groups, top, spread, p_nan, p_zero))


def _fixed(scales: list[int], code: int | None = None) -> MXTensor:
    """One row of len(scales) groups with the given scale bytes; codes random (or all `code`)."""
    g = torch.Generator().manual_seed(len(scales))
    n = len(scales)
    data = torch.randint(0, 256, (1, 1, 16 * n), generator=g, dtype=torch.uint8)
    if code is not None:
        data.fill_(code | (code << 4))
    return MXTensor(data, torch.tensor(scales, dtype=torch.uint8).view(1, 1, n), MXFormat.E2M1, 2, (1, 1, 32 * n))


@pytest.mark.parametrize("scales,code,base", [
    ([0, 0, 0], None, 1),  # smallest scale: the base clamps to 1 (a normal f32 row scale), d = -1: still exact
    ([254, 254], None, 248),  # largest: 4 and 6 x 2**127 overflow f32 on both sides, to the same inf
    ([255, 255], None, fr.BASE_EMPTY),  # all NaN: no live group
    ([127] * 4, None, 121),  # all equal: d = 6 everywhere
    ([254, 0, 240, 239, 200], None, 248),  # max spread: d = 6, -248 (flushed), -8 (exact), -9 and -48 (rounded)
    ([200, 100, 255], 0, fr.BASE_EMPTY),  # zero codes never anchor the base, whatever their scale
    ([6, 0], None, 1),  # top below 7: base 1, d = 5 and -1, both exact
], ids=["all-0", "all-254", "all-nan", "all-equal", "max-spread", "zeros-high", "low-top"])
def test_weight_extremes(scales, code, base):
    w = _fixed(scales, code)
    assert int(fr.rebase_weights(w).base) == base
    check_weights(w)


def test_zero_groups_do_not_anchor_and_nan_groups_stay_nan():
    """A group of zero codes with a larger scale than the live ones is ignored by the base rule (else it would
    push the live groups below the exact range); a NaN group's values are NaN and its dcode is DCODE_NAN."""
    w = _fixed([200, 120, 255])
    data = w.data.clone()
    data[..., :16] = 0
    w = MXTensor(data, w.scales, MXFormat.E2M1, 2, w.shape)
    r = fr.rebase_weights(w)
    assert int(r.base) == 114 and r.dcode[0, 0].tolist() == [fr.D_MAX - fr.D_FLUSH, fr.D_MAX - fr.D_FLUSH,
                                                             fr.DCODE_NAN]
    assert bool(r.dequantize()[..., 64:].isnan().all()) and not bool(r.dequantize()[..., :64].isnan().any())
    assert fr.tables_are_affine(r) is False


def test_affine_flag():
    narrow = quantize_mxfp4(torch.randn(2, 4, 128, generator=torch.Generator().manual_seed(1)))
    assert fr.tables_are_affine(fr.rebase_weights(narrow))
    assert not fr.tables_are_affine(fr.rebase_weights(_fixed([130, 118])))  # d = -6: a live group bends the table
    assert fr.tables_are_affine(fr.rebase_weights(_fixed([130, 119])))  # d = -5
    assert fr.tables_are_affine(fr.rebase_weights(_fixed([130, 0], code=0)))  # zero codes: any table will do


def test_bad_inputs_are_refused():
    x = quantize_mxfp8(torch.randn(2, 64))
    with pytest.raises(ValueError, match="e2m1"):
        fr.rebase_weights(x)
    with pytest.raises(ValueError, match="axis"):
        fr.rebase_weights(quantize_mxfp4(torch.randn(64, 2), axis=0))
    r = fr.rebase_weights(quantize_mxfp4(torch.randn(2, 64)))
    with pytest.raises(ValueError, match="dcode"):
        fr.RebasedWeights(r.codes, r.dcode[:, :1], r.base, r.shape)
    with pytest.raises(TypeError):
        fr.quantize_e4m3_per_token(torch.ones(4, dtype=torch.int32))


# ---------------------------------------------------------------- activations


def _mxfp8(seed: int, tokens: int, groups: int, span: int, p_nan: float) -> MXTensor:
    """MXFP8 from gaussians scaled per group by 2**U[-span, span], plus NaN-marked groups."""
    g = torch.Generator().manual_seed(seed)
    mag = torch.pow(2.0, torch.randint(-span, span + 1, (tokens, groups, 1), generator=g).float())
    x = (torch.randn(tokens, groups, 32, generator=g) * mag).view(tokens, 32 * groups)
    nan = torch.rand(tokens, groups, generator=g) < p_nan
    x = torch.where(nan.repeat_interleave(32, -1), float("nan"), x)
    return quantize_mxfp8(x, nan_policy="propagate")


def check_activations(x: MXTensor) -> None:
    r = fr.rebase_mxfp8(x)
    got, oracle = r.dequantize(), dequantize(x)
    s = x.scales.to(torch.int32)
    d = (s - r.base.unsqueeze(-1)).repeat_interleave(32, -1)
    top = (d == 0) & (s != 255).repeat_interleave(32, -1)
    assert torch.equal(r.data[top], x.data[top])  # the top groups keep their bytes
    assert_same(got, oracle, top | oracle.isnan())
    assert_same(got, expected_rounding(exact64(x), r.token_scale), torch.ones_like(top))
    fin = oracle.isfinite()
    err = (got.to(torch.float64) - oracle.to(torch.float64)).abs()
    assert bool((err[fin] <= half_step(r.base).unsqueeze(-1).expand_as(err)[fin]).all())


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31), tokens=st.integers(1, 6), groups=st.integers(1, 6), span=st.integers(0, 60),
       p_nan=st.sampled_from([0.0, 0.15]))
def test_activations_follow_the_contract_over_drawn_spreads(seed, tokens, groups, span, p_nan):
    check_activations(_mxfp8(seed, tokens, groups, span, p_nan))


@pytest.mark.parametrize("scales", [[0, 0], [254, 254], [255, 255], [127, 127], [254, 0, 127, 255], [1, 0]],
                         ids=["all-0", "all-254", "all-nan", "all-equal", "max-spread", "low-top"])
def test_activation_extremes(scales):
    """Every e4m3 byte but NaN in each group (so subnormal elements meet every d), with hand-picked scale bytes."""
    n = len(scales)
    codes = torch.arange(256, dtype=torch.int32)
    codes = codes[(codes & 0x7F) != 0x7F][torch.arange(32 * n) % 254].to(torch.uint8)
    x = MXTensor(codes.view(1, -1), torch.tensor(scales, dtype=torch.uint8).view(1, n), MXFormat.E4M3, 1,
                 (1, 32 * n))
    check_activations(x)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31), tokens=st.integers(1, 5), k=st.sampled_from([8, 64, 96]),
       span=st.integers(0, 120), special=st.booleans())
def test_a16w4_per_token_quantization_bound(seed, tokens, k, span, special):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, k, generator=g) * torch.pow(2.0, torch.randint(-span, span + 1, (tokens, k),
                                                                           generator=g).float())
    x = x.clamp(-3e38, 3e38)
    if special:
        x[0, 0], x[-1, -1] = float("nan"), float("-inf")
    r = fr.quantize_e4m3_per_token(x)
    fin = x.isfinite()
    got = r.dequantize()
    assert bool(got[~fin].isnan().all())
    scale = r.token_scale.to(torch.float64).unsqueeze(-1)
    amax = torch.where(fin, x.abs(), 0).amax(-1, keepdim=True).to(torch.float64)
    live = (amax > 0).squeeze(-1) & (r.base > fr.BASE_MIN)
    ratio = (amax / scale).squeeze(-1)[live]
    assert bool(((ratio > 224) & (ratio <= 448)).all())  # no saturation, top binade used
    xs = torch.where(fin, x, 0)
    assert_same(got, expected_rounding(xs, r.token_scale), fin)
    err = (got.to(torch.float64) - x.to(torch.float64)).abs()
    bound = torch.maximum(RELATIVE_HALF_ULP * x.abs().to(torch.float64), 2.0**-10 * scale.expand_as(err))
    assert bool((err[fin] <= bound[fin]).all())
