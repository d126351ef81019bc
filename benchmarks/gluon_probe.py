"""Does Triton 3.6's Gluon feed mma.sync from registers in the weight layout's fragment order? (sm_90, CPU compile)

Why (session 22, kernels/decode.py): a decode MMA narrower than today's wgmma N 16 means mma.sync m16n8k16 at
BLOCK_M 8, and `tl.dot` lowers that to MMAv2 with its A operand in `dot_op<kWidth = 8>`, so the decoded weights
(in the kWidth-2 fragment order wgmma takes) round-trip shared memory. Gluon states the layout instead: this
compiles one `mma_v2` whose A is `DotOperandLayout(0, mma v2, k_width=2)` for sm_90 without a GPU and prints the
MMA instructions and any layout conversion or shared-memory traffic in it (at 0f6d84d: 4 HMMA, nothing else).
Then a [64, 128] weight tile of the v2 layout (kernels/layout.py) loaded one 16-byte row a thread,
decoded by the shipped asm (kernels/wtile.py) and reshaped as `decode_tile` does, converted to that operand with
`assert_trivial=True` (the compile fails if the conversion moves data) and multiplied by a [128, 8] token column
(8 HMMA, 40 registers, no shared memory, no shuffles). Gluon kernels do not run under
TRITON_INTERPRET=1 (the launch looks for a GPU driver), so nothing here checks values. Last, the whole a16w4
direct stage 1 at BLOCK_M 8 written that way (at f18ddf1, deepseek-v4-tp8 T=1's tile: 118 registers, 16 HMMA and
587 instructions a K step, against 110 registers, 16 HGMMA.64x16x16 and 468 for kernels/decode.py's). Prints;
never asserts.

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
from wgmma_hazard import instructions  # the SASS reader beside this script

from mxmoe.kernels.wtile import _DECODE_ASM_FOLD
from mxmoe.tuning.sweep.compile_check.sm90 import resource_usage, sass

_ASM = gl.constexpr(_DECODE_ASM_FOLD.value)
_MMA = gl.constexpr(gl.NVMMADistributedLayout(version=[2, 0], warps_per_cta=[4, 1], instr_shape=[16, 8]))
_RAW = gl.constexpr(gl.BlockedLayout([1, 16], [32, 1], [4, 1], [1, 0]))  # one 16-byte row of the tile a thread
_SIDE = gl.constexpr(gl.BlockedLayout([1, 4], [32, 1], [4, 1], [1, 0]))


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
def _bytes(w_e, s_e, n16_0, k64_0, N16, NB: gl.constexpr, KB: gl.constexpr):
    """wtile.tile_bytes in Gluon (no bound masks): the [R, 16] value and [R, 4] scale bytes of a tile."""
    R: gl.constexpr = KB * NB * 32
    r = gl.arange(0, R, layout=gl.SliceLayout(1, _RAW))
    blk = (k64_0 + r // (NB * 32)) * N16 + n16_0 + (r // 32) % NB
    cols = gl.arange(0, 16, layout=gl.SliceLayout(0, _RAW))
    raw = gl.load(w_e + blk[:, None] * 512 + (r % 32)[:, None] * 16 + cols[None, :])
    rs = gl.arange(0, R, layout=gl.SliceLayout(1, _SIDE))
    blk_s = (k64_0 + rs // (NB * 32)) * N16 + n16_0 + (rs // 32) % NB
    c4 = gl.arange(0, 4, layout=gl.SliceLayout(0, _SIDE))
    side = gl.load(s_e + blk_s[:, None] * 32 + ((rs % 32) // 4)[:, None] * 4 + c4[None, :])
    return raw, side


@gluon.jit
def _decode(raw, side, NB: gl.constexpr, KB: gl.constexpr):
    """wtile.decode_tile in Gluon (folded scales), ending in mma_v2's k_width-2 A operand; the conversion is
    asserted trivial, so this compiles only if the fragment order already is that operand's."""
    R: gl.constexpr = KB * NB * 32
    BN: gl.constexpr = NB * 16
    BK: gl.constexpr = KB * 64
    la: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=_MMA, k_width=2)
    fb = (side.to(gl.int32) + 126) << 7
    fb = gl.permute(gl.reshape(fb, [R, 2, 2]), (0, 2, 1))
    fb = gl.reshape(gl.reshape(fb, [R, 2, 1, 2, 1]).broadcast_to(R, 2, 2, 2, 2), [R, 16])
    fbf = gl.convert_layout(fb, _RAW).to(gl.int16).to(gl.bfloat16, bitcast=True)
    v0, v1 = gl.inline_asm_elementwise(_ASM, "=r,=r,=r,=r,r,r,r", [raw, fbf], dtype=(gl.bfloat16, gl.bfloat16),
                                       is_pure=True, pack=4)
    w = gl.permute(gl.reshape(gl.join(v0, v1), [KB, NB, 8, 4, 4, 2, 2, 2]), (1, 5, 2, 0, 4, 7, 3, 6))
    return gl.convert_layout(gl.reshape(w, [BN, BK]), la, assert_trivial=True)


@gluon.jit
def _weight_tile_mma_v2(w_ptr, s_ptr, x_ptr, c_ptr, N16, BN: gl.constexpr, BK: gl.constexpr):
    lb: gl.constexpr = gl.DotOperandLayout(operand_index=1, parent=_MMA, k_width=2)
    raw, side = _bytes(w_ptr, s_ptr, 0, 0, N16, BN // 16, BK // 64)
    kb = gl.arange(0, BK, layout=gl.SliceLayout(1, lb))
    nb = gl.arange(0, 8, layout=gl.SliceLayout(0, lb))
    b = gl.load(x_ptr + kb[:, None] + nb[None, :] * 0, mask=(nb == 0)[None, :], other=0.0)  # one token column
    acc = mma_v2(_decode(raw, side, BN // 16, BK // 64), b, gl.zeros([BN, 8], gl.float32, layout=_MMA))
    rc = gl.arange(0, BN, layout=gl.SliceLayout(1, _MMA))
    nc = gl.arange(0, 8, layout=gl.SliceLayout(0, _MMA))
    gl.store(c_ptr + rc[:, None] * 8 + nc[None, :], acc)


@gluon.jit
def _direct1(x_ptr, w_ptr, ws_ptr, ids_ptr, part_ptr, E, H, I, N16, stride_xt, stride_we, stride_wse, stride_ps,
            stride_pp, TOPK: gl.constexpr, SPLIT_K: gl.constexpr, BN: gl.constexpr, BK: gl.constexpr):
    """kernels/decode.py's a16w4 _direct1_kernel at BLOCK_M 8 on mma_v2, the next step's bytes loaded into
    registers before this step's decode (no cp.async, no shared memory). A compile probe: not in the package,
    values never checked; the GPU twin test against _direct1_kernel comes first when it is measured."""
    NB: gl.constexpr = BN // 16
    KB: gl.constexpr = BK // 64
    lb: gl.constexpr = gl.DotOperandLayout(operand_index=1, parent=_MMA, k_width=2)
    num_n = gl.cdiv(I, BN)
    pair = gl.program_id(0) // num_n
    pid_n = gl.program_id(0) % num_n
    pid_k = gl.program_id(1)
    eid = gl.load(ids_ptr + pair).to(gl.int64)
    expert = gl.where((eid >= 0) & (eid < E), eid, 0)
    w_e = w_ptr + expert * stride_we
    s_e = ws_ptr + expert * stride_wse
    n16_g = pid_n * NB
    n16_u = (I + pid_n * BN) // 16
    steps = gl.cdiv(H, BK)
    per = gl.cdiv(steps, SPLIT_K)
    k_first = pid_k * per * BK
    k_len = gl.minimum(per * BK, H - k_first)
    kb = gl.arange(0, BK, layout=gl.SliceLayout(1, lb))
    nb = gl.arange(0, 8, layout=gl.SliceLayout(0, lb))
    x_row = x_ptr + (pair // TOPK).to(gl.int64) * stride_xt
    acc_g = gl.zeros([BN, 8], gl.float32, layout=_MMA)
    acc_u = gl.zeros([BN, 8], gl.float32, layout=_MMA)
    rg, sg = _bytes(w_e, s_e, n16_g, k_first // 64, N16, NB, KB)
    ru, su = _bytes(w_e, s_e, n16_u, k_first // 64, N16, NB, KB)
    for kk in range(0, k_len, BK):
        k0 = k_first + kk
        x_ok = (nb == 0)[None, :] & ((k0 + kb) < H)[:, None]  # the token in column 0, the other 7 zero
        xb = gl.load(x_row + (k0 + kb)[:, None] + nb[None, :] * 0, mask=x_ok, other=0.0)
        nk = gl.minimum(k0 + BK, k_first + k_len - BK)  # the next step (the last step reloads itself)
        rg2, sg2 = _bytes(w_e, s_e, n16_g, nk // 64, N16, NB, KB)
        ru2, su2 = _bytes(w_e, s_e, n16_u, nk // 64, N16, NB, KB)
        acc_g = mma_v2(_decode(rg, sg, NB, KB), xb, acc_g)
        acc_u = mma_v2(_decode(ru, su, NB, KB), xb, acc_u)
        rg, sg, ru, su = rg2, sg2, ru2, su2
    rc = gl.arange(0, BN, layout=gl.SliceLayout(1, _MMA))
    nc = gl.arange(0, 8, layout=gl.SliceLayout(0, _MMA))
    offs_n = pid_n * BN + rc
    mask = (offs_n < I)[:, None] & (nc == 0)[None, :]
    part = part_ptr + pid_k * stride_ps + pair.to(gl.int64) * stride_pp + offs_n[:, None] + nc[None, :] * 0
    gl.store(part, acc_g, mask=mask)
    gl.store(part + I, acc_u, mask=mask)


def _report(name: str, src: GluonASTSource) -> None:
    kernel = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4})
    ir, code = kernel.asm["ttgir"], sass(kernel.asm["cubin"])
    counts = {op: len(re.findall(rf"\b{op}\b", code)) for op in ("HMMA", "HGMMA", "STS", "LDS", "STSM", "LDSM", "SHFL")}
    loops = [n for _, n in loop_sizes(code)]
    print(f"{name}: ttgir {ir.count('ttg.local_alloc')} local_alloc; {resource_usage(kernel.asm['cubin'])}; sass "
          + ", ".join(f"{op} {n}" for op, n in counts.items()) + (f"; loop of {loops} instructions" if loops else ""),
          flush=True)


def loop_sizes(code: str) -> list[tuple[int, int]]:
    """(top address, instructions) of every backward branch's body in a `cuobjdump -sass` listing."""
    ins = instructions(code)
    out = []
    for addr, text in ins:
        m = re.search(r"BRA\s+0x([0-9a-f]+)", text)
        if m and int(m.group(1), 16) < addr:
            out.append((int(m.group(1), 16), sum(1 for a, _ in ins if int(m.group(1), 16) <= a <= addr)))
    return out


def main() -> None:
    _report("mma_v2, A loaded in k_width 2", GluonASTSource(_mma_v2_k2, {"a_ptr": "*bf16", "b_ptr": "*bf16",
                                                                          "c_ptr": "*fp32"}))
    sig = {"w_ptr": "*u8", "s_ptr": "*u8", "x_ptr": "*bf16", "c_ptr": "*fp32", "N16": "i32"}
    _report("v2 weight tile [64, 128] decoded -> mma_v2 N 8",
            GluonASTSource(_weight_tile_mma_v2, sig, constexprs={"BN": 64, "BK": 128}))
    sig = {"x_ptr": "*bf16", "w_ptr": "*u8", "ws_ptr": "*u8", "ids_ptr": "*i32", "part_ptr": "*fp32", "E": "i32",
           "H": "i32", "I": "i32", "N16": "i32", "stride_xt": "i32", "stride_we": "i64", "stride_wse": "i64",
           "stride_ps": "i32", "stride_pp": "i32"}
    aligned = [n for n in sig if n not in ("E",)]  # what the JIT would mark divisible by 16 at these shapes
    attrs = {(list(sig).index(n),): [["tt.divisibility", 16]] for n in aligned}
    _report("direct stage 1 at BLOCK_M 8 (deepseek-v4-tp8 T=1 tile: BN 64, BK 128, sk7)",
            GluonASTSource(_direct1, sig, constexprs={"TOPK": 7, "SPLIT_K": 7, "BN": 64, "BK": 128}, attrs=attrs))


if __name__ == "__main__":
    main()
