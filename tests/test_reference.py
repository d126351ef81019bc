"""moe_reference and moe_reference_from_weights.

Oracle: `_per_token_loop`, a float64 loop over (token, slot) pairs with the activations written out by
hand; it shares only `quantize_activation` (the documented fake-quant, pinned to mx.py below).
Tolerance: max_rel 1e-3, rms_rel 1e-4 (`LOOP_TOL`): fp32 vs fp64 accumulation differs by ~1e-7, and a
rare bf16 / e4m3 rounding flip of one intermediate element moves an output by far less than 1e-3 of the
max, while a missing or misplaced rounding step costs ~1e-3 RMS and a wrong gather or weight O(1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch

from mxmoe.mx import dequantize, quantize_mxfp4, quantize_mxfp8
from mxmoe.reference import apply_activation, moe_reference, moe_reference_from_weights, quantize_activation
from mxmoe.shapes import MODELS, Activation, Path
from mxmoe.tolerance import Tolerance, assert_close
from mxmoe.weights import MoEWeights

LOOP_TOL = Tolerance(max_rel=1e-3, rms_rel=1e-4)


def _act64(h: torch.Tensor, activation: Activation) -> torch.Tensor:
    """Stage-1 activation on one model-layout row h [2I], float64, from the model definitions."""
    i = h.numel() // 2
    if activation is Activation.SILU:
        gate, up = h[:i], h[i:]
        return gate / (1 + torch.exp(-gate)) * up
    out = torch.empty(i, dtype=torch.float64)
    for j in range(i):
        g, u = float(h[2 * j]), float(h[2 * j + 1])
        g = min(g, 7.0)
        u = max(min(u, 7.0), -7.0)
        out[j] = g / (1 + math.exp(-1.702 * g)) * (u + 1)
    return out


def _per_token_loop(hidden, w13, w2, b13, b2, ids, weights, activation, path) -> torch.Tensor:
    t, h = hidden.shape
    out = torch.zeros(t, h, dtype=torch.float64)
    x = quantize_activation(hidden.float(), path).double()
    for tok in range(t):
        for slot in range(ids.shape[1]):
            e = int(ids[tok, slot])
            y = w13[e].double() @ x[tok]
            if b13 is not None:
                y = y + b13[e].double()
            act = quantize_activation(_act64(y, activation).float().bfloat16().float()[None], path)[0].double()
            z = w2[e].double() @ act
            if b2 is not None:
                z = z + b2[e].double()
            out[tok] += float(weights[tok, slot]) * z
    return out


@dataclass(frozen=True)
class Case:
    name: str
    e: int
    topk: int
    t: int
    activation: Activation
    bias: bool
    h: int = 64
    i: int = 64


def _float_weights(c: Case, seed: int = 0):
    """Weights with pre-activations of std ~3, so swiglu_oai's clamps at 7 are exercised."""
    g = torch.Generator().manual_seed(seed)
    w13 = torch.randn(c.e, 2 * c.i, c.h, generator=g) * (3 / c.h**0.5)
    w2 = torch.randn(c.e, c.h, c.i, generator=g) / c.i**0.5
    b13 = torch.randn(c.e, 2 * c.i, generator=g) if c.bias else None
    b2 = torch.randn(c.e, c.h, generator=g) * 0.1 if c.bias else None
    return w13, w2, b13, b2


def _routing(c: Case, seed: int = 0):
    g = torch.Generator().manual_seed(seed + 1)
    ids = torch.rand(c.t, c.e, generator=g).argsort(dim=1)[:, : c.topk].to(torch.int32)
    weights = torch.rand(c.t, c.topk, generator=g)
    hidden = torch.randn(c.t, c.h, generator=g).to(torch.bfloat16)
    return hidden, ids, weights


CASES = [
    Case("T=0", 4, 2, 0, Activation.SILU, False),
    Case("one token topk 1", 4, 1, 1, Activation.SWIGLU_OAI, True),
    Case("silu topk 2", 4, 2, 12, Activation.SILU, False),
    Case("silu bias topk 2", 4, 2, 12, Activation.SILU, True),
    Case("oai topk 2", 4, 2, 12, Activation.SWIGLU_OAI, False),
    Case("oai bias topk 2", 4, 2, 12, Activation.SWIGLU_OAI, True),
    Case("silu topk 9", 12, 9, 6, Activation.SILU, True),
    Case("oai topk 9 wide", 10, 9, 4, Activation.SWIGLU_OAI, True, h=96, i=32),
]


@pytest.mark.parametrize("path", list(Path), ids=lambda p: p.value)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_matches_per_token_loop(case: Case, path: Path) -> None:
    w13, w2, b13, b2 = _float_weights(case)
    hidden, ids, weights = _routing(case)
    got = moe_reference(hidden, w13, w2, b13, b2, ids, weights, case.activation, path)
    want = _per_token_loop(hidden, w13, w2, b13, b2, ids, weights, case.activation, path)
    assert got.shape == (case.t, case.h) and got.dtype == torch.float32
    assert_close(got, want, LOOP_TOL, name=f"{case.name} {path.value}")


def test_experts_without_tokens_and_empty() -> None:
    c = Case("", 6, 2, 8, Activation.SILU, True)
    w13, w2, b13, b2 = _float_weights(c)
    hidden, _, weights = _routing(c)
    ids = torch.tensor([[1, 4]] * 8, dtype=torch.int64)  # experts 0, 2, 3, 5 get nothing
    got = moe_reference(hidden, w13, w2, b13, b2, ids, weights, c.activation)
    want = _per_token_loop(hidden, w13, w2, b13, b2, ids, weights, c.activation, Path.A16W4)
    assert_close(got, want, LOOP_TOL)
    # an expert without tokens may hold garbage: it is never read
    w13[0] = float("nan")
    torch.testing.assert_close(moe_reference(hidden, w13, w2, b13, b2, ids, weights, c.activation), got)
    empty = moe_reference(hidden[:0], w13, w2, b13, b2, ids[:0], weights[:0], c.activation, dtype=torch.bfloat16)
    assert empty.shape == (0, c.h) and empty.dtype == torch.bfloat16


def test_interleave_convention() -> None:
    """swiglu_oai reads gate from even rows, up from odd; reading halves instead changes the answer."""
    c = Case("", 4, 2, 8, Activation.SWIGLU_OAI, True)
    w13, w2, b13, b2 = _float_weights(c)
    hidden, ids, weights = _routing(c)
    got = moe_reference(hidden, w13, w2, b13, b2, ids, weights, c.activation)
    assert_close(got, _per_token_loop(hidden, w13, w2, b13, b2, ids, weights, c.activation, Path.A16W4), LOOP_TOL)
    swapped = w13.view(c.e, c.i, 2, c.h).flip(2).reshape(c.e, 2 * c.i, c.h)  # gate <-> up
    other = moe_reference(hidden, swapped, w2, b13, b2, ids, weights, c.activation)
    assert (other - got).abs().max() > 0.1 * got.abs().max()


def test_swiglu_oai_clamps_by_hand() -> None:
    # columns (gate, up) pairs: gate clamped above only, up clamped both sides, then (up + 1)
    h = torch.tensor([[10.0, -10.0, -10.0, 10.0, 1.0, 0.5]])
    got = apply_activation(h, Activation.SWIGLU_OAI)
    sig = lambda v: 1 / (1 + math.exp(-1.702 * v))
    want = torch.tensor([[7 * sig(7) * -6, -10 * sig(-10) * 8, 1 * sig(1) * 1.5]])
    torch.testing.assert_close(got, want)
    silu = apply_activation(torch.tensor([[2.0, -1.0, 3.0, 4.0]]), Activation.SILU)
    torch.testing.assert_close(silu, torch.tensor([[2 / (1 + math.exp(-2)) * 3, -1 / (1 + math.exp(1)) * 4]]))


def test_quantize_activation_is_the_path_rounding() -> None:
    x = torch.randn(5, 64, generator=torch.Generator().manual_seed(0)) * 3
    assert torch.equal(quantize_activation(x, "a16w4"), x.bfloat16().float())
    assert torch.equal(quantize_activation(x, Path.A8W4), dequantize(quantize_mxfp8(x, axis=-1)))
    assert torch.equal(quantize_activation(x, Path.A4W4), dequantize(quantize_mxfp4(x, axis=-1)))
    assert quantize_activation(x, "a4w4").dtype == torch.float32


def test_paths_differ() -> None:
    """The fake-quant is really applied: each path moves the answer by about its element precision."""
    c = Case("", 4, 2, 16, Activation.SILU, False)
    w13, w2, _, _ = _float_weights(c)
    hidden, ids, weights = _routing(c)
    exact = _per_token_loop(hidden.float(), w13, w2, None, None, ids, weights, c.activation, Path.A16W4)
    scale = exact.norm()
    errs = {}
    for path in Path:
        got = moe_reference(hidden, w13, w2, None, None, ids, weights, c.activation, path).double()
        errs[path] = float((got - exact).norm() / scale)
    assert errs[Path.A16W4] < 1e-4 < errs[Path.A8W4] < errs[Path.A4W4] < 0.5


@pytest.mark.parametrize("name", ["tiny", "tiny-oai"])
@pytest.mark.parametrize("path", list(Path), ids=lambda p: p.value)
def test_from_weights_matches_float_weights(name: str, path: Path) -> None:
    """Round trip through MoEWeights (which de-interleaves for the kernels): same answer, bit for bit
    on the weights, since MXFP4-representable floats quantize exactly."""
    shape = MODELS[name]
    qw = MoEWeights.random(shape, seed=3)
    w13, w2 = qw.w13_model_layout(), qw.w2_float()
    b13, b2 = qw.b13_model_layout(), qw.b2
    again = MoEWeights.from_float(w13, w2, b13, b2, shape.activation)
    assert torch.equal(again.w13.data, qw.w13.data) and torch.equal(again.w13.scales, qw.w13.scales)
    c = Case("", shape.experts, shape.topk, 10, shape.activation, shape.bias)
    hidden, ids, weights = _routing(c)
    ids[0] = torch.tensor([3, 0])
    a = moe_reference(hidden, w13, w2, b13, b2, ids, weights, shape.activation, path)
    b = moe_reference_from_weights(hidden, again, ids, weights, path)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize(
    "mutate, exc",
    [
        (lambda k: k.update(topk_ids=k["topk_ids"] + 10), ValueError),
        (lambda k: k.update(topk_ids=k["topk_ids"].float()), TypeError),
        (lambda k: k.update(topk_weights=k["topk_weights"][:, :1]), ValueError),
        (lambda k: k.update(w2=k["w2"][:, :, :32]), ValueError),
        (lambda k: k.update(b13=k["w13"][:, 0]), ValueError),
        (lambda k: k.update(hidden=k["hidden"][:, :32]), ValueError),
        (lambda k: k.update(path="a2w4"), ValueError),
    ],
)
def test_rejects_bad_input(mutate, exc: type) -> None:
    c = Case("", 4, 2, 3, Activation.SILU, True)
    w13, w2, b13, b2 = _float_weights(c)
    hidden, ids, weights = _routing(c)
    kwargs = dict(hidden=hidden, w13=w13, w2=w2, b13=b13, b2=b2, topk_ids=ids, topk_weights=weights,
                  activation=c.activation, path=Path.A16W4)
    mutate(kwargs)
    with pytest.raises(exc):
        moe_reference(**kwargs)
