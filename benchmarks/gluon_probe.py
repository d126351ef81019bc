"""Does Triton 3.6's Gluon feed mma.sync from registers in the weight layout's fragment order? (sm_90, CPU compile)

Why (session 22, kernels/decode.py): a decode MMA narrower than today's wgmma N 16 means mma.sync m16n8k16 at
BLOCK_M 8, and `tl.dot` lowers that to MMAv2 with its A operand in `dot_op<kWidth = 8>`, so the decoded weights
(in the kWidth-2 fragment order wgmma takes) round-trip shared memory. Gluon states the layout instead: this
compiles one `mma_v2` whose A is `DotOperandLayout(0, mma v2, k_width=2)` for sm_90 without a GPU and prints the
MMA instructions and any layout conversion or shared-memory traffic in it (at 0f6d84d: 4 HMMA, nothing else).
Gluon kernels do not run under TRITON_INTERPRET=1 (the launch looks for a GPU driver). Prints; never asserts.

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

from mxmoe.tuning.sweep.compile_check.sm90 import sass


@gluon.jit
def _mma_v2_k2(a_ptr, b_ptr, c_ptr):
    mma: gl.constexpr = gl.NVMMADistributedLayout(version=[2, 0], warps_per_cta=[4, 1], instr_shape=[16, 8])
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


def main() -> None:
    src = GluonASTSource(_mma_v2_k2, {"a_ptr": "*bf16", "b_ptr": "*bf16", "c_ptr": "*fp32"})
    kernel = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4})
    ir, code = kernel.asm["ttgir"], sass(kernel.asm["cubin"])
    counts = {op: len(re.findall(rf"\b{op}\b", code)) for op in ("HMMA", "HGMMA", "STS", "LDS", "STSM", "LDSM")}
    print(f"ttgir: {ir.count('ttg.convert_layout')} convert_layout, {ir.count('ttg.local_alloc')} local_alloc")
    print("sass:", ", ".join(f"{op} {n}" for op, n in counts.items()))


if __name__ == "__main__":
    main()
