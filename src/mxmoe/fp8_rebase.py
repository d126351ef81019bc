"""Rebasing MX block scales for e4m3 tensor cores (issue 23): docs/fp8.md's numerics contract, in torch.

Why: Hopper's e4m3 wgmma can apply a scale only per output row (in the epilogue), while MX carries one e8m0 scale per
32 along K. So each K32 group's scale byte s is split, once, into a per-row base b and a small relative exponent
d = s - b folded into the e4m3 value: e4m3 = e2m1 x 2**d, exact for d in [D_MIN, D_MAX] = [-8, 6], and rounded
to nearest even in e4m3 below that (docs/fp8.md derives the range, the base rule and the error bounds). This module
is the twin the e4m3 kernels are tested against, as mx.py is for the bf16 ones.

Axis legend: N rows (weight rows, or tokens), K the reduced axis (last), G = K // 32 groups; leading dims pass through.
  codes   [..., N, K // 2] uint8   e2m1 pairs along K (low nibble = even element), as mx.MXTensor holds them
  scales  [..., N, G]      uint8   e8m0: 2**(s - 127), 255 = NaN
  dcode   [..., N, G]      uint8   clamp(d, D_FLUSH, D_MAX) - D_FLUSH, or DCODE_NAN for a NaN group
  base    [..., N]         int32   b: the row (or token) scale is 2**(b - 127), always a normal f32
  bytes   [..., N, K]      uint8   e4m3fn bit patterns
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mxmoe.mx import BLOCK, MXFormat, MXTensor, pow2, unpack_e2m1

# Weights: e2m1 x 2**d is exact in e4m3 for d in [D_MIN, D_MAX]: 6 x 2**6 = 384 <= 448 (7 would give 768) and
# 0.5 x 2**-8 = 2**-9, the smallest e4m3 subnormal (d = -9 halves it). At d <= D_FLUSH every value rounds to +-0
# (6 x 2**-13 = 0.375 x 2**-9), so clamping d there changes nothing and the code fits 21 values.
D_MAX = 6
D_MIN = -8
D_FLUSH = -13
DCODE_NAN = D_MAX - D_FLUSH + 1  # 20
N_DCODES = DCODE_NAN + 1
# The base is kept in [BASE_MIN, 254] so the row scale 2**(b - 127) is a normal f32 (no flush-to-zero in an
# epilogue); a row or token with no nonzero, non-NaN group takes BASE_EMPTY (scale 1.0).
BASE_MIN = 1
BASE_EMPTY = 127
# From d = D_AFFINE up, a group's table words are affine in its dcode (`affine_words`: one integer multiply-add
# each); below it subnormal results bend the table, and a NaN group's table is constant NaN.
D_AFFINE = -5
# Activations: an e4m3 value q x 2**d (d <= 0) rounds to +-0 from d <= ACT_D_FLUSH on (448 x 2**-19 < 2**-10).
ACT_D_FLUSH = -19
E4M3_NAN = 0x7F
_HALF_UNITS = (0, 1, 2, 3, 4, 6, 8, 12)  # 2 x the e2m1 magnitude of codes 0..7


def e4m3_magnitude(cm: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """int64 e2m1 magnitude codes (0..7) and relative exponents (D_FLUSH..D_MAX) -> the e4m3 byte of |e2m1| x 2**d,
    rounded to nearest even: docs/fp8.md's closed form, in integers (no float cast anywhere).

    Normal results (e2m1 exponent + d >= -6): (cm << 2) + ((d + 6) << 3), less 4 for cm = 1 (0.5 has no implicit
    bit in e2m1). Subnormal results: q x 2**(d + 8) units of 2**-9 with q = 2 x |e2m1|, shifted right with ties to
    even when d < -8."""
    q = torch.tensor(_HALF_UNITS, dtype=torch.int64, device=cm.device)[cm]
    up = (d + 8).clamp(min=0)
    down = (-(d + 8)).clamp(min=0)
    sub = torch.where(down > 0, (q + (1 << down) // 2 - 1 + ((q >> down) & 1)) >> down, q << up)
    normal = ((d + 6) << 3) + (cm << 2) - 4 * (cm == 1).to(torch.int64)
    return torch.where(sub >= 8, normal, sub)


def e4m3_table(device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 [N_DCODES, 16]: the e4m3 byte of e2m1 code c (sign in bit 3) times 2**d, row dcode = d - D_FLUSH.
    Row DCODE_NAN is NaN (0x7F, with the code's sign) for every code."""
    c = torch.arange(16, dtype=torch.int64).expand(N_DCODES, 16)
    d = (torch.arange(N_DCODES, dtype=torch.int64) + D_FLUSH).clamp(max=D_MAX)[:, None].expand(N_DCODES, 16)
    mag = e4m3_magnitude(c & 7, d)
    mag[DCODE_NAN] = E4M3_NAN
    return (mag | ((c & 8) << 4)).to(torch.uint8).to(device)


def table_words(device: torch.device | str = "cpu") -> torch.Tensor:
    """int32 [N_DCODES, 2]: each row's magnitude bytes (codes 0..7) as two little-endian words, the `prmt` operands
    of the kernel's byte lookup (kernels/wtile_e4m3.py). Every byte is < 0x80, so both words are positive."""
    mag = e4m3_table()[:, :8].to(torch.int64).view(N_DCODES, 2, 4)
    words = (mag << torch.tensor([0, 8, 16, 24])).sum(-1)
    return words.to(torch.int32).to(device)


def affine_words(dcode: torch.Tensor) -> torch.Tensor:
    """int64 [..., 2]: table_words()[dcode] for dcode >= D_AFFINE - D_FLUSH, as the kernel computes it without a
    table: with D = 8 (d + 6), byte c of word 0 is (0, D, D + 8, D + 12)[c] and of word 1 (D + 16 .. D + 28), i.e.
    D x 0x01010100 + 0x0C080000 and D x 0x01010101 + 0x1C181410. Byte 0 of word 0 (code 0) is 0 for any dcode."""
    dd = 8 * (dcode.to(torch.int64) + D_FLUSH + 6)
    return torch.stack([dd * 0x01010100 + 0x0C080000, dd * 0x01010101 + 0x1C181410], dim=-1)


def _nonzero_groups(codes: torch.Tensor) -> torch.Tensor:
    """bool [..., K // BLOCK]: the K groups of packed e2m1 pairs `codes` [..., K // 2] with a nonzero magnitude in
    either nibble of one of their 16 bytes. Read packed, a few leading rows at a time, so a full model's W13 never
    needs an unpacked copy (deepseek-v3: 7.5 G values; unpacked whole it asked the H100 for 28 GiB, 7de9e8b)."""
    return torch.cat([(c & 0x77).ne(0).unflatten(-1, (-1, BLOCK // 2)).any(dim=-1) for c in codes.split(8)])


def tables_are_affine(r: RebasedWeights) -> bool:
    """Whether the kernel may compute every group's table with `affine_words` (its AFFINE path): no NaN group, and
    every group holding a nonzero code has d >= D_AFFINE (a group of zeros decodes to zeros under any table)."""
    bad = (r.dcode == DCODE_NAN) | (_nonzero_groups(r.codes) & (r.dcode < D_AFFINE - D_FLUSH))
    return not bool(bad.any())


def _check_mx(x: MXTensor, fmt: MXFormat) -> None:
    if not isinstance(x, MXTensor):
        raise TypeError(f"expected an MXTensor, got {type(x).__name__}")
    if x.fmt is not fmt:
        raise ValueError(f"expected {fmt.value} elements, got {x.fmt.value}")
    if x.axis != len(x.shape) - 1:
        raise ValueError(f"rebasing needs the quantized axis last (K), got axis {x.axis} of shape {x.shape}")


def _base(scales: torch.Tensor, live: torch.Tensor, headroom: int) -> torch.Tensor:
    """int32 [..., N] base: the largest scale of a live group (a nonzero element, not NaN) minus `headroom`,
    clamped to [BASE_MIN, 254]; BASE_EMPTY where a row has no live group."""
    s = torch.where(live, scales.to(torch.int32), torch.full_like(scales, -1, dtype=torch.int32))
    top = s.amax(dim=-1)
    return torch.where(top < 0, BASE_EMPTY, (top - headroom).clamp(BASE_MIN, 254)).to(torch.int32)


@dataclass(frozen=True, slots=True)
class RebasedWeights:
    """MXFP4 weights rebased for e4m3 MMA: the e2m1 codes unchanged, one dcode per K32 group, one base per row.

    `shape` is the logical [..., N, K]. Build with `rebase_weights`; `e4m3()` is what the kernel's decode must
    produce bit for bit, `dequantize()` what it stands for (equal to mx.dequantize wherever d >= D_MIN)."""

    codes: torch.Tensor
    dcode: torch.Tensor
    base: torch.Tensor
    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        lead, k = self.shape[:-1], self.shape[-1]
        want = {"codes": (torch.uint8, (*lead, k // 2)), "dcode": (torch.uint8, (*lead, k // BLOCK)),
                "base": (torch.int32, lead)}
        for name, (dtype, shape) in want.items():
            t = getattr(self, name)
            if t.dtype != dtype or tuple(t.shape) != shape:
                raise ValueError(f"RebasedWeights.{name}: {t.dtype} {tuple(t.shape)}, expected {dtype} {shape}")

    @property
    def row_scale(self) -> torch.Tensor:
        """f32 [..., N]: 2**(base - 127), the factor the kernel's epilogue applies per row."""
        return pow2(self.base - 127)

    def e4m3(self) -> torch.Tensor:
        """uint8 [..., N, K] e4m3 bytes: e4m3_table()[dcode of the element's group, its code]."""
        nib = unpack_e2m1(self.codes)
        grp = self.dcode.to(torch.int64).repeat_interleave(BLOCK, dim=-1)
        return e4m3_table(self.codes.device)[grp, nib]

    def dequantize(self) -> torch.Tensor:
        """f32 [..., N, K]: e4m3 value x row scale (exact: a power-of-two product within f32's range)."""
        vals = self.e4m3().view(torch.float8_e4m3fn).to(torch.float32)
        return vals * self.row_scale.unsqueeze(-1)


def rebase_weights(w: MXTensor) -> RebasedWeights:
    """Rebase MXFP4 weights ([..., N, K], quantized along K) to e4m3 form: base b = top live scale - D_MAX per row
    (so the largest group lands at the top of the exact range), d = s - b per group, NaN groups coded NaN."""
    _check_mx(w, MXFormat.E2M1)
    live = _nonzero_groups(w.data) & w.scales.ne(255)
    base = _base(w.scales, live, D_MAX)
    d = (w.scales.to(torch.int32) - base.unsqueeze(-1)).clamp(D_FLUSH, D_MAX)
    dcode = torch.where(w.scales == 255, DCODE_NAN, d - D_FLUSH).to(torch.uint8)
    return RebasedWeights(w.data, dcode, base, w.shape)


@dataclass(frozen=True, slots=True)
class TokenE4M3:
    """Activations as e4m3 bytes [T, K] with one power-of-two scale per token, 2**(base - 127): the e4m3 MMA's
    other operand (a8w4: rebased MXFP8; a16w4 prefill, opt-in: bf16 quantized per token)."""

    data: torch.Tensor
    base: torch.Tensor

    def __post_init__(self) -> None:
        if self.data.dtype != torch.uint8 or self.data.dim() < 1:
            raise ValueError(f"TokenE4M3.data must be uint8 [..., K], got {self.data.dtype} {tuple(self.data.shape)}")
        if self.base.dtype != torch.int32 or tuple(self.base.shape) != tuple(self.data.shape[:-1]):
            raise ValueError(f"TokenE4M3.base must be int32 {tuple(self.data.shape[:-1])}, got {self.base.dtype} "
                             f"{tuple(self.base.shape)}")

    @property
    def token_scale(self) -> torch.Tensor:
        return pow2(self.base - 127)

    def dequantize(self) -> torch.Tensor:
        vals = self.data.view(torch.float8_e4m3fn).to(torch.float32)
        return vals * self.token_scale.unsqueeze(-1)


def _to_e4m3(v: torch.Tensor) -> torch.Tensor:
    """f32 values with |v| <= 448 (or NaN) -> e4m3fn bytes, rounded to nearest even (torch's cast, pinned against
    ml_dtypes in tests/test_fp8_rebase.py); NaN -> 0x7F with its sign."""
    return v.to(torch.float8_e4m3fn).view(torch.uint8)


def rebase_mxfp8(x: MXTensor) -> TokenE4M3:
    """Rebase MXFP8 activations ([..., T, K] along K) to one scale per token: base = top live scale (d <= 0, the
    top group exact), each element re-rounded to e4m3 as q x 2**d (exact unless it falls below the e4m3 grid's
    2**-9 step: docs/fp8.md). NaN groups (scale 255) stay NaN element by element."""
    _check_mx(x, MXFormat.E4M3)
    q = x.data.view(torch.float8_e4m3fn).to(torch.float32)  # [..., T, K]
    live = (x.data & 0x7F).ne(0).view(*x.data.shape[:-1], -1, BLOCK).any(dim=-1) & x.scales.ne(255)
    base = _base(x.scales, live, 0)
    d = (x.scales.to(torch.int32) - base.unsqueeze(-1)).clamp(ACT_D_FLUSH, 0)  # zero groups above base: any d
    v = q * pow2(d).repeat_interleave(BLOCK, dim=-1)
    data = _to_e4m3(v)
    nan = (x.scales == 255).repeat_interleave(BLOCK, dim=-1)
    data = torch.where(nan, (x.data & 0x80) | E4M3_NAN, data)
    return TokenE4M3(data, base)


def quantize_e4m3_per_token(x: torch.Tensor) -> TokenE4M3:
    """a16w4 prefill opt-in: float activations [..., T, K] -> e4m3 with one power-of-two scale per token, the
    smallest that needs no saturation (amax / 2**shared in (224, 448]); every element rounds to nearest even once.
    NaN and +-Inf elements become e4m3 NaN (e4m3fn has no infinity; never a finite 448)."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() < 1:
        raise TypeError(f"expected a floating-point tensor [..., K], got {type(x).__name__}")
    x = x.to(torch.float32)
    finite = torch.isfinite(x)
    amax = torch.where(finite, x.abs(), torch.zeros_like(x)).amax(dim=-1)
    m, e = torch.frexp(amax)  # amax = m 2**e, m in [0.5, 1): floor(log2 amax) = e - 1, mantissa 2m in [1, 2)
    shared = e - 1 - 8 + (2 * m > 1.75).to(e.dtype)
    base = torch.where(amax == 0, BASE_EMPTY, (shared + 127).clamp(BASE_MIN, 254)).to(torch.int32)
    v = x * pow2(127 - base).unsqueeze(-1)
    data = _to_e4m3(torch.where(finite, v, torch.full_like(v, float("nan"))))
    data = torch.where(finite, data, (torch.signbit(x).to(torch.uint8) << 7) | E4M3_NAN)
    return TokenE4M3(data, base)
