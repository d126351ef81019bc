"""The input quantization kernel (kernels/quant.py) on the Triton interpreter against `mxmoe.mx`, and the layer with
the quantization overlapped with the align kernels (`rules.QUANT_OVERLAPS_ALIGN`).

Oracle: `mx.quantize_mxfp8` / `quantize_mxfp4` and `dequantize` (bit-exact: the kernel's values are e4m3 / e2m1 times
a power of two, exact in bf16, so QUANT_TOL is 0). H = 160 and 288 are not multiples of the kernel's 256-column tile:
the masked last tile must hold whole 32-groups.
"""

from __future__ import annotations

import pytest
import torch

from mxmoe.config import MoEConfig, TileConfig
from mxmoe.heuristic import default_config
from mxmoe.kernels import rules
from mxmoe.kernels.common import KernelInput
from mxmoe.kernels.quant import quantize_input
from mxmoe.layer_plan import clear_plans, layer_plan
from mxmoe.moe import moe
from mxmoe.mx import dequantize, quantize_mxfp4, quantize_mxfp8
from mxmoe.problem import make_problem
from mxmoe.shapes import MODELS, Activation, MoEShape, Path

QUANT_TOL = 0.0  # bit-exact: see the module docstring
_MX = {Path.A8W4: quantize_mxfp8, Path.A4W4: quantize_mxfp4}


def _x(t: int, h: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(t, h, generator=g) * torch.exp2(torch.randint(-6, 7, (t, h // 32, 1), generator=g).float()
                                                     ).repeat_interleave(32, 1).reshape(t, h)
    return x.to(torch.bfloat16)


@pytest.mark.parametrize("path", [Path.A8W4, Path.A4W4], ids=lambda p: p.value)
@pytest.mark.parametrize("h", [160, 288])
def test_carriers_are_the_mx_values(path, h):
    x = _x(19, h, h)
    want = dequantize(_MX[path](x.float(), axis=-1)).to(torch.bfloat16)
    got = quantize_input(x, path, bf16=True)
    assert got.data.dtype == torch.bfloat16 and got.scales is None
    torch.testing.assert_close(got.data.float(), want.float(), rtol=QUANT_TOL, atol=QUANT_TOL)
    inplace = x.clone()
    quantize_input(inplace, path, bf16=True, out=KernelInput(inplace, None, path))
    assert torch.equal(inplace, got.data)


@pytest.mark.parametrize("path", [Path.A8W4, Path.A4W4], ids=lambda p: p.value)
def test_bytes_are_the_mx_bytes(path):
    x = _x(17, 288, 5)
    want = _MX[path](x.float(), axis=-1)
    got = quantize_input(x, path)
    assert torch.equal(got.data, want.data) and torch.equal(got.scales, want.scales)


def test_nan_is_kept_and_bad_widths_are_refused():
    x = _x(3, 160, 1)
    x[1, 77] = float("nan")
    got = quantize_input(x, Path.A8W4, bf16=True).data
    assert got[1, 77].isnan() and not got[0].isnan().any() and not got[1, :64].isnan().any()
    with pytest.raises(ValueError, match="multiple of 32"):
        quantize_input(torch.zeros(2, 48, dtype=torch.bfloat16), Path.A8W4, bf16=True)
    with pytest.raises(ValueError, match="unit column stride"):
        quantize_input(torch.zeros(64, 2, dtype=torch.bfloat16).t(), Path.A8W4, bf16=True)


@pytest.mark.parametrize("path", [Path.A16W4, Path.A8W4, Path.A4W4], ids=lambda p: p.value)
def test_overlapped_quantization_is_the_same_layer(path, monkeypatch):
    """Align first, then the quantization (overlapped on a GPU): the same bits as quantizing first, on every path
    (a16w4 has no quantization kernel, so no plan overlaps there)."""
    shape = MoEShape("overlap", 4, 2, 128, 96, Activation.SWIGLU_OAI, bias=True)
    p = make_problem(shape, path, 40, seed=3)
    s = TileConfig(block_m=64, block_n=64, block_k=128, num_warps=4, num_stages=2, group_m=1, mma="wgmma")
    cfg = MoEConfig(s, s)
    monkeypatch.setattr(rules, "QUANT_OVERLAPS_ALIGN", 0)
    clear_plans()
    assert not layer_plan(shape, path, cfg, 40).overlap_quant
    first = moe(p.hidden, p.weights, p.topk_ids, p.topk_weights, path, cfg)
    monkeypatch.setattr(rules, "QUANT_OVERLAPS_ALIGN", 1)
    clear_plans()
    try:
        assert layer_plan(shape, path, cfg, 40).overlap_quant == (path is not Path.A16W4)
        overlapped = moe(p.hidden, p.weights, p.topk_ids, p.topk_weights, path, cfg)
    finally:
        monkeypatch.undo()
        clear_plans()
    assert torch.equal(first, overlapped)


def test_decode_layers_quantize_before_aligning():
    """rules.QUANT_FIRST_MAX_PAIRS: up to 32 (token, slot) pairs an MX layer quantizes first (overlapped it lost
    7-17% on the H100 there); above, it overlaps; a16w4 never launches the kernel."""
    shape = MODELS["gpt-oss-20b"]
    for tokens, path in [(1, Path.A8W4), (8, Path.A4W4), (9, Path.A8W4), (4096, Path.A4W4), (4096, Path.A16W4)]:
        plan = layer_plan(shape, path, default_config(shape, path, tokens), tokens)
        assert plan.overlap_quant == (tokens * shape.topk > rules.QUANT_FIRST_MAX_PAIRS and path is not Path.A16W4)
