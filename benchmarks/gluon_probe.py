"""Does Triton 3.6's Gluon feed mma.sync from registers in the weight layout's fragment order? (sm_90, CPU compile)

Why (session 22, kernels/decode.py): a decode MMA narrower than today's wgmma N 16 means mma.sync m16n8k16 at
BLOCK_M 8, and `tl.dot` lowers that to MMAv2 with its A operand in `dot_op<kWidth = 8>`, so the decoded weights
(in the kWidth-2 fragment order wgmma takes) round-trip shared memory. Gluon states the layout instead: this
compiles one `mma_v2` whose A is `DotOperandLayout(0, mma v2, k_width=2)` for sm_90 without a GPU and prints the
MMA instructions and any layout conversion or shared-memory traffic in it (at 0f6d84d: 4 HMMA, nothing else).
Then the real thing: a [64, 128] weight tile of the v2 layout (kernels/layout.py) loaded one 16-byte row a thread,
decoded by the shipped asm (kernels/wtile.py) and reshaped as `decode_tile` does, converted to that operand with
`assert_trivial=True` (the compile fails if the conversion moves data) and multiplied by a [128, 8] token column
(at 866ac7b: 8 HMMA, 44 registers, no shared memory, no shuffles). Gluon kernels do not run under
TRITON_INTERPRET=1 (the launch looks for a GPU driver), so nothing here checks values. Prints; never asserts.

    python benchmarks/gluon_probe.py
"""

from __future__ import annotations

import re

import triton
from triton.backends.compiler import GPUTarget
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon._runtime import GluonASTSource
from triton.experimental.gluon.language.nvidia.ampere import mma_v2

from mxmoe.kernels.wtile import _DECODE_ASM_FOLD
from mxmoe.tuning.sweep.compile_check.sm90 import resource_usage, sass

_ASM = gl.constexpr(_DECODE_ASM_FOLD.value)
_MMA = gl.constexpr(gl.NVMMADistributedLayout(version=[2, 0], warps_per_cta=[4, 1], instr_shape=[16, 8]))


@gluon.jit
def _mma_v2_k2(a_ptr, b_ptr, c_ptr):
    mma: gl.constexpr = _MMA
    la: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=mma, k_width=2)
    lb: gl.constexpr = gl.DotOperandLayout(operand_index=1, parent=mma, k_width=2)
    ra = gl.arange(0, 64, layout=gl.SliceLayout(1, la))
    ka = gl.arange(0, 64, layout=gl.SliceLayout(0, la))
    a = gl.load(a_ptr + ra[:, None] * 64 + ka[None, :])
    kb = gl.arange(0, 64, layout=gl.SliceLayout(1, lb))
    nb = gl.arange(0, 8, layout=gl.SliceLayout(0, lb))
    b = gl.load(b_ptr + kb[:, None] * 8 + nb[None, :])
    acc = mma_v2(a, b, gl.zeros([64, 8], gl.float32, layout=mma))
    rc = gl.arange(0, 64, layout=gl.SliceLayout(1, mma))
    nc = gl.arange(0, 8, layout=gl.SliceLayout(0, mma))
    gl.store(c_ptr + rc[:, None] * 8 + nc[None, :], acc)


@gluon.jit
def _weight_tile_mma_v2(w_ptr, s_ptr, x_ptr, c_ptr, N16, BN: gl.constexpr, BK: gl.constexpr):
    NB: gl.constexpr = BN // 16
    KB: gl.constexpr = BK // 64
    R: gl.constexpr = KB * NB * 32
    l_raw: gl.constexpr = gl.BlockedLayout([1, 16], [32, 1], [4, 1], [1, 0])  # one 16-byte row a thread
    l_side: gl.constexpr = gl.BlockedLayout([1, 4], [32, 1], [4, 1], [1, 0])
    la: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=_MMA, k_width=2)
    lb: gl.constexpr = gl.DotOperandLayout(operand_index=1, parent=_MMA, k_width=2)
    r = gl.arange(0, R, layout=gl.SliceLayout(1, l_raw))
    blk = (r // (NB * 32)) * N16 + (r // 32) % NB  # (k64, n16) block of row r, as wtile.tile_bytes
    cols = gl.arange(0, 16, layout=gl.SliceLayout(0, l_raw))
    raw = gl.load(w_ptr + blk[:, None] * 512 + (r % 32)[:, None] * 16 + cols[None, :])
    rs = gl.arange(0, R, layout=gl.SliceLayout(1, l_side))
    blk_s = (rs // (NB * 32)) * N16 + (rs // 32) % NB
    side = gl.load(s_ptr + blk_s[:, None] * 32 + ((rs % 32) // 4)[:, None] * 4
                   + gl.arange(0, 4, layout=gl.SliceLayout(0, l_side))[None, :])
    fb = (side.to(gl.int32) + 126) << 7  # folded scale factors, as wtile._scale_factor_bits
    fb = gl.permute(gl.reshape(fb, [R, 2, 2]), (0, 2, 1))
    fb = gl.reshape(gl.reshape(fb, [R, 2, 1, 2, 1]).broadcast_to(R, 2, 2, 2, 2), [R, 16])
    fbf = gl.convert_layout(fb, l_raw).to(gl.int16).to(gl.bfloat16, bitcast=True)
    v0, v1 = gl.inline_asm_elementwise(_ASM, "=r,=r,=r,=r,r,r,r", [raw, fbf], dtype=(gl.bfloat16, gl.bfloat16),
                                       is_pure=True, pack=4)
    w = gl.permute(gl.reshape(gl.join(v0, v1), [KB, NB, 8, 4, 4, 2, 2, 2]), (1, 5, 2, 0, 4, 7, 3, 6))
    a = gl.convert_layout(gl.reshape(w, [BN, BK]), la, assert_trivial=True)
    kb = gl.arange(0, BK, layout=gl.SliceLayout(1, lb))
    nb = gl.arange(0, 8, layout=gl.SliceLayout(0, lb))
    b = gl.load(x_ptr + kb[:, None] + nb[None, :] * 0, mask=(nb == 0)[None, :], other=0.0)  # one token column
    acc = mma_v2(a, b, gl.zeros([BN, 8], gl.float32, layout=_MMA))
    rc = gl.arange(0, BN, layout=gl.SliceLayout(1, _MMA))
    nc = gl.arange(0, 8, layout=gl.SliceLayout(0, _MMA))
    gl.store(c_ptr + rc[:, None] * 8 + nc[None, :], acc)


def _report(name: str, src: GluonASTSource) -> None:
    kernel = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4})
    ir, code = kernel.asm["ttgir"], sass(kernel.asm["cubin"])
    counts = {op: len(re.findall(rf"\b{op}\b", code)) for op in ("HMMA", "HGMMA", "STS", "LDS", "STSM", "LDSM", "SHFL")}
    print(f"{name}: ttgir {ir.count('ttg.local_alloc')} local_alloc; {resource_usage(kernel.asm['cubin'])}; sass "
          + ", ".join(f"{op} {n}" for op, n in counts.items()), flush=True)


def main() -> None:
    _report("mma_v2, A loaded in k_width 2", GluonASTSource(_mma_v2_k2, {"a_ptr": "*bf16", "b_ptr": "*bf16",
                                                                          "c_ptr": "*fp32"}))
    sig = {"w_ptr": "*u8", "s_ptr": "*u8", "x_ptr": "*bf16", "c_ptr": "*fp32", "N16": "i32"}
    _report("v2 weight tile [64, 128] decoded -> mma_v2 N 8",
            GluonASTSource(_weight_tile_mma_v2, sig, constexprs={"BN": 64, "BK": 128}))


if __name__ == "__main__":
    main()
