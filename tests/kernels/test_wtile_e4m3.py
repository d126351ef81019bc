"""The e4m3 weight layout and tile (kernels/layout_e4m3.py, kernels/wtile_e4m3.py) on the Triton interpreter, and
the tile's sm_90 compile (no GPU: benchmarks/e4m3_tile_sm90.py in a fresh interpreter).

Oracle: `fp8_rebase.RebasedWeights.e4m3()`, the torch twin whose bytes tests/test_fp8_rebase.py pins against
mx.dequantize and ml_dtypes. TILE_TOL is 0: the tile is an integer function of the stored bytes, compared byte for
byte (NaN bytes included). The interpreter runs the same layout, table words, selectors and reshape chain as the
GPU; only the byte select differs (int32 shifts instead of `prmt`), and the asm text is executed in Python with
PTX's documented semantics against the same twin (the hardware's reading of it needs a GPU run).
"""

from __future__ import annotations

import json
from pathlib import Path as FsPath

import pytest
import torch
import triton
import triton.language as tl

from mxmoe import fp8_rebase as fr
from mxmoe.kernels.layout_e4m3 import swizzle_e4m3, unswizzle_e4m3
from mxmoe.kernels.wtile_e4m3 import weight_tile_e4m3
from mxmoe.mx import MXFormat, MXTensor

TILE_TOL = 0
PROBE = FsPath(__file__).resolve().parents[2] / "benchmarks" / "e4m3_tile_sm90.py"


def _rebased(e: int, n: int, k: int, scale_bytes: tuple[int, ...], seed: int) -> fr.RebasedWeights:
    g = torch.Generator().manual_seed(seed)
    data = torch.randint(0, 256, (e, n, k // 2), generator=g, dtype=torch.uint8)
    choice = torch.tensor(scale_bytes, dtype=torch.uint8)
    scales = choice[torch.randint(0, len(scale_bytes), (e, n, k // 32), generator=g)]
    return fr.rebase_weights(MXTensor(data, scales, MXFormat.E2M1, 2, (e, n, k)))


@pytest.mark.parametrize("e,n,k", [(1, 16, 64), (3, 48, 96), (2, 40, 192)])
def test_swizzle_round_trips(e, n, k):
    """Ragged N (40: a half-padded row slab) and K (96: a half-padded k64 block) included."""
    r = _rebased(e, n, k, (0, 120, 127, 255), seed=n + k)
    sw = swizzle_e4m3(r)
    codes, dcode = unswizzle_e4m3(sw)
    assert torch.equal(codes, r.codes) and torch.equal(dcode, r.dcode)
    assert sw.data.shape == (e, sw.k64 * sw.n16 * 512) and torch.equal(sw.row_scale, r.row_scale)


def test_a_lanes_word_holds_one_group():
    """Lane 4g+t's word (h, kk) of block (k64, n16) holds row 16 n16 + 8h + g, columns 64 k64 + 32 kk + 16 v + 4 t + j:
    each value placed alone, read back from the bit positions the module docstring gives."""
    e, n, k = 1, 32, 128
    for row, col, code in [(0, 0, 0x9), (9, 17, 0x7), (31, 127, 0xE), (20, 70, 0x1)]:
        codes = torch.zeros(e, n, k // 2, dtype=torch.uint8)
        codes[0, row, col // 2] = code << (4 * (col % 2))
        r = fr.RebasedWeights(codes, torch.zeros(e, n, k // 32, dtype=torch.uint8), torch.ones(e, n, dtype=torch.int32),
                              (e, n, k))
        sw = swizzle_e4m3(r)
        n16, h, g = row // 16, (row % 16) // 8, row % 8
        k64, kk, v, t, j = col // 64, (col % 64) // 32, (col % 32) // 16, (col % 16) // 4, col % 4
        off = (k64 * sw.n16 + n16) * 512 + (4 * g + t) * 16 + (2 * h + kk) * 4
        word = int.from_bytes(bytes(sw.data[0, off : off + 4].tolist()), "little")
        assert (word >> (16 * v + 4 * j)) & 7 == code & 7 and (word >> (8 * j + 7 - 4 * v)) & 1 == code >> 3
        assert bin(word).count("1") == bin(code).count("1")


@triton.jit
def _tile_kernel(w_ptr, d_ptr, lut_ptr, out_ptr, n16_0, n16_end, k64_0, N16, K64, AFFINE: tl.constexpr,
                 INTERP: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    w = weight_tile_e4m3(w_ptr, d_ptr, lut_ptr, n16_0, n16_end, k64_0, N16, K64, AFFINE, INTERP, BN, BK)
    tl.store(out_ptr + tl.arange(0, BN)[:, None] * BK + tl.arange(0, BK)[None, :], w)


# Scale sets: narrow (d in [-5, 6]: the affine path may run), wide (d down to -250 and NaN: table only).
NARROW = (121, 124, 126, 127)
WIDE = (0, 100, 118, 119, 120, 121, 125, 127, 254, 255)


@pytest.mark.parametrize("scales,affine", [(NARROW, True), (NARROW, False), (WIDE, False)],
                         ids=["narrow-affine", "narrow-table", "wide-table"])
@pytest.mark.parametrize("bn,bk,n16_0,k64_0,n16_end", [(64, 128, 0, 0, 8), (64, 128, 4, 1, 8), (128, 64, 0, 3, 8),
                                                      (16, 128, 7, 3, 8), (64, 64, 2, 0, 5)])
def test_weight_tile_decodes_the_rebased_bytes(scales, affine, bn, bk, n16_0, k64_0, n16_end):
    """Every code under many d, NaN groups, a tile half past K (k64_0 = 3 of 4 blocks with BK = 128) and row slabs
    past n16_end (a masked last tile): zeros there, the twin's bytes elsewhere."""
    _check_tile(scales, affine, bn, bk, n16_0, k64_0, n16_end, gpu=False)


@pytest.mark.gpu
@pytest.mark.parametrize("scales,affine", [(NARROW, True), (NARROW, False), (WIDE, False)],
                         ids=["narrow-affine", "narrow-table", "wide-table"])
@pytest.mark.parametrize("bn,bk,n16_0,k64_0,n16_end", [(64, 128, 0, 0, 8), (128, 64, 0, 3, 8), (64, 64, 2, 0, 5)])
def test_weight_tile_decodes_the_rebased_bytes_gpu(scales, affine, bn, bk, n16_0, k64_0, n16_end):
    """The same check with the `prmt` lookup on the hardware (the interpreter runs its int32 twin)."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    _check_tile(scales, affine, bn, bk, n16_0, k64_0, n16_end, gpu=True)


def _check_tile(scales, affine, bn, bk, n16_0, k64_0, n16_end, *, gpu: bool) -> None:
    e, n, k = 1, 128, 256
    r = _rebased(e, n, k, scales, seed=bn + bk + n16_0)
    sw = swizzle_e4m3(r)
    assert sw.affine == (scales == NARROW)
    want = torch.zeros(bn, bk, dtype=torch.uint8)
    full = r.e4m3()[0]
    kk = min(bk, k - 64 * k64_0)
    rows = max(0, min(bn, 16 * (n16_end - n16_0)))
    want[:rows, :kk] = full[16 * n16_0 : 16 * n16_0 + rows, 64 * k64_0 : 64 * k64_0 + kk]
    dev = "cuda" if gpu else "cpu"
    got = torch.empty(bn, bk, dtype=torch.uint8, device=dev)
    _tile_kernel[(1,)](sw.data[0].to(dev), sw.dcode[0].to(dev), fr.table_words().to(dev),
                       got.view(torch.float8_e4m3fn), n16_0, n16_end, k64_0, sw.n16, sw.k64, AFFINE=affine,
                       INTERP=not gpu, BN=bn, BK=bk)
    got = got.cpu()
    assert (got.to(torch.int32) - want.to(torch.int32)).abs().max().item() <= TILE_TOL


def test_sm90_compile_feeds_e4m3_wgmma_from_registers_without_a_layout_conversion():
    """Both table paths compile for sm_90 to m64nNk32 e4m3 x e4m3 wgmma with the decoded weights as the register A
    operand, and the main loop has no shared-memory store or shuffle (the decode lands in the fragment layout), no
    spills. In a fresh interpreter without TRITON_INTERPRET, as the --cpu-compile worker runs."""
    from fresh_interpreter import run_without_interpreter

    out = run_without_interpreter(str(PROBE), "--variants", "affine,table", "--json")
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [r["variant"] for r in rows] == ["affine", "table"]
    for r in rows:
        assert r["wgmma"] == ["wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3"], r
        assert r["a_operand"] == ["registers"] and r["loop_found"], r
        assert r["loop_st_shared"] == 0 and r["loop_shfl"] == 0 and r["stack"] == 0, r
        assert r["loop_prmt"] >= 16, r  # two byte permutes per word, eight words per thread per K step


def _run_ptx(asm: str, regs: dict[str, int]) -> dict[str, int]:
    """Execute the decode's PTX on 32-bit integers: and/or/shl/shr.b32 and prmt.b32 (default mode: selector nibble
    i picks byte (nibble & 7) of {b, a} for output byte i, and with bit 3 set replicates that byte's sign bit)."""
    m32 = 0xFFFFFFFF
    val = lambda x: int(x, 0) if x[0].isdigit() else regs[x]  # noqa: E731
    for line in asm.splitlines():
        line = line.strip().rstrip(";")
        if not line or line in "{}" or line.startswith(".reg"):
            continue
        op, args = line.split(None, 1)
        dst, *src = (a.strip() for a in args.split(","))
        a = [val(s) for s in src]
        if op == "prmt.b32":
            pool = (a[0] | (a[1] << 32)).to_bytes(8, "little")
            out = 0
            for i in range(4):
                sel = (a[2] >> (4 * i)) & 15
                byte = pool[sel & 7]
                out |= ((0xFF if byte & 0x80 else 0) if sel & 8 else byte) << (8 * i)
            regs[dst] = out
        else:
            f = {"and.b32": lambda x, y: x & y, "or.b32": lambda x, y: x | y,
                 "shl.b32": lambda x, y: (x << y) & m32, "shr.b32": lambda x, y: x >> y}[op]
            regs[dst] = f(a[0], a[1])
    return regs


def test_lookup_asm_does_what_the_interpreter_twin_does():
    """The GPU path's PTX (which the interpreter cannot run), executed instruction by instruction in Python on every
    dcode's table words and random words, gives the bytes of the twin's int32 selectors (the tile test's oracle)."""
    from mxmoe.kernels.wtile_e4m3 import _LOOKUP_ASM

    asm = _LOOKUP_ASM.value if hasattr(_LOOKUP_ASM, "value") else str(_LOOKUP_ASM)
    g = torch.Generator().manual_seed(5)
    words = torch.randint(0, 2**32, (200,), generator=g, dtype=torch.int64).tolist() + [0, 0xFFFFFFFF, 0x88888888]
    tables = fr.table_words().to(torch.int64).tolist()
    for n, w in enumerate(words):
        t0, t1 = tables[n % fr.N_DCODES]
        out = _run_ptx(asm, {"$2": w, "$3": t0, "$7": t1})
        for v, reg in ((0, "$0"), (1, "$1")):
            for j in range(4):
                cm = (w >> (16 * v + 4 * j)) & 7
                sign = (w >> (8 * j + 7 - 4 * v)) & 1
                want = (((t0 | (t1 << 32)) >> (8 * cm)) & 255) | (sign << 7)
                assert (out[reg] >> (8 * j)) & 255 == want, (hex(w), v, j)
