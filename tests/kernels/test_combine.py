"""The rows combine (kernels/combine.py) on the interpreter against torch: the same f32 sum in slot order, then one
round to nearest even into bf16, so the comparison is exact (ROWS_TOL 0)."""

from __future__ import annotations

import pytest
import torch

from mxmoe.kernels.combine import ROWS_COLS, combine_rows

ROWS_TOL = 0.0  # both sides add the same bf16 values in f32 in the same order and round once


@pytest.mark.parametrize("t,topk,h", [(1, 1, 64), (9, 3, 96), (17, 9, ROWS_COLS + 160)])
def test_combine_rows_is_the_slot_order_sum(t, topk, h):
    g = torch.Generator().manual_seed(t * 31 + h)
    rows = (torch.randn(t * topk, h, generator=g) * 4).to(torch.bfloat16)
    rows[0, 3] = float("nan")  # a NaN slot reaches its token only
    want = rows.float().view(t, topk, h)
    acc = want[:, 0].clone()
    for a in range(1, topk):
        acc += want[:, a]
    got = combine_rows(rows, topk)
    assert got.dtype == torch.bfloat16 and got.shape == (t, h)
    assert torch.equal(got.isnan(), acc.to(torch.bfloat16).isnan())
    ok = ~acc.isnan()
    assert (got.float()[ok] - acc.to(torch.bfloat16).float()[ok]).abs().max().item() <= ROWS_TOL


def test_combine_rows_rejects_bad_rows():
    with pytest.raises(ValueError, match="bf16"):
        combine_rows(torch.zeros(4, 8), 2)
    with pytest.raises(ValueError, match="bf16"):
        combine_rows(torch.zeros(5, 8, dtype=torch.bfloat16), 2)
    with pytest.raises(ValueError, match="out must be"):
        combine_rows(torch.zeros(4, 8, dtype=torch.bfloat16), 2, out=torch.empty(3, 8, dtype=torch.bfloat16))
