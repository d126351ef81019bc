"""Quantize the layer input [T, H] to MXFP8 / MXFP4 for a8w4 / a4w4 in one small kernel.

A separate launch (not fused into stage 1) because stage 1 reads each token row once per N tile:
quantizing there would redo the same rows I / BLOCK_N times. Reads bf16 once, writes 1 or 0.5 byte.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from mxmoe.kernels.common import KernelInput, interpreting, require_executable
from mxmoe.kernels.mx_tile import qdq_tile, quantize_tile_mxfp4, quantize_tile_mxfp8
from mxmoe.kernels.sync import enter, launch_options
from mxmoe.shapes import Path

_ROWS = 16


@triton.jit
def _quant_kernel(x_ptr, q_ptr, s_ptr, T, stride_x, stride_q, stride_s,
                  FP4: tl.constexpr, QDQ: tl.constexpr, INTERP: tl.constexpr, BLOCK_R: tl.constexpr,
                  BLOCK_C: tl.constexpr):
    enter(INTERP)
    offs_r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    c0 = tl.program_id(1) * BLOCK_C
    mask = (offs_r < T)[:, None]
    rows = offs_r.to(tl.int64)
    x = tl.load(x_ptr + rows[:, None] * stride_x + (c0 + tl.arange(0, BLOCK_C))[None, :], mask=mask, other=0.0)
    offs_s = c0 // 32 + tl.arange(0, BLOCK_C // 32)
    if QDQ:  # the values on the path's grid, as bf16 (exact): the v2 kernels' carrier
        q = qdq_tile(x.to(tl.float32), FP4, INTERP, BLOCK_R, BLOCK_C).to(tl.bfloat16)
        offs_c = c0 + tl.arange(0, BLOCK_C)
        tl.store(q_ptr + rows[:, None] * stride_q + offs_c[None, :], q, mask=mask)
        return
    if FP4:
        q, s = quantize_tile_mxfp4(x.to(tl.float32), BLOCK_R, BLOCK_C)
        offs_q = c0 // 2 + tl.arange(0, BLOCK_C // 2)
    else:
        q, s = quantize_tile_mxfp8(x.to(tl.float32), BLOCK_R, BLOCK_C)
        offs_q = c0 + tl.arange(0, BLOCK_C)
    tl.store(q_ptr + rows[:, None] * stride_q + offs_q[None, :], q, mask=mask)
    tl.store(s_ptr + rows[:, None] * stride_s + offs_s[None, :], s, mask=mask)


def quantize_input(x: torch.Tensor, path: Path, *, bf16: bool = False, out: KernelInput | None = None) -> KernelInput:
    """x: [T, H] bf16 (or fp32) -> the path's KernelInput (bf16 passes through untouched). `bf16=True` (the v2
    kernels) keeps an MX path's values on its grid but carried as bf16 (rounding bit for bit as the bytes would),
    written into `out` when given (stage 1's deferred rounding of h)."""
    path = Path(path)
    if path is Path.A16W4:
        return KernelInput(x, None, path)
    require_executable(x)
    t, h = x.shape
    if out is not None:
        if not (bf16 and out.bf16 and tuple(out.data.shape) == (t, h) and out.data.is_contiguous()):
            raise ValueError(f"quantize_input: out must be contiguous bf16 {(t, h)} with bf16=True")
    elif bf16:
        out = KernelInput(torch.empty(t, h, dtype=torch.bfloat16, device=x.device), None, path)
    else:
        out = KernelInput.empty(path, t, h, x.device)
    if t == 0:
        return out
    block_c = next(c for c in (256, 128, 64, 32) if h % c == 0)
    grid = (triton.cdiv(t, _ROWS), h // block_c)
    scales = out.scales_or(out.data)
    _quant_kernel[grid](x, out.data, scales, t, x.stride(0), out.data.stride(0), scales.stride(0),
                        FP4=path is Path.A4W4, QDQ=bf16, INTERP=interpreting(), BLOCK_R=_ROWS, BLOCK_C=block_c,
                        **launch_options())
    return out
