"""compare / assert_close and the TOLERANCES table.

Oracle: hand-computed max and RMS relative errors on small tensors; for the table, the reference run in
a different accumulation order (the H and I axes reversed, which MX blocks survive intact) with a bf16
output, i.e. a "kernel" whose only differences are the ones the table's comments allow for.
"""

from __future__ import annotations

import math

import pytest
import torch

from mxmoe.problem import make_problem
from mxmoe.reference import moe_reference
from mxmoe.shapes import MODELS, Activation, MoEShape, Path
from mxmoe.tolerance import STAGES, TOLERANCES, CloseReport, Tolerance, assert_close, compare

LOOSE = Tolerance(max_rel=1.0, rms_rel=1.0)


def test_numbers_by_hand() -> None:
    e = torch.tensor([[1.0, -2.0], [4.0, 0.0]])
    a = torch.tensor([[1.0, -2.0], [3.0, 0.5]])
    r = compare(a, e, Tolerance(0.3, 0.3))
    assert isinstance(r, CloseReport) and r.ok
    assert r.max_rel == pytest.approx(1 / 4)
    assert r.rms_rel == pytest.approx(math.sqrt(1 + 0.25) / math.sqrt(1 + 4 + 16))
    assert r.worst == (1, 0) and r.worst_actual == 3.0 and r.worst_expected == 4.0
    assert r.n_nonfinite == 0
    assert not compare(a, e, Tolerance(0.2, 1.0)).ok  # max fails
    assert not compare(a, e, Tolerance(1.0, 0.2)).ok  # rms fails


def test_computed_in_float64() -> None:
    # bf16 inputs whose f32 difference would round: the report must see the exact difference
    e = torch.tensor([1.0, 256.0], dtype=torch.bfloat16)
    a = torch.tensor([1.0078125, 256.0], dtype=torch.bfloat16)
    assert compare(a, e, LOOSE).max_rel == pytest.approx(0.0078125 / 256)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nonfinite_actual_always_fails(bad: float) -> None:
    e = torch.ones(3, 4)
    a = e.clone()
    a[2, 1] = bad
    r = compare(a, e, Tolerance(float("inf"), float("inf")))
    assert not r.ok and r.n_nonfinite == 1 and r.worst == (2, 1)
    assert "NaN/Inf" in r.message and "(2, 1)" in r.message


def test_nan_filled_output_fails() -> None:
    """The sweep's NaN fill: an unwritten output never passes, even against an all-zero reference."""
    r = compare(torch.full((4, 8), float("nan")), torch.zeros(4, 8), LOOSE)
    assert not r.ok and r.n_nonfinite == 32


def test_nonfinite_expected_fails() -> None:
    e = torch.tensor([1.0, float("nan")])
    r = compare(torch.tensor([1.0, 1.0]), e, LOOSE)
    assert not r.ok and "reference" in r.message


def test_shape_mismatch_fails() -> None:
    r = compare(torch.zeros(2, 3), torch.zeros(3, 2), LOOSE)
    assert not r.ok and "shape" in r.message


def test_zero_expected() -> None:
    assert compare(torch.zeros(5), torch.zeros(5), Tolerance(0.0, 0.0)).ok
    assert not compare(torch.full((5,), 1e-30), torch.zeros(5), Tolerance(0.1, 0.1)).ok


def test_empty_passes() -> None:
    r = compare(torch.zeros(0, 4), torch.zeros(0, 4), Tolerance(0.0, 0.0))
    assert r.ok and r.worst is None


def test_assert_close_names_the_coordinates() -> None:
    e = torch.zeros(3, 5)
    e[0, 0] = 1.0
    a = e.clone()
    a[1, 3] = 0.5
    with pytest.raises(AssertionError, match=r"stage1 out: out of tolerance.*\(1, 3\)"):
        assert_close(a, e, path=Path.A16W4, stage="stage1", name="stage1 out")
    report = assert_close(a, e, Tolerance(0.6, 1.0))
    assert report.ok


def test_assert_close_lookup_errors() -> None:
    x = torch.ones(2)
    with pytest.raises(ValueError, match="tol or both"):
        assert_close(x, x, path="a16w4")
    with pytest.raises(ValueError, match="stage"):
        assert_close(x, x, path="a16w4", stage="stage3")
    with pytest.raises(ValueError):
        assert_close(x, x, path="a2w4", stage="layer")
    assert_close(x, x, path="a8w4", stage="layer")  # string path is accepted


def test_tolerance_validates() -> None:
    with pytest.raises(ValueError):
        Tolerance(-1.0, 0.1)
    with pytest.raises(ValueError):
        Tolerance(0.1, float("nan"))


def test_table_is_complete_and_ordered() -> None:
    assert set(TOLERANCES) == {(p, s) for p in Path for s in STAGES}
    for stage in STAGES:
        a16, a8, a4 = (TOLERANCES[(p, stage)] for p in (Path.A16W4, Path.A8W4, Path.A4W4))
        # fewer activation bits never means a tighter limit
        assert a16.max_rel <= a8.max_rel <= a4.max_rel and a16.rms_rel <= a8.rms_rel <= a4.rms_rel
    for tol in TOLERANCES.values():
        assert tol.rms_rel <= tol.max_rel < 1


def _reordered_kernel_like(p) -> torch.Tensor:
    """The reference with H and I reversed (other fp32 summation orders; every MX block maps onto a
    reversed block, so the quantized values are the same) and a bf16 output, as the kernel returns."""
    w, shape = p.weights, p.shape
    w13, w2, b13 = w.w13_model_layout(), w.w2_float(), w.b13_model_layout()
    e, i = shape.experts, shape.inter
    if shape.activation is Activation.SWIGLU_OAI:
        rev = lambda x: x.view(e, i, 2, *x.shape[2:]).flip(1).reshape(x.shape)  # reverse j, keep (g, u)
    else:
        rev = lambda x: x.view(e, 2, i, *x.shape[2:]).flip(2).reshape(x.shape)  # reverse within halves
    out = moe_reference(
        p.hidden.flip(-1), rev(w13).flip(-1), w2.flip(-1), None if b13 is None else rev(b13), w.b2,
        p.topk_ids, p.topk_weights, shape.activation, p.path,
    )
    return out.to(torch.bfloat16)


@pytest.mark.parametrize("path", list(Path), ids=lambda p: p.value)
@pytest.mark.parametrize(
    "shape",
    [MODELS["tiny"], MODELS["tiny-oai"], MoEShape("mid", 8, 3, 256, 128, Activation.SILU, shared_expert=True)],
    ids=lambda s: s.name,
)
def test_tolerances_cover_reordered_oracle(shape: MoEShape, path: Path) -> None:
    """The layer limits admit a kernel that differs only in summation order and output rounding, with
    at least 2x headroom on the a16w4 limits (bf16 output rounding is the whole error there)."""
    tol = TOLERANCES[(path, "layer")]
    for seed, tokens in ((0, 1), (1, 16), (2, 64)):
        p = make_problem(shape, path, tokens, seed=seed)
        report = assert_close(_reordered_kernel_like(p), p.reference(), path=path, stage="layer")
        if path is Path.A16W4:
            assert report.max_rel < tol.max_rel / 2 and report.rms_rel < tol.rms_rel / 2, report.message
