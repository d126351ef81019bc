"""benchmarks/decode_pattern.py's read kernel on the interpreter: each of its orders must read exactly the bytes of
the direct stage 1's W13 tiles, each once, or its GB/s would not compare with the real kernel's. The oracle is an
xor over the experts' bytes in numpy: xor of every program's output = xor of every byte read (distinct experts, so
no two pairs cancel)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from bench_script import load

from mxmoe.shapes import MODELS, MoEShape
from mxmoe.weights import MoEWeights

dp = load("decode_pattern")

# hidden 320 = 2.5 K steps of 128 (a partial last step, masked), inter 64 = two BN-32 tiles; split 2 -> 2 steps a split
_SHAPE = MoEShape("pattern-tiny", 5, 3, 320, 64, MODELS["deepseek-v3"].activation)


def _xor(t: torch.Tensor) -> int:
    return int(np.bitwise_xor.reduce(t.reshape(-1).numpy().astype(np.int64)))


@pytest.mark.parametrize("order", [dp.LAYOUT, dp.VALUES, dp.CONTIG, dp.NMAJOR])
def test_every_order_reads_each_w13_byte_of_the_pairs_experts_once(order):
    w = MoEWeights.random(_SHAPE, seed=3)
    sw = w.w13_sw
    ids = torch.tensor([[4, 0, 2]], dtype=torch.int32)  # distinct, including the last expert (no read past it)
    bn, bk, split = 32, 128, 2
    num_n = _SHAPE.inter // bn
    steps = math.ceil(math.ceil(_SHAPE.hidden / bk) / split)
    out = torch.zeros(split * ids.numel() * num_n, dtype=torch.int32)
    dp._read_kernel[(ids.numel() * num_n, split)](
        sw.data, sw.scales, ids, out, _SHAPE.experts, _SHAPE.hidden, _SHAPE.inter, sw.n16, sw.k64,
        sw.data.stride(0), sw.scales.stride(0), TOPK=3, ORDER=order, SPLIT_K=split, STEPS=steps, BN=bn, BK=bk)
    want = 0
    for e in ids.view(-1).tolist():
        want ^= _xor(sw.data[e])
        if order in (dp.LAYOUT, dp.NMAJOR):
            want ^= _xor(sw.scales[e])
    assert _xor(out) == want
