"""What Triton 3.6 makes of an e4m3 MMA fed by the decoded weight tile (issue 23), compiled for sm_90 on the CPU.

A tiny kernel per variant: acc^T [BN, BM] += W [BN, BK] x X^T, the weights decoded in registers by
kernels/wtile_e4m3.weight_tile_e4m3 (the swapped-operand form of the bf16 kernels: weights are wgmma's A, from
registers) and the activations an e4m3 [BM, BK] tile transposed in shared memory (wgmma's B, K-major as fp8 needs).
Per variant it prints the wgmma instruction, where its A operand comes from, registers, spill stack, shared memory,
and, inside the main loop's PTX, shared-memory stores / loads and shuffles (a layout conversion between decode and
MMA would show as stores and loads there), plus the fp32 adds of accumulator promotion.

Variants:
  affine    the e4m3 layout, tables from two multiply-adds (SwizzledE4M3.affine)
  table     the e4m3 layout, tables gathered from fp8_rebase.table_words (any d, NaN groups)
  promote   affine, with the MMA's partial sum added into an fp32 accumulator every K step (acc += dot(w, x))
  imprecise affine with tl.dot(..., max_num_imprecise_acc=BK): Triton's own promotion knob
  logical   decoded from the logical [N, K/2] codes and [N, K/32] dcodes (no swizzle), for comparison

Needs no GPU (compile_check.sm90.compile_sm90; run without TRITON_INTERPRET). Prints; never asserts:
tests/kernels/test_wtile_e4m3.py checks the affine and table variants' facts from `--json`.
    python benchmarks/e4m3_tile_sm90.py --bm 128 --json
"""

from __future__ import annotations

import argparse
import json
import re

import torch
import triton
import triton.language as tl

from mxmoe.kernels.wtile_e4m3 import weight_tile_e4m3
from mxmoe.tuning.sweep.compile_check.sm90 import compile_sm90, resource_usage

VARIANTS = ("affine", "table", "promote", "imprecise", "logical")


@triton.jit
def _logical_tile(c_ptr, d_ptr, k0, K, BN: tl.constexpr, BK: tl.constexpr):
    """The same bytes from the logical layout, decoded elementwise (affine tables, no prmt)."""
    rn = tl.arange(0, BN)
    raw = tl.load(c_ptr + rn[:, None] * (K // 2) + k0 // 2 + tl.arange(0, BK // 2)[None, :]).to(tl.int32)
    nib = tl.reshape(tl.join(raw & 15, raw >> 4), [BN, BK])
    dc = tl.load(d_ptr + rn[:, None] * (K // 32) + k0 // 32 + tl.arange(0, BK // 32)[None, :]).to(tl.int32)
    dd = tl.reshape(tl.broadcast_to(((dc - 7) * 8)[:, :, None], [BN, BK // 32, 32]), [BN, BK])
    cm = nib & 7
    t = tl.where(cm < 4, dd * 0x01010100 + 0x0C080000, dd * 0x01010101 + 0x1C181410)
    b = ((t >> (8 * (cm & 3))) & 255) | ((nib & 8) << 4)
    return b.to(tl.uint8).to(tl.float8e4nv, bitcast=True)


@triton.jit
def _probe_kernel(w_ptr, d_ptr, lut_ptr, x_ptr, o_ptr, N16, K64, K, BM: tl.constexpr, BN: tl.constexpr,
                  BK: tl.constexpr, AFFINE: tl.constexpr, LOGICAL: tl.constexpr, PROMOTE: tl.constexpr,
                  IMPRECISE: tl.constexpr):
    rm = tl.arange(0, BM)
    rk = tl.arange(0, BK)
    acc = tl.zeros([BN, BM], tl.float32)
    for k64_0 in range(0, K64, BK // 64):
        if LOGICAL:
            w = _logical_tile(w_ptr, d_ptr, k64_0 * 64, K, BN, BK)
        else:
            w = weight_tile_e4m3(w_ptr, d_ptr, lut_ptr, 0, N16, k64_0, N16, K64, AFFINE, False, BN, BK)
        x = tl.load(x_ptr + rm[:, None] * K + k64_0 * 64 + rk[None, :])  # [BM, BK] e4m3
        if PROMOTE:
            acc += tl.dot(w, tl.trans(x))
        else:
            acc = tl.dot(w, tl.trans(x), acc, max_num_imprecise_acc=IMPRECISE)
    tl.store(o_ptr + tl.arange(0, BN)[:, None] * BM + rm[None, :], acc)


def probe(variant: str, bn: int, bm: int, bk: int, warps: int, stages: int, k: int = 1024) -> dict:
    """Compile one variant for sm_90 and read the facts the module docstring lists."""
    w = torch.empty(bn * k, dtype=torch.uint8)
    d = torch.empty(bn * k // 32, dtype=torch.uint8)
    lut = torch.empty(42, dtype=torch.int32)
    x = torch.empty(bm, k, dtype=torch.float8_e4m3fn)
    o = torch.empty(bn, bm)
    meta = dict(BM=bm, BN=bn, BK=bk, AFFINE=variant != "table", LOGICAL=variant == "logical",
                PROMOTE=variant == "promote", IMPRECISE=bk if variant == "imprecise" else None,
                num_warps=warps, num_stages=stages)
    c = compile_sm90(_probe_kernel, (w, d, lut, x, o, bn // 16, k // 64, k), meta)
    ptx, ttgir = c.asm["ptx"], c.asm["ttgir"]
    start, end = ptx.find("Inner Loop Header"), ptx.find("_crit_edge")
    loop = ptx[start:end] if 0 <= start < end else ptx
    mma = re.findall(r"(wgmma\.mma_async[.\w]*) \{[^}]*\}, (\{|%rd)", ptx)
    usage = resource_usage(c.asm["cubin"])
    return {
        "variant": variant, "bn": bn, "bm": bm, "bk": bk, "warps": warps, "stages": stages,
        "wgmma": sorted({m[0] for m in mma}), "a_operand": sorted({"registers" if m[1] == "{" else "shared"
                                                                    for m in mma}),
        "regs": usage["regs"], "stack": usage["stack"], "shared": c.metadata.shared,
        "loop_found": 0 <= start < end, "loop_st_shared": len(re.findall(r"\bst\.shared", loop)),
        "loop_ld_shared": len(re.findall(r"\bld\.shared|\bldmatrix", loop)), "loop_shfl": loop.count("shfl."),
        "loop_prmt": loop.count("prmt.b32"), "loop_add_f32": len(re.findall(r"\badd\.(rn\.)?f32", loop)),
        "max_num_imprecise_acc": sorted({int(v) for v in re.findall(r"maxNumImpreciseAcc = (\d+)", ttgir)}),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--bn", type=int, default=64)
    ap.add_argument("--bm", type=int, default=128)
    ap.add_argument("--bk", type=int, default=128)
    ap.add_argument("--warps", type=int, default=4)
    ap.add_argument("--stages", type=int, default=3)
    ap.add_argument("--json", action="store_true", help="one JSON object per line")
    a = ap.parse_args()
    for v in a.variants.split(","):
        if v not in VARIANTS:
            raise SystemExit(f"unknown variant {v!r}: expected one of {VARIANTS}")
        row = probe(v, a.bn, a.bm, a.bk, a.warps, a.stages)
        if a.json:
            print(json.dumps(row), flush=True)
        else:
            print(f"{v:9s} {','.join(row['wgmma'])} A={','.join(row['a_operand'])} regs={row['regs']} "
                  f"stack={row['stack']} smem={row['shared']} loop: st.shared={row['loop_st_shared']} "
                  f"ld.shared={row['loop_ld_shared']} shfl={row['loop_shfl']} prmt={row['loop_prmt']} "
                  f"add.f32={row['loop_add_f32']} imprecise={row['max_num_imprecise_acc']}", flush=True)


if __name__ == "__main__":
    main()
