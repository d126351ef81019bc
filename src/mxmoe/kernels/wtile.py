"""Load one MXFP4 weight tile from the v2 layout (kernels/layout.py) as the bf16 wgmma A operand, in registers.

The tile is [BN, BK] (BN weight rows, BK along K). It is loaded as a [R, 16] byte tensor, R = BK/64 * BN/16 * 32
rows of 16 bytes, which Triton lays out one row per thread (16-byte vector loads; lanes over rows, warps over the
next row bits): row r = (i, j, lane) holds lane `lane`'s fragments of the (k64, n16) block (i, j). Warp w then
holds the 16-row slabs j = w mod num_warps, as wgmma wants them when BN / 16 is a multiple of num_warps. The decode
is elementwise on that layout, and the reshape / permute at the end only renames what each thread holds, so
Triton needs no layout conversion (shared memory round trip) between the load and the MMA.

Decode on the GPU: one `inline_asm_elementwise` per 32-bit word (8 values): 13 integer ops build four bf16x2 of
value * 2**-126 (layout.py says how the bits were placed; `tests/kernels/test_decode_asm.py` emulates this PTX
against the layout on the CPU), then one bf16x2 multiply by the scale factor per
register (2**(s-1), the 2**126 folded in) or two when the scales are too large to fold. Under the interpreter
(no inline asm) the same words are decoded by the same shifts and masks in int32 and the values carried in f32,
so CI checks the layout and the bit placement of the GPU path, not a different route to the same numbers.

What the decode costs (H100, 896c613, results/h100/2026-12-07_session22a_896c613.log): with the asm replaced by
four moves (wrong values, a ceiling) the prefill layer ran 1.11x faster at deepseek-v3 T=4096 (7147 -> 6389-6433
us) and 1.04-1.06x at gpt-oss-120b T=4096, and the direct decode layer got slower: fewer decode instructions
cannot close the prefill or decode gaps of issue 21 on their own.
"""

import triton
import triton.language as tl

# Per output register r (one bf16x2 = values b = 0, 1 of one (h, v) slot): the ops that place its bits, and the
# scale register it is multiplied by ($5 = the factor of rows h = 0, $6 = of rows h = 1; layout.py's _VARIANT).
_EXTRACT = (
    ("and.b32 $0, $4, 0x81C081C0;",),
    ("shl.b32 t0, $4, 3;", "and.b32 $1, t0, 0x81C081C0;"),
    ("shl.b32 t0, $4, 6;", "and.b32 $2, t0, 0x81C081C0;"),
    ("shr.b32 t0, $4, 3;", "and.b32 t0, t0, 0x01800180;", "shr.b32 t1, $4, 7;", "and.b32 t1, t1, 0x00400040;",
     "shl.b32 t2, $4, 1;", "and.b32 t2, t2, 0x80008000;", "or.b32 t0, t0, t1;", "or.b32 $3, t0, t2;"),
)
_SCALE_REG = ("$5", "$6", "$5", "$6")


def _decode_asm(fold: bool) -> str:
    """The PTX of one word's decode. Unfolded scales first multiply by c = two bf16 of 2**126 (0x7E80), which
    restores the exponent the bit placement leaves out."""
    lines = ["{", ".reg .b32 t0, t1, t2, c;", "mov.b32 c, 0x7E807E80;"]
    for r, ops in enumerate(_EXTRACT):
        lines += ops
        if not fold:
            lines.append(f"mul.rn.bf16x2 ${r}, ${r}, c;")
        lines.append(f"mul.rn.bf16x2 ${r}, ${r}, {_SCALE_REG[r]};")
    return "\n".join([*lines, "}"])


_DECODE_ASM_FOLD = tl.constexpr(_decode_asm(True))
_DECODE_ASM_WIDE = tl.constexpr(_decode_asm(False))


@triton.jit
def _scale_factor_bits(sb, FOLD: tl.constexpr):
    """int32 e8m0 bytes -> int32 bf16 bit patterns of the factor the decoded values are multiplied by:
    2**(s-1) when FOLD (the decode's 2**126 folded in; the layout guarantees s <= 128, so no NaN test: one
    byte extract and one shift-add a scale, against four with the test, 32 of stage 1's 500 instructions a
    decode K step, sm_90 SASS at a093c00), else 2**(s-127) (s = 0 is the bf16 subnormal 2**-127; 255, NaN,
    stays NaN)."""
    if FOLD:
        return (sb + 126) << 7
    return tl.where(sb == 255, 0x7FC0, tl.where(sb == 0, 0x0040, sb << 7))


_M = tl.constexpr(0x81C081C0 - (1 << 32))  # the int32 masks of the decode
_M_E = tl.constexpr(0x01800180)
_M_M = tl.constexpr(0x00400040)
_M_S = tl.constexpr(0x80008000 - (1 << 32))


@triton.jit
def split4(x):
    """[..., 2, 2] (c = 2 * axis -2 + axis -1) -> its four [...] slices c = 0..3 (tl.split halves a last axis)."""
    lo, hi = tl.split(x)  # c even, c odd
    a0, a2 = tl.split(lo)
    a1, a3 = tl.split(hi)
    return a0, a1, a2, a3


@triton.jit
def _pair(o, f, FOLD: tl.constexpr):
    """int32 bf16x2 of value * 2**-126 (the decode's output register) -> f32 [..., 2 (b)] times the factor."""
    lo = (o << 16).to(tl.float32, bitcast=True)
    hi = (o & -65536).to(tl.float32, bitcast=True)
    if not FOLD:
        lo = lo * 8.507059173023462e37  # 2**126
        hi = hi * 8.507059173023462e37
    return tl.join(lo * f, hi * f)


@triton.jit
def _interp_decode(raw, fb, R: tl.constexpr, FOLD: tl.constexpr):
    """The asm's twin: raw uint8 [R, 16], factor bits int32 [R, 16] -> (v=0, v=1) f32 [R, 16] each."""
    b0, b1, b2, b3 = split4(tl.reshape(raw.to(tl.int32), [R, 4, 2, 2]))
    word = b0 | (b1 << 8) | (b2 << 16) | (b3 << 24)  # [R, 4 (kr)] little-endian
    f00, f01, f10, f11 = split4(tl.reshape(fb, [R, 4, 2, 2]))  # c = 2 h + b; the factor is the same for both b
    f_h0 = (f00 << 16).to(tl.float32, bitcast=True)
    f_h1 = (f10 << 16).to(tl.float32, bitcast=True)
    o00 = word & _M
    o10 = (word << 3) & _M
    o01 = (word << 6) & _M
    o11 = ((word >> 3) & _M_E) | ((word >> 7) & _M_M) | ((word << 1) & _M_S)
    # [R, kr, b] per (h, v) -> [R, kr, h, b] per v -> [R, 16] over c = 4 kr + 2 h + b
    v0 = tl.permute(tl.join(_pair(o00, f_h0, FOLD), _pair(o10, f_h1, FOLD)), (0, 1, 3, 2))
    v1 = tl.permute(tl.join(_pair(o01, f_h0, FOLD), _pair(o11, f_h1, FOLD)), (0, 1, 3, 2))
    return tl.reshape(v0, [R, 16]), tl.reshape(v1, [R, 16])


@triton.jit
def tile_bytes(w_ptr, s_ptr, n16_0, n16_end, k64_0, N16, K64, BN: tl.constexpr, BK: tl.constexpr,
               NMAJ: tl.constexpr = False):
    """The layout's bytes of rows [16 n16_0, +BN) x K [64 k64_0, +BK): each row r = (i, j, lane) of the [R, 16]
    values is one thread's 16-byte load, [R, 4] its 4 side bytes (scales here, relative exponents in the e4m3
    layout); K blocks past K64 and row slabs from n16_end on read as zeros (R = BK/64 * BN/16 * 32). NMAJ: the
    blocks are stored N-major (layout.py), which only the block index changes."""
    NB: tl.constexpr = BN // 16
    KB: tl.constexpr = BK // 64
    R: tl.constexpr = KB * NB * 32
    r = tl.arange(0, R)
    i = r // (NB * 32)
    lane = r % 32
    n16 = n16_0 + (r // 32) % NB
    blk = n16 * K64 + (k64_0 + i) if NMAJ else (k64_0 + i) * N16 + n16  # [R] block of row r
    ok = ((k64_0 + i) < K64) & (n16 < n16_end)
    raw = tl.load(w_ptr + blk[:, None] * 512 + lane[:, None] * 16 + tl.arange(0, 16)[None, :],
                  mask=ok[:, None], other=0)  # [R, 16] uint8
    side = tl.load(s_ptr + blk[:, None] * 32 + (lane // 4)[:, None] * 4 + tl.arange(0, 4)[None, :],
                   mask=ok[:, None], other=0)  # [R, 4] uint8
    return raw, side


@triton.jit
def weight_tile(w_ptr, s_ptr, n16_0, n16_end, k64_0, N16, K64, FOLD: tl.constexpr, INTERP: tl.constexpr,
                BN: tl.constexpr, BK: tl.constexpr, NMAJ: tl.constexpr = False):
    """Rows [16 n16_0, +BN) x K [64 k64_0, +BK) of one expert's weights (`w_ptr`, `s_ptr` at the expert) as the
    [BN, BK] MMA operand: bf16 on the GPU, f32 under the interpreter. K blocks past K64 and row slabs from n16_end
    on (a BLOCK_N that does not divide N; stage 1's gate tile must not read the up rows) read as zeros."""
    raw, sraw = tile_bytes(w_ptr, s_ptr, n16_0, n16_end, k64_0, N16, K64, BN, BK, NMAJ)
    return decode_tile(raw, sraw, FOLD, INTERP, BN, BK)


@triton.jit
def decode_tile(raw, sraw, FOLD: tl.constexpr, INTERP: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    """`tile_bytes`' value and scale bytes -> the [BN, BK] MMA operand (the second half of `weight_tile`, apart so
    a kernel can issue the loads early and decode later: kernels/decode.py)."""
    NB: tl.constexpr = BN // 16
    KB: tl.constexpr = BK // 64
    R: tl.constexpr = KB * NB * 32
    fb = _scale_factor_bits(sraw.to(tl.int32), FOLD)  # sraw: (h, k32) scales
    # [R, (h, k32)] -> [R, 16] over c = 4 kr + 2 h + b, kr = 2 k32 + kr_lo
    fb = tl.permute(tl.reshape(fb, [R, 2, 2]), (0, 2, 1))  # [R, k32, h]
    fb = tl.broadcast_to(tl.reshape(fb, [R, 2, 1, 2, 1]), [R, 2, 2, 2, 2])
    fb = tl.reshape(fb, [R, 16])
    if INTERP:
        v0, v1 = _interp_decode(raw, fb, R, FOLD)
    else:
        fbf = fb.to(tl.int16).to(tl.bfloat16, bitcast=True)
        if FOLD:
            v0, v1 = tl.inline_asm_elementwise(_DECODE_ASM_FOLD, "=r,=r,=r,=r,r,r,r", [raw, fbf],
                                               dtype=(tl.bfloat16, tl.bfloat16), is_pure=True, pack=4)
        else:
            v0, v1 = tl.inline_asm_elementwise(_DECODE_ASM_WIDE, "=r,=r,=r,=r,r,r,r", [raw, fbf],
                                               dtype=(tl.bfloat16, tl.bfloat16), is_pure=True, pack=4)
    w = tl.join(v0, v1)  # [R, 16, 2 (v)]
    w = tl.reshape(w, [KB, NB, 8, 4, 4, 2, 2, 2])  # [i, j, g, t, kr, h, b, v]
    w = tl.permute(w, (1, 5, 2, 0, 4, 7, 3, 6))  # [j, h, g, i, kr, v, t, b]
    return tl.reshape(w, [BN, BK])
