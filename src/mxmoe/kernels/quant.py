"""Quantize the layer input [T, H] to MXFP8 / MXFP4 for a8w4 / a4w4 in one small kernel.

A separate launch (not fused into stage 1) because stage 1 reads each token row once per N tile:
quantizing there would redo the same rows I / BLOCK_N times. Reads bf16 once, writes 1 or 0.5 byte.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from mxmoe.kernels.common import KernelInput, interpreting, require_executable
from mxmoe.kernels.mx_tile import e4m3_code, qdq_tile, quantize_tile_mxfp4, quantize_tile_mxfp8
from mxmoe.kernels.sync import enter, launch_options, overlap_begin, overlap_end
from mxmoe.shapes import Path

# The quantization kernel's tile: ROWS token rows x COLS columns a program, WARPS warps. Columns past H are masked
# (H is a multiple of 32, so an MX group is all in or all out): gpt-oss's 2880 once took 64-column tiles.
ROWS = 16
COLS = 256
WARPS = 4


@triton.jit
def _quant_kernel(x_ptr, q_ptr, s_ptr, T, H, stride_x, stride_q, stride_s,
                  FP4: tl.constexpr, QDQ: tl.constexpr, EARLY: tl.constexpr, INTERP: tl.constexpr,
                  BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    """EARLY: overlapped with the grid before it (`sync.overlap_begin`): the layer input, after the align kernels."""
    if EARLY:
        overlap_begin(INTERP)
    else:
        enter(INTERP)
    _quant_tile(x_ptr, q_ptr, s_ptr, T, H, stride_x, stride_q, stride_s, FP4, QDQ, INTERP, BLOCK_R, BLOCK_C)
    if EARLY:
        overlap_end(INTERP)


@triton.jit
def _quant_tile(x_ptr, q_ptr, s_ptr, T, H, stride_x, stride_q, stride_s, FP4: tl.constexpr, QDQ: tl.constexpr,
                INTERP: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    offs_r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    c0 = tl.program_id(1) * BLOCK_C
    offs_c = c0 + tl.arange(0, BLOCK_C)
    row_ok = (offs_r < T)[:, None]
    mask = row_ok & (offs_c < H)[None, :]
    rows = offs_r.to(tl.int64)
    x = tl.load(x_ptr + rows[:, None] * stride_x + offs_c[None, :], mask=mask, other=0.0)
    offs_s = c0 // 32 + tl.arange(0, BLOCK_C // 32)
    if QDQ:  # the values on the path's grid, as bf16 (exact): the v2 kernels' carrier
        q = qdq_tile(x.to(tl.float32), FP4, INTERP, BLOCK_R, BLOCK_C).to(tl.bfloat16)
        tl.store(q_ptr + rows[:, None] * stride_q + offs_c[None, :], q, mask=mask)
        return
    if FP4:
        q, s = quantize_tile_mxfp4(x.to(tl.float32), BLOCK_R, BLOCK_C)
        offs_q = c0 // 2 + tl.arange(0, BLOCK_C // 2)
        q_ok = offs_q < H // 2
    else:
        q, s = quantize_tile_mxfp8(x.to(tl.float32), BLOCK_R, BLOCK_C)
        offs_q = offs_c
        q_ok = offs_q < H
    tl.store(q_ptr + rows[:, None] * stride_q + offs_q[None, :], q, mask=row_ok & q_ok[None, :])
    tl.store(s_ptr + rows[:, None] * stride_s + offs_s[None, :], s, mask=row_ok & (offs_s < H // 32)[None, :])


def quantize_input(x: torch.Tensor, path: Path, *, bf16: bool = False, out: KernelInput | None = None,
                   early: bool = False) -> KernelInput:
    """x: [T, H] bf16 (or fp32) -> the path's KernelInput (bf16 passes through untouched). `bf16=True` (the v2
    kernels) keeps an MX path's values on its grid but carried as bf16 (rounding bit for bit as the bytes would),
    written into `out` when given (stage 1's deferred rounding of its bf16 h, in place: `out.data` may be `x`).
    `early`: the kernel overlaps the grid launched just before it (`sync.overlap_begin`: that grid entered with
    `enter_first_wait`, and `x` was written before it)."""
    path = Path(path)
    if path is Path.A16W4:
        return KernelInput(x, None, path)
    require_executable(x)
    if x.dim() != 2 or x.shape[1] % 32 or x.stride(1) != 1:
        raise ValueError(f"quantize_input: need [T, H] with H a multiple of 32 and unit column stride, got "
                         f"{tuple(x.shape)} strides {x.stride()}")
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
    grid = (triton.cdiv(t, ROWS), triton.cdiv(h, COLS))
    scales = out.scales_or(out.data)
    _quant_kernel[grid](x, out.data, scales, t, h, x.stride(0), out.data.stride(0), scales.stride(0),
                        FP4=path is Path.A4W4, QDQ=bf16, EARLY=early, INTERP=interpreting(), BLOCK_R=ROWS, BLOCK_C=COLS,
                        num_warps=WARPS, **launch_options())
    return out


@triton.jit
def _token_e4m3_kernel(x_ptr, q_ptr, s_ptr, T, H, stride_x, stride_q, INTERP: tl.constexpr, BLOCK_R: tl.constexpr,
                       BLOCK_C: tl.constexpr):
    """Two passes over each row: its amax gives the top MXFP8 scale, the token's base b (the exponent MXFP8 gives
    the token's largest group); then each element's MXFP8 value times 2**(127 - b), rounded to e4m3 (exact but
    where it falls under e4m3's 2**-9 step: docs/fp8.md section 2). NaN / Inf elements become e4m3 NaN."""
    enter(INTERP)
    rows = (tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)).to(tl.int64)
    mask = (rows < T)[:, None]
    amax = tl.zeros([BLOCK_R], dtype=tl.float32)
    for c0 in range(0, H, BLOCK_C):
        x = tl.load(x_ptr + rows[:, None] * stride_x + (c0 + tl.arange(0, BLOCK_C))[None, :], mask=mask,
                    other=0.0).to(tl.float32)
        a = tl.abs(x)
        amax = tl.maximum(amax, tl.max(tl.where(a <= 3.4028234663852886e38, a, 0.0), axis=1))
    e = ((amax.to(tl.int32, bitcast=True) >> 23) & 0xFF) - 127
    base = tl.minimum(tl.maximum(e - 8 + 127, 1), 254)  # MXFP8's shared exponent floor(log2 amax) - 8, biased
    base = tl.where(amax == 0.0, 127, base)  # no finite nonzero element: scale 1
    tl.store(s_ptr + rows, (base << 23).to(tl.float32, bitcast=True), mask=rows < T)
    inv = ((254 - base) << 23).to(tl.float32, bitcast=True)  # 2**(127 - b); b <= 246 for a finite amax
    for c0 in range(0, H, BLOCK_C):
        offs = c0 + tl.arange(0, BLOCK_C)
        x = tl.load(x_ptr + rows[:, None] * stride_x + offs[None, :], mask=mask, other=0.0).to(tl.float32)
        v = qdq_tile(x, False, INTERP, BLOCK_R, BLOCK_C) * inv[:, None]
        if INTERP:  # noqa: SIM108 -- a constexpr branch: the GPU's fp8 cast must not be traced by the interpreter
            code = e4m3_code(v)
        else:
            code = v.to(tl.float8e4nv).to(tl.uint8, bitcast=True).to(tl.int32)
        code = tl.where(tl.abs(x) <= 3.4028234663852886e38, code, 0x7F | ((x < 0).to(tl.int32) << 7))
        tl.store(q_ptr + rows[:, None] * stride_q + offs[None, :], code.to(tl.uint8), mask=mask)


def quantize_token_e4m3(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """a8w4 on e4m3 MMA: x [T, H] bf16 (H a multiple of 32) -> (e4m3fn bytes [T, H] as uint8, f32 [T] token scales):
    the MXFP8 values of x rebased to one power-of-two scale per token, as `fp8_rebase.rebase_mxfp8` of
    `mx.quantize_mxfp8(x)` (bit for bit; the scale is 2**(base - 127))."""
    require_executable(x)
    if x.dim() != 2 or x.shape[1] % 32 or x.stride(1) != 1:
        raise ValueError(f"quantize_token_e4m3: need [T, H] with H a multiple of 32 and unit column stride, "
                         f"got {tuple(x.shape)} strides {x.stride()}")
    t, h = x.shape
    q = torch.empty(t, h, dtype=torch.uint8, device=x.device)
    s = torch.empty(t, dtype=torch.float32, device=x.device)
    if t:
        block_c = next(c for c in (256, 128, 64, 32) if h % c == 0)
        _token_e4m3_kernel[(triton.cdiv(t, ROWS),)](x, q, s, t, h, x.stride(0), q.stride(0), INTERP=interpreting(),
                                                     BLOCK_R=ROWS, BLOCK_C=block_c, **launch_options())
    return q, s
