"""OCP Microscaling (MX v1.0) numerics in torch: the bit-exact twin that kernels/mx_tile.py is tested against.

Every MXFP4 weight the kernels read, and every MXFP8 / MXFP4 activation they write in an epilogue, must match
this module bit for bit, so its rules are spelled out here once and pinned by tests/test_mx.py against an
independent ml_dtypes oracle.

Axis legend: K the quantized axis (any position, length a multiple of 32), B = K // 32 blocks along it.
  logical x      [..., K, ...]      float (f16 / bf16 / f32 / f64; values are taken as f32)
  E2M1 data      [..., K // 2, ...] uint8, two elements a byte: low nibble = element 2j, high = element 2j+1
  E4M3 data      [..., K, ...]      uint8 bit pattern of OCP e4m3fn
  scales         [..., B, ...]      uint8 e8m0: byte s means 2**(s - 127); 255 is NaN

Rules per block of 32 (OCP MX v1.0 section 6.3), and the choices the spec leaves open:
  shared = floor(log2(amax)) - emax_elem (2 for e2m1, 8 for e4m3), clamped to [-127, 127]; taken from
    torch.frexp so f32 subnormals are exact.  An all-zero block gets scale byte 0 (2**-127), the smallest
    scale, so that zeros stay zeros and requantizing a dequantized zero block gives the same bytes.
  element = x * 2**-shared rounded to nearest, ties to even.  Overflow saturates (e2m1 at +-6, e4m3 at
    +-448: the OCP "saturating" conversion mode, so no element is ever NaN), and the sign is kept, so a
    negative value (or -0) that rounds to zero is stored as -0, as ml_dtypes and the hardware casts do.
  Non-finite input raises by default; nan_policy="propagate" marks its block with scale byte 255 (NaN),
    which makes every element of that block dequantize to NaN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

import torch

BLOCK = 32
_EMAX = {"e2m1": 2, "e4m3": 8}
_E4M3_MAX = 448.0
_E2M1_MAX = 6.0
_E2M1_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0)
_INPUT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_NAN_POLICIES = ("raise", "propagate")


class MXFormat(str, Enum):  # noqa: UP042 -- same (str, Enum) pattern as shapes.Path and config.Mma
    """Element format of an MX block; the scale is always e8m0."""

    E2M1 = "e2m1"
    E4M3 = "e4m3"


def _torch_dtype(name: str) -> torch.dtype:
    """Look up a low-precision torch dtype lazily, so older torch fails only when the view is asked for."""
    if not hasattr(torch, name):
        raise RuntimeError(f"torch {torch.__version__} has no torch.{name}; use the uint8 fields instead")
    return getattr(torch, name)


@dataclass(frozen=True, slots=True)
class MXTensor:
    """An MX-quantized tensor in the layout the kernels load: packed elements and e8m0 scales as uint8.

    `shape` is the logical (dequantized) shape and `axis` its quantized dimension; both are needed because
    the packed data alone cannot tell an E2M1 [.., K/2] tensor from an E4M3 one.
    """

    data: torch.Tensor
    scales: torch.Tensor
    fmt: MXFormat
    axis: int
    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "fmt", MXFormat(self.fmt))
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        shape, axis = self.shape, self.axis
        if not 0 <= axis < len(shape):
            raise ValueError(f"axis={axis} must be a non-negative index into the logical shape {shape}")
        if shape[axis] % BLOCK:
            raise ValueError(f"logical shape {shape}: axis {axis} has length {shape[axis]}, "
                             "not a multiple of the MX block size 32")
        for name, t in (("data", self.data), ("scales", self.scales)):
            if t.dtype != torch.uint8:
                raise ValueError(f"MXTensor.{name} must be uint8, got {t.dtype}")
        per_byte = 2 if self.fmt is MXFormat.E2M1 else 1
        for name, t, div in (("data", self.data, per_byte), ("scales", self.scales, BLOCK)):
            want = shape[:axis] + (shape[axis] // div,) + shape[axis + 1 :]
            if tuple(t.shape) != want:
                raise ValueError(f"MXTensor.{name} shape {tuple(t.shape)}, expected {want} for "
                                 f"{self.fmt.value} of logical shape {shape} quantized along axis {axis}")
        if self.data.device != self.scales.device:
            raise ValueError(f"data on {self.data.device} but scales on {self.scales.device}")

    @property
    def device(self) -> torch.device:
        return self.data.device

    @property
    def numel(self) -> int:
        """Logical element count (what dequantize returns)."""
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """Bytes held, data plus scales: the weight-stream size that spec.py's byte count models."""
        return self.data.nbytes + self.scales.nbytes

    def select_experts(self, idx: torch.Tensor | None) -> MXTensor:
        """Keep only the listed experts (dim 0), so the reference dequantizes just the ones a batch hits."""
        if idx is None:
            return self
        if self.axis == 0:
            raise ValueError("select_experts indexes dim 0, which is the quantized axis here")
        idx = idx.to(device=self.device, dtype=torch.long).reshape(-1)
        return MXTensor(self.data.index_select(0, idx), self.scales.index_select(0, idx), self.fmt,
                        axis=self.axis, shape=(idx.numel(), *self.shape[1:]))

    def to(self, device: torch.device | str) -> MXTensor:
        return MXTensor(self.data.to(device), self.scales.to(device), self.fmt,
                        axis=self.axis, shape=self.shape)

    def data_as_torch(self) -> torch.Tensor:
        """Elements viewed as torch's own MX element dtype (no copy), for torch._scaled_mm and friends."""
        name = "float4_e2m1fn_x2" if self.fmt is MXFormat.E2M1 else "float8_e4m3fn"
        return self.data.view(_torch_dtype(name))

    def scales_as_torch(self) -> torch.Tensor:
        return self.scales.view(_torch_dtype("float8_e8m0fnu"))

    @classmethod
    def from_torch(cls, data: torch.Tensor, scales: torch.Tensor, axis: int = -1) -> MXTensor:
        """Inverse of data_as_torch / scales_as_torch; the logical shape follows from data's dtype."""
        axis = _normalise_axis(axis, data.dim())
        if scales.dtype != _torch_dtype("float8_e8m0fnu"):
            raise ValueError(f"scales must be torch.float8_e8m0fnu, got {scales.dtype}")
        shape = tuple(data.shape)
        if data.dtype == _torch_dtype("float4_e2m1fn_x2"):
            fmt, shape = MXFormat.E2M1, shape[:axis] + (2 * shape[axis],) + shape[axis + 1 :]
        elif data.dtype == _torch_dtype("float8_e4m3fn"):
            fmt = MXFormat.E4M3
        else:
            raise ValueError(f"data must be torch.float4_e2m1fn_x2 or torch.float8_e4m3fn, got {data.dtype}")
        return cls(data.view(torch.uint8), scales.view(torch.uint8), fmt, axis=axis, shape=shape)


def _normalise_axis(axis: int, ndim: int) -> int:
    if ndim == 0:
        raise ValueError("cannot MX-quantize a 0-d tensor: it has no axis to block along")
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis={axis} is out of range for a {ndim}-d tensor")
    return axis % ndim


def pow2(exp: torch.Tensor) -> torch.Tensor:
    """2**exp as f32 built from its bits, exact for exp in [-126, 127] on every device (no pow/exp2 call)."""
    return ((exp.to(torch.int32) + 127) << 23).view(torch.float32)


def unpack_e2m1(data: torch.Tensor) -> torch.Tensor:
    """uint8 [..., K/2] packed e2m1 pairs (low nibble first, as `quantize_mxfp4` packs the last axis) -> int64
    [..., K] codes (bit 3 the sign)."""
    d = data.to(torch.int64)
    return torch.stack([d & 15, d >> 4], dim=-1).flatten(-2)


def _quantize(x: torch.Tensor, fmt: MXFormat, axis: int, nan_policy: str) -> MXTensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in _INPUT_DTYPES:
        raise TypeError(f"cannot MX-quantize dtype {x.dtype}: expected float16, bfloat16, float32 or float64")
    if nan_policy not in _NAN_POLICIES:
        raise ValueError(f"nan_policy={nan_policy!r}, expected one of {_NAN_POLICIES}")
    axis = _normalise_axis(axis, x.dim())
    shape = tuple(x.shape)
    k = shape[axis]
    if k % BLOCK:
        raise ValueError(f"axis {axis} has length {k}, not a multiple of the MX block size 32 "
                         f"(input shape {shape})")
    x = x.to(torch.float32)  # f64 -> f32 rounds once here; everything after is exact
    finite = torch.isfinite(x)
    all_finite = bool(finite.all())
    if not all_finite:
        if nan_policy == "raise":
            n_bad = int((~finite).sum())
            first = tuple(int(i) for i in torch.nonzero(~finite)[0])
            raise ValueError(f"input has {n_bad} NaN/Inf value(s); first at index {first} = {x[first].item()}"
                             " (pass nan_policy='propagate' to mark their blocks NaN)")
        x = torch.where(finite, x, torch.zeros_like(x))
    blocked = shape[:axis] + (k // BLOCK, BLOCK) + shape[axis + 1 :]
    xb = x.reshape(blocked)  # [..., B, 32, ...]
    amax = xb.abs().amax(dim=axis + 1)  # [..., B, ...]
    _, e = torch.frexp(amax)  # amax = m * 2**e, m in [0.5, 1): floor(log2(amax)) = e - 1
    shared = (e - 1 - _EMAX[fmt.value]).clamp(-127, 127)
    scale = (shared + 127).to(torch.uint8)
    scale = torch.where(amax == 0, torch.zeros_like(scale), scale)
    if not all_finite:
        bad = ~finite.reshape(blocked).all(dim=axis + 1)
        scale = torch.where(bad, torch.full_like(scale, 255), scale)
    # For f32 input shared is in [-127, 125], so 2**-shared is a normal f32 and the product is exact
    # unless it lands below 2**-126, far under half the smallest element step, where it rounds to +-0 anyway.
    v = (xb * pow2(-shared).unsqueeze(axis + 1)).reshape(shape)
    if fmt is MXFormat.E4M3:
        # clamp first: torch's own cast is device-dependent out of range (465 -> 0x7E on CPU torch 2.13,
        # 0x7F = NaN on H100 torch 2.11); in range it is RNE and matches ml_dtypes (tests/test_mx.py)
        data = v.clamp(-_E4M3_MAX, _E4M3_MAX).to(torch.float8_e4m3fn).view(torch.uint8)
    else:
        data = _pack_e2m1(_encode_e2m1(v), axis)
    return MXTensor(data, scale, fmt, axis=axis, shape=shape)


def _encode_e2m1(v: torch.Tensor) -> torch.Tensor:
    """Round f32 values to e2m1 codes (nearest, ties to even, saturate at 6, keep the sign)."""
    mag = v.abs().clamp(max=_E2M1_MAX)
    # grid steps are 0.5 below 2, 1 in [2, 4), 2 in [4, 6]; torch.round is half-to-even, and an even
    # multiple of the step is an even code, so rounding in step units is the OCP rounding
    code = torch.where(mag < 2, torch.round(mag * 2),
                       torch.where(mag < 4, torch.round(mag) + 2, torch.round(mag / 2) + 4))
    return code.to(torch.uint8) | (torch.signbit(v).to(torch.uint8) << 3)


def _pack_e2m1(codes: torch.Tensor, axis: int) -> torch.Tensor:
    pairs = codes.reshape(codes.shape[:axis] + (codes.shape[axis] // 2, 2) + codes.shape[axis + 1 :])
    return pairs.select(axis + 1, 0) | (pairs.select(axis + 1, 1) << 4)


def quantize_mxfp4(x: torch.Tensor, axis: int = -1, nan_policy: str = "raise") -> MXTensor:
    """MXFP4 (e2m1 elements, e8m0 scale per 32 along `axis`), as the W13 / W2 weights are stored."""
    return _quantize(x, MXFormat.E2M1, axis, nan_policy)


def quantize_mxfp8(x: torch.Tensor, axis: int = -1, nan_policy: str = "raise") -> MXTensor:
    """MXFP8 (e4m3fn elements, e8m0 scale per 32 along `axis`), as a8w4 activations are stored."""
    return _quantize(x, MXFormat.E4M3, axis, nan_policy)


def dequantize(q: MXTensor) -> torch.Tensor:
    """Exact f32 value of every element, [q.shape]: code value * 2**(scale - 127), NaN where scale is 255."""
    if q.fmt is MXFormat.E4M3:
        vals = q.data.view(torch.float8_e4m3fn).to(torch.float32)
    else:
        table = torch.tensor(_E2M1_VALUES, dtype=torch.float32, device=q.device)
        low, high = (q.data & 0xF).long(), (q.data >> 4).long()
        vals = torch.stack([table[low], table[high]], dim=q.axis + 1).flatten(q.axis, q.axis + 1)
    s = q.scales.to(torch.int32)
    # byte 0 is 2**-127, an f32 subnormal (bits 0x00400000); byte 255 is NaN; the rest are b << 23
    bits = torch.where(s == 0, torch.full_like(s, 0x00400000), s << 23)
    bits = torch.where(s == 255, torch.full_like(s, 0x7FC00000), bits)
    scale = bits.view(torch.float32)
    k = q.shape[q.axis]
    blocked = q.shape[: q.axis] + (k // BLOCK, BLOCK) + q.shape[q.axis + 1 :]
    # products stay >= 2**-136 (smallest e4m3 subnormal times 2**-127), above the f32 subnormal floor: exact
    return (vals.reshape(blocked) * scale.unsqueeze(q.axis + 1)).reshape(q.shape)
