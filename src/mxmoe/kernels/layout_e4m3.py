"""The e4m3 weight layout (issue 23): rebased MXFP4 weights permuted once, at load time, so that each thread's
16-byte load is its own e4m3 wgmma A fragment and each 32-bit word decodes with two byte permutes (`prmt`).

Axis legend: E experts, N weight rows (the MMA's M side), K the reduced axis; fp8_rebase.py defines dcode.

Index split (the Hopper wgmma m64nNk32 A fragment for 8-bit types: warp w of a warpgroup owns rows 16w..16w+15 of
each 64-row slab; lane 4g+t holds rows g, g+8 (h) and columns 4t+j, 16+4t+j (v, j < 4) of each k32 step, in four
registers a(h, v) of four bytes j):
    n = 16*n16 + 8*h + g                  g < 8, h < 2
    k = 64*k64 + 32*kk + 16*v + 4*t + j   kk, v < 2, t, j < 4
Stored codes, uint8 [E, K64, N16, 8 (g), 4 (t), 2 (h), 2 (kk), 4 (word byte)]: a (k64, n16) block is 512 contiguous
bytes (as in the bf16 layout, layout.py), a lane's 16 bytes are its fragments for two k32 steps, and one 32-bit word
holds one K32 group of one row (h, kk): its 8 values (v, j), so one dcode (one lookup table) serves the word.
Within the word, value (v, j) has its magnitude bits at 16v + 4j .. 16v + 4j + 2 and its sign at 8j + 7 - 4v, so
    a(h, 0) = prmt(T0, T1, w & 0x7777)         | ( w       & 0x80808080)
    a(h, 1) = prmt(T0, T1, (w >> 16) & 0x7777) | ((w << 4) & 0x80808080)
with T0, T1 the group's magnitude table (fp8_rebase.table_words()[dcode]): eight instructions per eight values.
Stored dcodes, uint8 [E, K64, N16, 8 (g), 2 (h), 2 (kk)]: lane 4g+t's 4 bytes are the groups of its words, in word
order (the bf16 layout's scale order). K is padded with zero codes to a multiple of 64 and N to one of 16; padded
groups take dcode 0 (d = D_FLUSH), under which zero codes stay zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mxmoe.fp8_rebase import RebasedWeights, tables_are_affine
from mxmoe.kernels.layout import Blocks, pad_to
from mxmoe.mx import unpack_e2m1

_V = torch.arange(2).view(2, 1)
_J = torch.arange(4).view(1, 4)
_MAG_SHIFT = 16 * _V + 4 * _J  # [v, j] bit of the magnitude's lowest bit
_SIGN_SHIFT = 8 * _J + 7 - 4 * _V  # [v, j] bit of the sign
_BYTE_SHIFT = torch.tensor([0, 8, 16, 24])


@dataclass(frozen=True, slots=True)
class SwizzledE4M3(Blocks):
    """Rebased MXFP4 weights in the e4m3 kernel layout (module docstring): data [E, K64 * N16 * 512] uint8, dcode
    [E, K64 * N16 * 32] uint8, row_scale [E, N] f32 (the epilogue's per-row factor); `rows` N, `cols` K logical.
    `affine` (fp8_rebase.tables_are_affine) lets the kernel compute each group's table with two multiply-adds
    instead of gathering it, as `fold` does for the bf16 layout's scale multiply."""

    data: torch.Tensor
    dcode: torch.Tensor
    row_scale: torch.Tensor
    rows: int
    cols: int
    affine: bool



def swizzle_e4m3(r: RebasedWeights) -> SwizzledE4M3:
    """Kernel layout of rebased weights of logical shape [E, N, K]."""
    if len(r.shape) != 3:
        raise ValueError(f"swizzle_e4m3 takes [E, N, K] weights, got logical shape {r.shape}")
    e, n, k = r.shape
    n16, k64 = -(-n // 16), -(-k // 64)
    dev = r.codes.device
    mag_shift, sign_shift, byte_shift = _MAG_SHIFT.to(dev), _SIGN_SHIFT.to(dev), _BYTE_SHIFT.to(dev)
    data = torch.empty(e, k64 * n16 * 512, dtype=torch.uint8, device=dev)
    for x in range(e):  # one expert at a time bounds the int64 temporaries (8 bytes a value)
        nib = pad_to(unpack_e2m1(r.codes[x : x + 1]), 16 * n16, 64 * k64, 0)
        # [1, N16, h, g, K64, kk, v, t, j] -> [1, K64, N16, g, t, h, kk, v, j]
        nib = nib.view(1, n16, 2, 8, k64, 2, 2, 4, 4).permute(0, 4, 1, 3, 7, 2, 5, 6, 8)
        word = ((nib & 7) << mag_shift).sum((-2, -1)) | ((nib >> 3) << sign_shift).sum((-2, -1))
        data[x] = ((word[..., None] >> byte_shift) & 255).to(torch.uint8).reshape(-1)
    dc = pad_to(r.dcode, 16 * n16, 2 * k64, 0)
    dc = dc.view(e, n16, 2, 8, k64, 2).permute(0, 4, 1, 3, 2, 5)  # [E, K64, N16, g, h, kk]
    return SwizzledE4M3(data, dc.reshape(e, -1).contiguous(), r.row_scale, n, k, tables_are_affine(r))


def unswizzle_e4m3(sw: SwizzledE4M3) -> tuple[torch.Tensor, torch.Tensor]:
    """The inverse of `swizzle_e4m3`: (codes uint8 [E, N, K/2], dcode uint8 [E, N, K/32]). For tests."""
    e, n16, k64 = sw.data.shape[0], sw.n16, sw.k64
    dev = sw.data.device
    word = sw.data.view(e, k64, n16, 8, 4, 2, 2, 4).to(torch.int64)
    word = (word << _BYTE_SHIFT.to(dev)).sum(-1)[..., None, None]  # [E, K64, N16, g, t, h, kk, 1, 1]
    nib = ((word >> _MAG_SHIFT.to(dev)) & 7) | (((word >> _SIGN_SHIFT.to(dev)) & 1) << 3)  # [..., v, j]
    nib = nib.permute(0, 2, 5, 3, 1, 6, 7, 4, 8).reshape(e, 16 * n16, 64 * k64)[:, : sw.rows, : sw.cols]
    codes = (nib[..., 0::2] | (nib[..., 1::2] << 4)).to(torch.uint8)
    dc = sw.dcode.view(e, k64, n16, 8, 2, 2).permute(0, 2, 4, 3, 1, 5).reshape(e, 16 * n16, 2 * k64)
    return codes.contiguous(), dc[:, : sw.rows, : sw.cols // 32].contiguous()
