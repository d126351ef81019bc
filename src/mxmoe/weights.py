"""MoEWeights: the experts' weights quantized once to MXFP4, in the layout the kernels read.

Axis legend: E experts, H hidden, I expert inter, N = 2*I (gate and up rows of W13).

Kernel layout (what `MoEWeights` holds):
  w13.data   [E, N, H//2] uint8   e2m1 pairs packed along H (low nibble = even element)
  w13.scales [E, N, H//32] uint8  e8m0 per 32 along H
  w2.data    [E, H, I//2] uint8   packed along I
  w2.scales  [E, H, I//32] uint8
  b13        [E, N] f32 or None;  b2 [E, H] f32 or None
  w13_sw, w2_sw     the same weights in the v2 kernels' layout (kernels/layout.py), built once here
Rows of W13 are always "gate half then up half" here. GPT-OSS (`swiglu_oai`) interleaves gate and
up rows (row 2j gate, 2j+1 up); `from_float` de-interleaves once so the kernel loads one contiguous
gate tile and one up tile, and `w13_model_layout` puts them back for the reference.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch

from mxmoe.fp8_rebase import rebase_weights
from mxmoe.kernels.layout import SwizzledMX, swizzle
from mxmoe.kernels.layout_e4m3 import SwizzledE4M3, swizzle_e4m3
from mxmoe.mx import MXFormat, MXTensor, dequantize, quantize_mxfp4
from mxmoe.shapes import Activation, MoEShape


def _deinterleave(x: torch.Tensor, dim: int) -> torch.Tensor:
    """[.., 2I, ..] rows (g0, u0, g1, u1, ...) -> (g0, g1, ..., u0, u1, ...)."""
    n = x.shape[dim]
    even = torch.arange(0, n, 2, device=x.device)
    return torch.cat([x.index_select(dim, even), x.index_select(dim, even + 1)], dim=dim)


def _interleave(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Inverse of `_deinterleave`."""
    half = x.shape[dim] // 2
    gate, up = x.narrow(dim, 0, half), x.narrow(dim, half, half)
    return torch.stack([gate, up], dim=dim + 1).flatten(dim, dim + 1)


@dataclass(frozen=True, slots=True)
class MoEWeights:
    """Quantized expert weights; build with `from_float` or `random`, never by hand.

    The logical `w13` / `w2` feed the fp32 reference and the older levers; the v2 kernels read `w13_sw` / `w2_sw`,
    permuted once at construction. (Both are kept: the swizzled copy doubles the weights' memory until the older
    levers and the reference read the swizzled layout too.)
    """

    w13: MXTensor
    w2: MXTensor
    b13: torch.Tensor | None
    b2: torch.Tensor | None
    activation: Activation
    e4m3: bool = False
    w13_sw: SwizzledMX = field(init=False, repr=False, compare=False)
    w2_sw: SwizzledMX = field(init=False, repr=False, compare=False)
    w13_e4m3: SwizzledE4M3 | None = field(init=False, repr=False, compare=False)
    w2_e4m3: SwizzledE4M3 | None = field(init=False, repr=False, compare=False)
    w13_dec: SwizzledMX | None = field(init=False, repr=False, compare=False)
    w2_dec: SwizzledMX | None = field(init=False, repr=False, compare=False)
    call_key: tuple = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "w13_sw", swizzle(self.w13.data, self.w13.scales))
        object.__setattr__(self, "w2_sw", swizzle(self.w2.data, self.w2.scales))
        object.__setattr__(self, "w13_e4m3", None)
        object.__setattr__(self, "w2_e4m3", None)
        object.__setattr__(self, "w13_dec", None)
        object.__setattr__(self, "w2_dec", None)
        if self.e4m3:
            self._build_e4m3()
        self._set_call_key()

    def _set_call_key(self) -> None:
        """What moe(config=None) decides from the weights, read once: (E, H, I, activation, bias, e4m3 layout,
        device). Its per-call plan cache keys on it (one attribute read instead of a property per field)."""
        object.__setattr__(self, "call_key", (self.num_experts, self.hidden, self.inter, self.activation,
                                              self.b13 is not None, self.e4m3, self.device))

    def _build_e4m3(self) -> None:
        """W13 and W2 rebased into the e4m3 layout too, for the stages on e4m3 wgmma (Mma.WGMMA_E4M3); opt-in
        (e4m3=True or with_e4m3) because it adds the weights' size again."""
        object.__setattr__(self, "w13_e4m3", swizzle_e4m3(rebase_weights(self.w13)))
        object.__setattr__(self, "w2_e4m3", swizzle_e4m3(rebase_weights(self.w2)))

    @property
    def num_experts(self) -> int:
        return self.w13.data.shape[0]

    @property
    def hidden(self) -> int:
        return self.w2.data.shape[1]

    @property
    def inter(self) -> int:
        return self.w13.data.shape[1] // 2

    @property
    def device(self) -> torch.device:
        return self.w13.data.device

    def to(self, device: torch.device | str) -> MoEWeights:
        """The same weights on `device` (the kernel layout is rebuilt there, a few seconds for a full model)."""
        mv = lambda t: None if t is None else t.to(device)  # noqa: E731
        new = MoEWeights(self.w13.to(device), self.w2.to(device), mv(self.b13), mv(self.b2), self.activation,
                         self.e4m3)
        return new.with_decode_layout() if self.w13_dec is not None else new

    def with_decode_layout(self) -> MoEWeights:
        """The same weights with W13 and W2 also in the N-major block order (kernels/layout.py), which the direct
        decode's stages read (kernels/rules.DIRECT1_N_MAJOR, DIRECT2_N_MAJOR); opt-in: it adds the weights' size
        again."""
        if self.w13_dec is not None:
            return self
        new = copy.copy(self)  # the other layouts are shared, not rebuilt
        object.__setattr__(new, "w13_dec", swizzle(self.w13.data, self.w13.scales, n_major=True))
        object.__setattr__(new, "w2_dec", swizzle(self.w2.data, self.w2.scales, n_major=True))
        return new

    def with_e4m3(self) -> MoEWeights:
        """The same weights with the e4m3 layouts of W13 and W2 built too (Mma.WGMMA_E4M3)."""
        if self.e4m3:
            return self
        new = copy.copy(self)  # the bf16 layouts are shared, not rebuilt
        object.__setattr__(new, "e4m3", True)
        new._build_e4m3()
        new._set_call_key()
        return new

    @classmethod
    def from_float(
        cls,
        w13: torch.Tensor,
        w2: torch.Tensor,
        b13: torch.Tensor | None = None,
        b2: torch.Tensor | None = None,
        activation: Activation | str = Activation.SILU,
    ) -> MoEWeights:
        """Quantize model-layout float weights: w13 [E, 2I, H], w2 [E, H, I], b13 [E, 2I], b2 [E, H].

        For `swiglu_oai` the rows of w13 / b13 are interleaved gate/up as in GPT-OSS.
        """
        activation = Activation(activation)
        if w13.dim() != 3 or w2.dim() != 3:
            raise ValueError(
                f"w13 and w2 must be 3-D [E, 2I, H] / [E, H, I], got {tuple(w13.shape)}, {tuple(w2.shape)}"
            )
        e, n, h = w13.shape
        if n % 2:
            raise ValueError(f"w13 has {n} rows: expected 2*inter (gate and up)")
        i = n // 2
        if tuple(w2.shape) != (e, h, i):
            raise ValueError(f"w2 shape {tuple(w2.shape)} does not match w13 {tuple(w13.shape)}: expected {(e, h, i)}")
        if h % 32 or i % 32:
            raise ValueError(f"hidden={h} and inter={i} must be multiples of 32 (the MX block size)")
        if b13 is not None and tuple(b13.shape) != (e, n):
            raise ValueError(f"b13 shape {tuple(b13.shape)}, expected {(e, n)}")
        if b2 is not None and tuple(b2.shape) != (e, h):
            raise ValueError(f"b2 shape {tuple(b2.shape)}, expected {(e, h)}")
        if activation is Activation.SWIGLU_OAI:
            w13 = _deinterleave(w13, 1)
            b13 = None if b13 is None else _deinterleave(b13, 1)
        return cls(
            w13=quantize_mxfp4(w13.float().contiguous()),
            w2=quantize_mxfp4(w2.float().contiguous()),
            b13=None if b13 is None else b13.float().contiguous(),
            b2=None if b2 is None else b2.float().contiguous(),
            activation=activation,
        )

    @classmethod
    def random(
        cls,
        shape: MoEShape,
        *,
        seed: int = 0,
        device: torch.device | str = "cpu",
        scale_bytes: tuple[int, ...] | None = None,
    ) -> MoEWeights:
        """Random MXFP4 weights drawn directly in packed form (a float copy of a full model would not fit).

        Scales are drawn so that weights have roughly 1/sqrt(K) magnitude, keeping activations O(1).
        """
        # Drawn on the target device: a full model's bytes (9 GB for kimi-k2) take minutes on a CPU.
        dev = torch.device(device)
        g = torch.Generator(device=dev).manual_seed(seed)
        e, h, i = shape.experts, shape.hidden, shape.inter

        def scales(k: int) -> tuple[int, ...]:
            # |e2m1| averages ~2.6; 2.6 * 2**s ~ 1/sqrt(k)  ->  s ~ -log2(2.6 * sqrt(k))
            centre = 127 - round(torch.log2(torch.tensor(2.6 * k**0.5)).item())
            return scale_bytes or (centre - 1, centre, centre + 1)

        def mx(rows: int, k: int) -> MXTensor:
            data = torch.randint(0, 256, (e, rows, k // 2), generator=g, dtype=torch.uint8, device=dev)
            choices = torch.tensor(scales(k), dtype=torch.uint8, device=dev)
            idx = torch.randint(0, len(choices), (e, rows, k // 32), generator=g, device=dev)
            return MXTensor(data, choices[idx], MXFormat.E2M1, axis=2, shape=(e, rows, k))

        w13, w2 = mx(2 * i, h), mx(h, i)
        b13 = b2 = None
        if shape.bias:
            b13 = torch.randn(e, 2 * i, generator=g, device=dev) * 0.1
            b2 = torch.randn(e, h, generator=g, device=dev) * 0.1
        return cls(w13, w2, b13, b2, shape.activation)

    def w13_model_layout(self, experts: torch.Tensor | None = None) -> torch.Tensor:
        """Dequantized W13 in the model's own row order, f32 [E', 2I, H] (E' = the listed experts)."""
        w = dequantize(self.w13.select_experts(experts))
        return _interleave(w, 1) if self.activation is Activation.SWIGLU_OAI else w

    def b13_model_layout(self) -> torch.Tensor | None:
        if self.b13 is None or self.activation is not Activation.SWIGLU_OAI:
            return self.b13
        return _interleave(self.b13, 1)

    def w2_float(self, experts: torch.Tensor | None = None) -> torch.Tensor:
        """Dequantized W2, f32 [E', H, I]."""
        return dequantize(self.w2.select_experts(experts))
