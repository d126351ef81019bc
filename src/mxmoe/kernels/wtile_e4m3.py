"""Load one rebased MXFP4 weight tile from the e4m3 layout (kernels/layout_e4m3.py) as the e4m3 wgmma A operand.

The tile is [BN, BK] (BN weight rows, BK along K). As in the bf16 tile (wtile.py) it is loaded as [R, 16] bytes,
R = BK/64 * BN/16 * 32, one row per thread (16-byte vector loads): row r = (i, j, lane) holds lane `lane`'s fragments
of the (k64, n16) block (i, j), and the reshape / permute at the end only renames what each thread holds. Each
32-bit word is one K32 group of one row; its group's dcode picks two table words (T0, T1: the e4m3 magnitudes of the
eight e2m1 magnitudes times 2**d, fp8_rebase.table_words). AFFINE (every live group has d >= -5 and none is NaN:
SwizzledE4M3.affine) computes them with one integer multiply-add each (fp8_rebase.affine_words); otherwise they are
gathered from the 21-row table, which Triton's pipeliner then stages through shared memory with the weights.

Decode on the GPU: one `inline_asm_elementwise` per word, two `prmt` byte lookups plus masks and sign merges (eight
instructions per eight values; the bf16 decode takes thirteen). Under the interpreter (no inline asm) the same words
and tables go through the same selectors in int32 arithmetic, so CI checks the layout, the bit placement and the
tables of the GPU path; tests/kernels/test_wtile_e4m3.py also executes the asm text in Python with PTX's `prmt`
semantics, so only the hardware's own reading of it is left to a GPU run.
"""

import triton
import triton.language as tl

from mxmoe.kernels.mx_tile import e4m3_to_f32
from mxmoe.kernels.wtile import split4, tile_bytes

# $0, $1: a(h, v=0), a(h, v=1), four e4m3 each; $2: the word (four packed bytes); $3 / $7: T0 / T1 (pack=4 hands
# four copies of each, $3..$6 and $7..$10, one per byte of the word). Selector nibbles must have bit 3 clear, or
# prmt replicates the picked byte's sign bit instead of copying it.
_LOOKUP_ASM = tl.constexpr("\n".join([
    "{", ".reg .b32 s, t;",
    "and.b32 s, $2, 0x7777;", "prmt.b32 $0, $3, $7, s;", "and.b32 t, $2, 0x80808080;", "or.b32 $0, $0, t;",
    "shr.b32 s, $2, 16;", "and.b32 s, s, 0x7777;", "prmt.b32 $1, $3, $7, s;",
    "shl.b32 t, $2, 4;", "and.b32 t, t, 0x80808080;", "or.b32 $1, $1, t;",
    "}",
]))


@triton.jit
def _interp_lookup(raw, t0, t1, R: tl.constexpr):
    """The asm's twin: raw uint8 [R, 16], table words int32 [R, 4] (one pair per word) -> (a(h, 0), a(h, 1)) as
    int32 e4m3 bytes [R, 16], byte 4 w + j of each from word w."""
    b0, b1, b2, b3 = split4(tl.reshape(raw.to(tl.int32), [R, 4, 2, 2]))
    word = (b0 | (b1 << 8) | (b2 << 16) | (b3 << 24))[:, :, None]  # [R, 4 (word), 1]
    j = tl.arange(0, 4)[None, None, :]
    lo_sel = (word >> (4 * j)) & 7
    hi_sel = (word >> (16 + 4 * j)) & 7
    a = t0[:, :, None]
    b = t1[:, :, None]
    lo = (tl.where(lo_sel < 4, a, b) >> (8 * (lo_sel & 3))) & 255
    hi = (tl.where(hi_sel < 4, a, b) >> (8 * (hi_sel & 3))) & 255
    lo = lo | (((word >> (8 * j + 7)) & 1) << 7)
    hi = hi | (((word >> (8 * j + 3)) & 1) << 7)
    return tl.reshape(lo, [R, 16]), tl.reshape(hi, [R, 16])


@triton.jit
def weight_tile_e4m3(w_ptr, d_ptr, lut_ptr, n16_0, n16_end, k64_0, N16, K64, AFFINE: tl.constexpr,
                     INTERP: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    """Rows [16 n16_0, +BN) x K [64 k64_0, +BK) of one expert's rebased weights (`w_ptr`, `d_ptr` at the expert;
    `lut_ptr` the int32 [21, 2] table words, unread when AFFINE) as the [BN, BK] float8e4nv MMA operand: e2m1 x 2**d
    exactly as fp8_rebase.RebasedWeights.e4m3 (the row scale is the caller's epilogue). K blocks past K64 and row
    slabs from n16_end on read as zeros."""
    NB: tl.constexpr = BN // 16
    KB: tl.constexpr = BK // 64
    R: tl.constexpr = KB * NB * 32
    raw, dc = tile_bytes(w_ptr, d_ptr, n16_0, n16_end, k64_0, N16, K64, BN, BK)
    dc = dc.to(tl.int32)  # [R, 4 (word)]; dcode 0 (masked blocks) decodes zeros to zeros
    if AFFINE:
        dd = (dc - 7) * 8  # 8 (d + 6): dcode = d + 13; a dead group's negative dd still decodes code 0 to 0
        t0 = dd * 0x01010100 + 0x0C080000
        t1 = dd * 0x01010101 + 0x1C181410
    else:
        t0 = tl.load(lut_ptr + dc * 2)
        t1 = tl.load(lut_ptr + dc * 2 + 1)
    if INTERP:
        lo, hi = _interp_lookup(raw, t0, t1, R)
        lo = lo.to(tl.uint8).to(tl.float8e4nv, bitcast=True)
        hi = hi.to(tl.uint8).to(tl.float8e4nv, bitcast=True)
    else:
        t0 = tl.reshape(tl.broadcast_to(t0[:, :, None], [R, 4, 4]), [R, 16])
        t1 = tl.reshape(tl.broadcast_to(t1[:, :, None], [R, 4, 4]), [R, 16])
        lo, hi = tl.inline_asm_elementwise(_LOOKUP_ASM, "=r,=r,r,r,r,r,r,r,r,r,r", [raw, t0, t1],
                                           dtype=(tl.float8e4nv, tl.float8e4nv), is_pure=True, pack=4)
    w = tl.join(lo, hi)  # [R, 16, 2 (v)]
    w = tl.reshape(w, [KB, NB, 8, 4, 2, 2, 4, 2])  # [i, jn, g, t, h, kk, j, v]
    w = tl.permute(w, (1, 4, 2, 0, 5, 7, 3, 6))  # [jn, h, g, i, kk, v, t, j]
    return tl.reshape(w, [BN, BK])


@triton.jit
def _e4m3_f32(code):
    """int32 e4m3fn bytes -> f32, the NaN codes (0x7F / 0xFF) included: the interpreter's operand (no fp8 dot)."""
    v = e4m3_to_f32(code)
    return tl.where((code & 0x7F) == 0x7F, float("nan"), v)


@triton.jit
def e4m3_operand(w, INTERP: tl.constexpr):
    """A float8e4nv tile as the MMA takes it: itself on the GPU, its exact f32 values under the interpreter."""
    if INTERP:
        return _e4m3_f32(w.to(tl.uint8, bitcast=True).to(tl.int32))
    return w


@triton.jit
def e4m3_bytes_operand(a, INTERP: tl.constexpr):
    """An e4m3 activation tile (swmoe.act_tile) as the MMA takes it: on the GPU it was loaded as float8e4nv already
    (through a float8e4nv pointer, so the pipelined buffer feeds wgmma), under the interpreter it is uint8 bytes and
    becomes their exact f32 values."""
    if INTERP:
        return _e4m3_f32(a.to(tl.int32))
    return a
