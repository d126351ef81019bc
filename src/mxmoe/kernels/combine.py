"""The top-k combines that finish stage 2: the slots finish (`combine_slots`, run inside stage 2) and the rows combine
(Combine.ROWS): y[t] = bf16(sum over slots a of rows[t * A + a]), the slots summed in f32 in
slot order, so the result is deterministic.

Why a second kernel: at prefill the atomic combine adds every pair's fp32 row into the token's fp32 row of [T, H];
that target is far larger than L2 (deepseek-v3-tp8 T=32768: 940 MB) and a token's A rows arrive at unrelated
times, so nearly every add reads and writes its line in DRAM (about P x H x 8 bytes), besides the memset before
and the cast after. Rows rounded to bf16 cost P x H x 2 bytes written by stage 2 and read once here. The peer's
matmul_ogs combines the same way (a scatter of bf16 rows, then a reduce).

Axis legend: T tokens, A topk, H hidden.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from mxmoe.kernels.common import interpreting, to_bf16_rne
from mxmoe.kernels.sync import enter, launch_options

# Tokens x columns per program, 4 warps: 8 x 1024 bf16 is 16 KB a slot, A loads in flight per program.
# Not tuned: it streams P x H x 2 bytes at whatever rate the loads reach.
ROWS_TOKENS = 8
ROWS_COLS = 1024
ROWS_WARPS = 4
COMBINE_ROWS = tl.constexpr(16)  # tokens per step of the slots combine's finish


@triton.jit
def combine_slots(slots_ptr, y_ptr, T, H, offs_n, stride_ss, stride_sr, stride_y, TOPK: tl.constexpr,
                   SPLIT_K: tl.constexpr, INTERP: tl.constexpr, BN: tl.constexpr):
    """y[:, offs_n] = the sum over splits and top-k slots of every token's slot rows, in bf16 (the finish of the
    slots combine, run by the last CTA of an N column)."""
    n_ok = offs_n < H
    for t0 in range(0, T, COMBINE_ROWS):
        tok = (t0 + tl.arange(0, COMBINE_ROWS)).to(tl.int64)
        mask = (tok < T)[:, None] & n_ok[None, :]
        acc = tl.zeros([COMBINE_ROWS, BN], dtype=tl.float32)
        for s in range(SPLIT_K):
            for a in tl.static_range(TOPK):
                acc += tl.load(slots_ptr + s * stride_ss + (tok * TOPK + a)[:, None] * stride_sr + offs_n[None, :],
                               mask=mask, other=0.0, cache_modifier=".cg")
        tl.store(y_ptr + tok[:, None] * stride_y + offs_n[None, :], to_bf16_rne(acc, INTERP), mask=mask)


@triton.jit
def _combine_rows_kernel(rows_ptr, y_ptr, T, H, stride_r, stride_y, TOPK: tl.constexpr, INTERP: tl.constexpr,
                         BT: tl.constexpr, BH: tl.constexpr):
    enter(INTERP)
    tok = (tl.program_id(0) * BT + tl.arange(0, BT)).to(tl.int64)
    offs = tl.program_id(1) * BH + tl.arange(0, BH)
    mask = (tok < T)[:, None] & (offs < H)[None, :]
    acc = tl.zeros([BT, BH], dtype=tl.float32)
    for a in tl.static_range(TOPK):
        acc += tl.load(rows_ptr + (tok * TOPK + a)[:, None] * stride_r + offs[None, :], mask=mask,
                       other=0.0).to(tl.float32)
    tl.store(y_ptr + tok[:, None] * stride_y + offs[None, :], to_bf16_rne(acc, INTERP), mask=mask)


def combine_rows(rows: torch.Tensor, topk: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """bf16 [T, H] from bf16 rows [T * topk, H] (row t * topk + a is token t's slot a)."""
    if rows.dtype != torch.bfloat16 or rows.dim() != 2 or rows.stride(1) != 1 or rows.shape[0] % topk:
        raise ValueError(f"combine_rows: need bf16 [T * {topk}, H] rows with unit column stride, got {rows.dtype} "
                         f"{tuple(rows.shape)} strides {rows.stride()}")
    t, h = rows.shape[0] // topk, rows.shape[1]
    if out is None:
        out = torch.empty(t, h, dtype=torch.bfloat16, device=rows.device)
    elif out.dtype != torch.bfloat16 or tuple(out.shape) != (t, h) or out.stride(1) != 1:
        raise ValueError(f"combine_rows: out must be bf16 {(t, h)}, got {out.dtype} {tuple(out.shape)}")
    if t == 0:
        return out
    bh = min(ROWS_COLS, triton.next_power_of_2(h))
    _combine_rows_kernel[(triton.cdiv(t, ROWS_TOKENS), triton.cdiv(h, bh))](
        rows, out, t, h, rows.stride(0), out.stride(0), TOPK=topk, INTERP=interpreting(), BT=ROWS_TOKENS, BH=bh,
        num_warps=ROWS_WARPS, **launch_options(),
    )
    return out
