"""The fp32 reference MoE layer: the one oracle that tests, benchmarks, the sweep and the guardrail import.

Axis legend: T tokens, E experts, A topk, H hidden, I expert inter, N = 2*I; M the pairs of one expert.

It emulates only what the kernels are specified to round, so a correct kernel differs from it by
summation order alone (tolerance.py sizes the limits from that):
  a16w4  x rounded to bf16; the stage-1 output rounded to bf16 (the kernel writes a bf16 intermediate)
  a8w4   x and the stage-1 output MXFP8-quantized (along H, along I) and dequantized; the stage-1 output is
         rounded to bf16 first (the MX paths quantize the bf16 h a16w4 passes, as a serving stack quantizes a
         bf16 activation; it lets stage 1 store bf16 and round it in place, half the bytes of an fp32 h)
  a4w4   the same with MXFP4
The weights are taken as given (MoEWeights dequantizes its MXFP4 exactly); all arithmetic is fp32 and
the routing weight is applied after the stage-2 bias, as GPT-OSS does.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from mxmoe.mx import dequantize, quantize_mxfp4, quantize_mxfp8
from mxmoe.shapes import Activation, Path
from mxmoe.weights import MoEWeights

SWIGLU_OAI_LIMIT = 7.0
SWIGLU_OAI_ALPHA = 1.702

# expert e -> (w13 [N, H] model layout, w2 [H, I], b13 [N] | None, b2 [H] | None), f32 on the compute device
_ExpertFn = Callable[[int], tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]]


def quantize_activation(x: torch.Tensor, path: Path | str) -> torch.Tensor:
    """Fake-quantize an activation the way the kernels store it at `path`, along the last axis -> f32.

    a16w4: round to bf16. a8w4 / a4w4: MXFP8 / MXFP4 with one e8m0 scale per 32, then dequantize
    (the values are taken as given, with no bf16 rounding first).
    """
    path = Path(path)
    if path is Path.A16W4:
        return x.to(torch.bfloat16).float()
    quantize = quantize_mxfp8 if path is Path.A8W4 else quantize_mxfp4
    return dequantize(quantize(x.float(), axis=-1))


def apply_activation(h: torch.Tensor, activation: Activation | str) -> torch.Tensor:
    """Stage-1 activation on model-layout rows: h [M, N] f32 -> [M, I].

    silu: gate = first I columns, up = last I; silu(gate) * up.
    swiglu_oai: interleaved (column 2j gate j, 2j+1 up j); gate = min(gate, 7), up = clamp(up, -7, 7),
    gate * sigmoid(1.702 * gate) * (up + 1).
    """
    activation = Activation(activation)
    if activation is Activation.SILU:
        gate, up = h.chunk(2, dim=-1)
        return torch.nn.functional.silu(gate) * up
    gate, up = h[..., 0::2], h[..., 1::2]
    gate = gate.clamp(max=SWIGLU_OAI_LIMIT)
    up = up.clamp(min=-SWIGLU_OAI_LIMIT, max=SWIGLU_OAI_LIMIT)
    return gate * torch.sigmoid(SWIGLU_OAI_ALPHA * gate) * (up + 1)


def _check_routing(hidden: torch.Tensor, topk_ids: torch.Tensor, topk_weights: torch.Tensor, e: int) -> None:
    if hidden.dim() != 2:
        raise ValueError(f"hidden must be 2-D [T, H], got shape {tuple(hidden.shape)}")
    if topk_ids.dim() != 2 or topk_ids.shape[0] != hidden.shape[0]:
        raise ValueError(f"topk_ids shape {tuple(topk_ids.shape)}, expected [T={hidden.shape[0]}, A]")
    if tuple(topk_weights.shape) != tuple(topk_ids.shape):
        raise ValueError(f"topk_weights shape {tuple(topk_weights.shape)} != topk_ids {tuple(topk_ids.shape)}")
    if topk_ids.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"topk_ids must be int32 or int64, got {topk_ids.dtype}")
    if topk_ids.numel() and (int(topk_ids.min()) < 0 or int(topk_ids.max()) >= e):
        raise ValueError(
            f"topk_ids hold values in [{int(topk_ids.min())}, {int(topk_ids.max())}], expected [0, {e})"
        )


def _moe(
    hidden: torch.Tensor,
    expert: _ExpertFn,
    num_experts: int,
    topk_ids: torch.Tensor,
    topk_weights: torch.Tensor,
    activation: Activation,
    path: Path,
    dtype: torch.dtype,
) -> torch.Tensor:
    """Loop over the experts that have pairs; each gathers its tokens and runs both stages."""
    t, h = hidden.shape
    device = hidden.device
    out = torch.zeros(t, h, dtype=torch.float32, device=device)  # [T, H]
    if topk_ids.numel() == 0:
        return out.to(dtype)
    x = quantize_activation(hidden.to(torch.bfloat16).float(), path)  # [T, H]: the layer input is bf16 (moe() casts)
    flat = topk_ids.reshape(-1).to(device=device, dtype=torch.long)  # [P]
    w_flat = topk_weights.reshape(-1).to(device=device, dtype=torch.float32)  # [P]
    order = torch.argsort(flat, stable=True)  # [P]
    counts = torch.bincount(flat, minlength=num_experts).tolist()
    start = 0
    for e, m in enumerate(counts):
        if m == 0:
            continue
        pairs = order[start : start + m]  # [M]
        start += m
        tokens = pairs // topk_ids.shape[1]  # [M]
        w13, w2, b13, b2 = expert(e)
        y = x[tokens] @ w13.T  # [M, N]
        if b13 is not None:
            y = y + b13
        act = quantize_activation(apply_activation(y, activation).to(torch.bfloat16).float(), path)  # [M, I]
        z = act @ w2.T  # [M, H]
        if b2 is not None:
            z = z + b2
        out.index_add_(0, tokens, z * w_flat[pairs, None])
    return out.to(dtype)


def moe_reference(
    hidden: torch.Tensor,
    w13: torch.Tensor,
    w2: torch.Tensor,
    b13: torch.Tensor | None,
    b2: torch.Tensor | None,
    topk_ids: torch.Tensor,
    topk_weights: torch.Tensor,
    activation: Activation | str,
    path: Path | str = Path.A16W4,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The MoE layer in fp32 from float weights in the model's layout.

    hidden [T, H]; w13 [E, N, H] (swiglu_oai: rows interleaved gate/up; silu: gate half then up half);
    w2 [E, H, I]; b13 [E, N] | None; b2 [E, H] | None; topk_ids [T, A] int; topk_weights [T, A].
    Weights may live on any device: each hit expert's slice is moved to hidden's device. -> [T, H] dtype.
    """
    activation, path = Activation(activation), Path(path)
    if w13.dim() != 3 or w2.dim() != 3:
        raise ValueError(f"w13 and w2 must be 3-D, got {tuple(w13.shape)} and {tuple(w2.shape)}")
    e, n, h = w13.shape
    if n % 2 or tuple(w2.shape) != (e, h, n // 2):
        raise ValueError(f"w13 {tuple(w13.shape)} and w2 {tuple(w2.shape)}: expected [E, 2I, H] and [E, H, I]")
    if hidden.dim() == 2 and hidden.shape[1] != h:
        raise ValueError(f"hidden has {hidden.shape[1]} columns, the weights have hidden={h}")
    if b13 is not None and tuple(b13.shape) != (e, n):
        raise ValueError(f"b13 shape {tuple(b13.shape)}, expected {(e, n)}")
    if b2 is not None and tuple(b2.shape) != (e, h):
        raise ValueError(f"b2 shape {tuple(b2.shape)}, expected {(e, h)}")
    _check_routing(hidden, topk_ids, topk_weights, e)
    dev = hidden.device

    def expert(i: int):
        f = lambda t: None if t is None else t[i].to(device=dev, dtype=torch.float32)
        return f(w13), f(w2), f(b13), f(b2)

    return _moe(hidden, expert, e, topk_ids, topk_weights, activation, path, dtype)


def moe_reference_from_weights(
    hidden: torch.Tensor,
    weights: MoEWeights,
    topk_ids: torch.Tensor,
    topk_weights: torch.Tensor,
    path: Path | str = Path.A16W4,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """`moe_reference` on quantized MoEWeights, dequantizing one hit expert at a time (a whole model in
    fp32 does not fit on a GPU). hidden [T, H] -> [T, H] dtype."""
    if hidden.dim() == 2 and hidden.shape[1] != weights.hidden:
        raise ValueError(f"hidden has {hidden.shape[1]} columns, the weights have hidden={weights.hidden}")
    _check_routing(hidden, topk_ids, topk_weights, weights.num_experts)
    dev = hidden.device
    b13_all, b2_all = weights.b13_model_layout(), weights.b2

    def expert(i: int):
        idx = torch.tensor([i], device=weights.device)
        w13 = weights.w13_model_layout(experts=idx)[0].to(dev)  # [N, H]
        w2 = weights.w2_float(experts=idx)[0].to(dev)  # [H, I]
        b13 = None if b13_all is None else b13_all[i].to(device=dev, dtype=torch.float32)
        b2 = None if b2_all is None else b2_all[i].to(device=dev, dtype=torch.float32)
        return w13, w2, b13, b2

    return _moe(hidden, expert, weights.num_experts, topk_ids, topk_weights, weights.activation, Path(path), dtype)
