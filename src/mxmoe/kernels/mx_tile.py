"""Triton twins of `mxmoe.mx`: decode e2m1 / e4m3 / e8m0 and quantize a tile to MXFP8 / MXFP4.

Everything is integer bit arithmetic on int32 plus exact fp32 multiplies by powers of two, so the
same code runs on the GPU and, exactly, on the Triton 3.6 interpreter (which lacks tl.dot_scaled
and fp8 casts). Tile shapes: R rows, C columns, quantized along C in groups of 32.
"""

import triton
import triton.language as tl


@triton.jit
def e2m1_to_f32(nib):
    """int32 nibbles in [0, 16) -> f32. Magnitude codes 0..7 are 0, .5, 1, 1.5, 2, 3, 4, 6.

    The three magnitude bits placed at the bottom of the fp32 exponent (and the top mantissa bit) give
    the e2m1 value times 2**-126 for every code, the one subnormal (0.5) included; one exact multiply
    by 2**126 restores it. Five integer ops per element instead of a select over the exponent.
    """
    bits = ((nib & 7) << 22) | ((nib & 8) << 28)
    return bits.to(tl.float32, bitcast=True) * 8.507059173023462e37  # 2**126


@triton.jit
def e4m3_to_f32(code):
    """int32 e4m3fn bytes -> f32 (0x7f / 0xff, the NaN codes, are never produced by our quantizer)."""
    sign = (code >> 7) & 1
    exp = (code >> 3) & 15
    man = code & 7
    normal = (((exp + 120) << 23) | (man << 20) | (sign << 31)).to(tl.float32, bitcast=True)
    sub = man.to(tl.float32) * 0.001953125  # man * 2**-9
    sub = tl.where(sign == 1, -sub, sub)
    return tl.where(exp == 0, sub, normal)


@triton.jit
def e8m0_to_f32(byte):
    """int32 e8m0 scale bytes -> f32 powers of two; 0 is 2**-127 (an fp32 subnormal), 255 is NaN."""
    bits = tl.where(byte == 0, 0x00400000, byte << 23)
    bits = tl.where(byte == 255, 0x7FC00000, bits)
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def _shared_exponent(x, R: tl.constexpr, C: tl.constexpr, EMAX: tl.constexpr):
    """Per-32 shared exponent floor(log2(amax)) - EMAX, clamped to e8m0; and 2**-shared."""
    xg = tl.reshape(x, [R, C // 32, 32])
    amax = tl.max(tl.abs(xg), axis=2)
    e = ((amax.to(tl.int32, bitcast=True) >> 23) & 0xFF) - 127  # subnormal amax -> -127, same clamp
    shared = tl.minimum(tl.maximum(e - EMAX, -127), 127)
    inv = ((127 - shared) << 23).to(tl.float32, bitcast=True)  # shared <= 125 here, so no overflow
    return xg, shared, inv


@triton.jit
def _e2m1_codes(x, R: tl.constexpr, C: tl.constexpr):
    """f32 [R, C] -> (int32 [R, C // 32, 32] e2m1 codes, int32 [R, C // 32] shared exponents)."""
    xg, shared, inv = _shared_exponent(x, R, C, 2)
    v = xg * inv[:, :, None]
    a = tl.abs(v)
    # Round half to even onto 0, .5, 1, 1.5, 2, 3, 4, 6 (saturating at 6): ties go to the even code.
    code = (
        (a > 0.25).to(tl.int32) + (a >= 0.75).to(tl.int32) + (a > 1.25).to(tl.int32)
        + (a >= 1.75).to(tl.int32) + (a > 2.5).to(tl.int32) + (a >= 3.5).to(tl.int32)
        + (a > 5.0).to(tl.int32)
    )
    return code | ((v < 0).to(tl.int32) << 3), shared


@triton.jit
def quantize_tile_mxfp4(x, R: tl.constexpr, C: tl.constexpr):
    """f32 [R, C] -> (uint8 [R, C//2] packed e2m1 pairs, uint8 [R, C//32] e8m0), as mx.quantize_mxfp4."""
    code, shared = _e2m1_codes(x, R, C)
    lo, hi = tl.split(tl.reshape(code, [R, C // 2, 2]))
    packed = (lo | (hi << 4)).to(tl.uint8)
    return packed, (shared + 127).to(tl.uint8)


@triton.jit
def e4m3_code(v):
    """f32 -> int32 e4m3fn code, round to nearest even, magnitudes clamped to 448 (finite inputs), in integer and
    exact fp32 arithmetic: the interpreter's stand-in for the GPU's cvt.rn.satfinite."""
    a = tl.minimum(tl.abs(v), 448.0)
    # Subnormals (a < 2**-6): quantum 2**-9; (y + 2**23) - 2**23 rounds y half to even in fp32.
    m = ((a * 512.0 + 8388608.0) - 8388608.0).to(tl.int32)
    bits = a.to(tl.int32, bitcast=True)
    r = (bits + 0x7FFFF + ((bits >> 20) & 1)) & -1048576  # RNE to 3 mantissa bits (mask 0xFFF00000)
    normal = ((((r >> 23) & 0xFF) - 120) << 3) | ((r >> 20) & 7)
    code = tl.where(a < 0.015625, m, normal)
    return code | ((v < 0).to(tl.int32) << 7)


@triton.jit
def _e4m3_codes(x, R: tl.constexpr, C: tl.constexpr):
    """f32 [R, C] -> (int32 [R, C // 32, 32] e4m3fn codes, int32 [R, C // 32] shared exponents)."""
    xg, shared, inv = _shared_exponent(x, R, C, 8)
    return e4m3_code(xg * inv[:, :, None]), shared


@triton.jit
def quantize_tile_mxfp8(x, R: tl.constexpr, C: tl.constexpr):
    """f32 [R, C] -> (uint8 [R, C] e4m3fn codes, uint8 [R, C//32] e8m0), as mx.quantize_mxfp8."""
    code, shared = _e4m3_codes(x, R, C)
    return tl.reshape(code, [R, C]).to(tl.uint8), (shared + 127).to(tl.uint8)


@triton.jit
def _round_e2m1(a):
    """f32 magnitudes -> the nearest e2m1 magnitude (ties to the even code, saturating at 6), as f32: the grid's
    spacing is .5 below 2, 1 below 4, 2 up to 6, and (y + 2**23) - 2**23 rounds y >= 0 half to even. Five
    multiply-adds and two selects, where the code-counting of `_e2m1_codes` takes fourteen ops and a decode."""
    lo = ((a * 2.0 + 8388608.0) - 8388608.0) * 0.5
    mid = (a + 8388608.0) - 8388608.0
    hi = ((a * 0.5 + 8388608.0) - 8388608.0) * 2.0
    return tl.minimum(tl.where(a < 2.0, lo, tl.where(a < 4.0, mid, hi)), 6.0)


@triton.jit
def qdq_tile(x, FP4: tl.constexpr, INTERP: tl.constexpr, R: tl.constexpr, C: tl.constexpr):
    """f32 [R, C] -> the MXFP4 (FP4) or MXFP8 values it quantizes to, as f32: what the v2 kernels carry between
    stages in bf16 (exactly: e2m1 and e4m3 times a power of two fit bf16, bar e4m3 subnormals under scales below
    2**-124, which round as the old in-kernel upcast rounded them). A NaN or Inf element is kept as it is, so it
    reaches its token's output as on a16w4 (quantizing alone would turn a NaN into a finite code).
    MXFP8 on the GPU rounds with the hardware's e4m3 conversion (cvt.rn.satfinite, RNE, after the same clamp to
    448); the interpreter, which has no fp8 casts, with `_e4m3_codes`' bit arithmetic: the same values."""
    xg, shared, inv = _shared_exponent(x, R, C, 2 if FP4 else 8)
    v = xg * inv[:, :, None]
    a = tl.abs(v)
    if FP4:
        q = _round_e2m1(a)
    elif INTERP:
        code, _ = _e4m3_codes(x, R, C)
        q = e4m3_to_f32(code & 127)
    else:
        q = tl.minimum(a, 448.0).to(tl.float8e4nv).to(tl.float32)
    q = tl.where(v < 0, -q, q)
    scale = ((shared + 127) << 23).to(tl.float32, bitcast=True)  # 2**shared; shared >= -126 unless amax is tiny
    scale = tl.where(shared == -127, 5.877471754111438e-39, scale)  # 2**-127, an f32 subnormal
    q = tl.reshape(q * scale[:, :, None], [R, C])
    return tl.where(tl.abs(x) <= 3.4028234663852886e38, q, x)  # NaN and +-Inf fail the test: kept
