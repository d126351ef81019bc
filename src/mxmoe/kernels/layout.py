"""The MXFP4 weight layout the v2 kernels read: values and scales permuted once, at load time, so that each
thread's 16-byte load is its own wgmma A-operand fragment and its 4-byte scale load its own scales.

Axis legend: E experts, N weight rows (the MMA's M side: W13's 2*I gate+up rows, W2's H rows), K the reduced
axis (H for W13, I for W2), nibble = one e2m1 value (s e1 e0 m).

Index split (the Hopper wgmma m64nNk16 bf16 A fragment: warp w of a warpgroup owns rows 16w..16w+15 of each
64-row slab; lane 4g+t holds rows g, g+8 (h) and columns 2t, 2t+1 (b) and 2t+8, 2t+9 (v) of each k16 step):
    n = 16*n16 + 8*h + g                 g < 8, h < 2
    k = 64*k64 + 16*kr + 8*v + 2*t + b   kr < 4, v, t < 4, b < 2
Stored values, uint8 [E, K64, N16, 8 (g), 4 (t), 4 (kr), 4 (word byte)]: a (k64, n16) block is 512 contiguous
bytes, a lane's 16 bytes are its fragments for four k16 steps (kr), and one 32-bit word (4 bytes) holds the 8
nibbles (h, v, b) of one k16 step. Within the word the nibbles' bits are scrambled (`_POSITIONS`) so that the
kernel's decode is a shift and a mask per output register (kernels/wtile.py):
    out(h=0, v=0) =  w        & 0x81C081C0      bits s->15, e1 e0 m->8:6 (lo half, b=0); +16 for b=1
    out(h=1, v=0) = (w << 3)  & 0x81C081C0
    out(h=0, v=1) = (w << 6)  & 0x81C081C0
    out(h=1, v=1) = (w >> 3) & 0x01800180 | (w >> 7) & 0x00400040 | (w << 1) & 0x80008000
Each output register is then two bf16 of value * 2**-126 (the e2m1 subnormal 0.5 lands on the bf16 subnormal,
exactly), one bf16x2 multiply away from the value times its scale.
Stored scales, uint8 [E, K64, N16, 8 (g), 2 (h), 2 (k32 within k64)]: lane 4g+t's 4 bytes are the scales of its
rows g, g+8 over its 64 K values. K is padded with zero values (scale 127) to a multiple of 64, N to one of 16.

N-major block order (`swizzle(..., n_major=True)`, `SwizzledMX.n_major`): the same 512-byte (and 32-byte scale)
blocks stored [E, N16, K64, ...] instead, so a 16-row slab's whole K is contiguous. Only the direct decode's stage 1
reads it (an opt-in copy of W13, `MoEWeights.with_decode_layout`): there a program reads per K step four 2 KB runs
at a 32 KB stride in the K-major order, one 8 KB run a slab over its split in this one (benchmarks/decode_pattern.py
measures whether that is what bounds it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mxmoe.mx import unpack_e2m1

# Where each nibble bit (s, e1, e0, m) of slot (h, v, b) goes in its 32-bit word: see the module docstring.
_LO = {0: (15, 8, 7, 6), 1: (12, 5, 4, 3), 2: (9, 2, 1, 0), 3: (14, 11, 10, 13)}  # variant -> (s, e1, e0, m), b=0
_VARIANT = {(0, 0): 0, (1, 0): 1, (0, 1): 2, (1, 1): 3}  # (h, v) -> decode variant


def _positions() -> torch.Tensor:
    """int64 [2 (h), 2 (v), 2 (b), 4 (bit 3..0 of the nibble: s e1 e0 m)] target bit in the word."""
    pos = torch.zeros(2, 2, 2, 4, dtype=torch.int64)
    for (h, v), var in _VARIANT.items():
        for b in range(2):
            pos[h, v, b] = torch.tensor(_LO[var]) + 16 * b
    return pos


_POSITIONS = _positions()
SCALE_PAD = 127  # the scale byte of padded K columns (their values are zero)


class Blocks:
    """The (k64, n16) block counts of a layout of `rows` N x `cols` K (K padded to 64, N to 16): both weight
    layouts (this one and kernels/layout_e4m3.py) are made of 512-byte (k64, n16) blocks."""

    __slots__ = ()
    rows: int
    cols: int

    @property
    def n16(self) -> int:
        return -(-self.rows // 16)

    @property
    def k64(self) -> int:
        return -(-self.cols // 64)


@dataclass(frozen=True, slots=True)
class SwizzledMX(Blocks):
    """One MXFP4 weight matrix per expert in the v2 kernel layout (module docstring).

    data [E, K64 * N16 * 512] uint8, scales [E, K64 * N16 * 32] uint8; `rows` N and `cols` K are the logical
    sizes. `fold` says every scale byte is <= 128 (no NaN, 255): the kernel then folds the decode's 2**126 into the
    scale, one bf16 multiply per value instead of two (a larger scale would overflow the folded bf16 factor),
    and builds the factor without a NaN test (a layout with NaN scales takes the unfolded decode, which has it).
    `n_major`: the blocks in N-major order (module docstring).
    """

    data: torch.Tensor
    scales: torch.Tensor
    rows: int
    cols: int
    fold: bool
    n_major: bool = False

    def to(self, device: torch.device | str) -> SwizzledMX:
        return SwizzledMX(self.data.to(device), self.scales.to(device), self.rows, self.cols, self.fold, self.n_major)


def pad_to(x: torch.Tensor, rows: int, cols: int, value: int) -> torch.Tensor:
    """[E, N, K] -> [E, rows, cols], the new entries `value` (x itself when nothing is added)."""
    e, n, k = x.shape
    if (n, k) == (rows, cols):
        return x
    out = torch.full((e, rows, cols), value, dtype=x.dtype, device=x.device)
    out[:, :n, :k] = x
    return out


def _words(nib: torch.Tensor) -> torch.Tensor:
    """int32 nibbles [..., 2 (h), 2 (v), 2 (b)] -> int32 words [...] with each nibble bit at its `_POSITIONS`."""
    word = torch.zeros(nib.shape[:-3], dtype=torch.int64, device=nib.device)
    for h in range(2):
        for v in range(2):
            for b in range(2):
                x = nib[..., h, v, b].to(torch.int64)
                for i, p in enumerate(_POSITIONS[h, v, b].tolist()):  # i = 0..3 is nibble bit 3..0
                    word |= ((x >> (3 - i)) & 1) << p
    return word


# The (k64, n16) block axes of the views below ([E, N16, h, g, K64, ...]: N16 is axis 1, K64 axis 4), outer first,
# by n_major.
_BLOCKS = {False: (4, 1), True: (1, 4)}

# Experts swizzled at a time: bounds the int64 temporaries (about 9 bytes a value) for 9 GB checkpoints.
_CHUNK_VALUES = 1 << 26


def swizzle(data: torch.Tensor, scales: torch.Tensor, *, n_major: bool = False) -> SwizzledMX:
    """Kernel layout of MXFP4 weights: data uint8 [E, N, K/2] (e2m1 pairs along K), scales uint8 [E, N, K/32];
    with `n_major` its blocks in N-major order."""
    if data.dtype != torch.uint8 or scales.dtype != torch.uint8 or data.dim() != 3 or scales.dim() != 3:
        raise ValueError("swizzle takes uint8 [E, N, K/2] values and uint8 [E, N, K/32] scales")
    e, n, kh = data.shape
    k = 2 * kh
    if tuple(scales.shape) != (e, n, k // 32):
        raise ValueError(f"scales shape {tuple(scales.shape)}, expected {(e, n, k // 32)}")
    n16, k64 = -(-n // 16), -(-k // 64)
    sw_data = torch.empty(e, k64 * n16 * 512, dtype=torch.uint8, device=data.device)
    step = max(1, _CHUNK_VALUES // max(1, n * k))
    shifts = torch.tensor([0, 8, 16, 24], device=data.device)
    for e0 in range(0, e, step):
        nib = pad_to(unpack_e2m1(data[e0 : e0 + step]), 16 * n16, 64 * k64, 0)
        c = nib.shape[0]
        # [C, N16, h, g, K64, kr, v, t, b] -> [C, K64, N16, g, t, kr, h, v, b] (N-major: [C, N16, K64, ...])
        nib = nib.view(c, n16, 2, 8, k64, 4, 2, 4, 2).permute(0, *_BLOCKS[n_major], 3, 7, 5, 2, 6, 8)
        byte = (_words(nib)[..., None] >> shifts) & 255  # little-endian bytes of each word
        sw_data[e0 : e0 + c] = byte.to(torch.uint8).reshape(c, -1)
    sc = pad_to(scales, 16 * n16, 2 * k64, SCALE_PAD)
    sc = sc.view(e, n16, 2, 8, k64, 2).permute(0, *_BLOCKS[n_major], 3, 2, 5)  # [E, K64, N16, g, h, k32]
    fold = bool(scales.numel() == 0 or int(scales.max()) <= 128)
    return SwizzledMX(sw_data, sc.reshape(e, -1).contiguous(), n, k, fold, n_major)


def unswizzle(sw: SwizzledMX) -> tuple[torch.Tensor, torch.Tensor]:
    """The inverse of `swizzle`: (uint8 [E, N, K/2], uint8 [E, N, K/32]). For tests and the reference."""
    e = sw.data.shape[0]
    n16, k64 = sw.n16, sw.k64
    outer = (n16, k64) if sw.n_major else (k64, n16)
    word = sw.data.view(e, *outer, 8, 4, 4, 4).to(torch.int64)
    if sw.n_major:
        word = word.transpose(1, 2)  # [E, K64, N16, ...] as below
    word = (word << torch.tensor([0, 8, 16, 24], device=word.device)).sum(-1)  # [E, K64, N16, g, t, kr]
    pos = _POSITIONS.to(word.device)
    bits = (word[..., None, None, None, None] >> pos) & 1  # [..., h, v, b, 4 (s e1 e0 m)]
    nib = (bits << torch.arange(3, -1, -1, device=word.device)).sum(-1)  # [E, K64, N16, g, t, kr, h, v, b]
    nib = nib.permute(0, 2, 6, 3, 1, 5, 7, 4, 8).reshape(e, 16 * n16, 64 * k64)
    nib = nib[:, : sw.rows, : sw.cols]
    data = (nib[..., 0::2] | (nib[..., 1::2] << 4)).to(torch.uint8)
    sc = sw.scales.view(e, *outer, 8, 2, 2)
    if sw.n_major:
        sc = sc.transpose(1, 2)
    sc = sc.permute(0, 2, 4, 3, 1, 5).reshape(e, 16 * n16, 2 * k64)
    return data.contiguous(), sc[:, : sw.rows, : sw.cols // 32].contiguous()
