"""benchmarks/fp8_ceiling.py without a GPU: its routing-to-groups step against a hand count, and a clear refusal to
time anything. The grouped GEMMs themselves run only on the device."""

from __future__ import annotations

import pytest
import torch
from bench_script import load


def test_groups_are_the_hit_experts_padded_to_the_alignment():
    ids = torch.tensor([[3, 0], [3, 5], [3, 0]], dtype=torch.int32)  # expert 0: 2 pairs, 3: 3, 5: 1; 1, 2, 4 idle
    hit, offs = load("fp8_ceiling").expert_groups(ids, experts=6, align=16)
    assert hit.tolist() == [0, 3, 5]
    assert offs.dtype == torch.int32 and offs.tolist() == [16, 32, 48]
    hit, offs = load("fp8_ceiling").expert_groups(ids, experts=6, align=1)
    assert offs.tolist() == [2, 5, 6]  # unpadded: the pair counts' running sum


def test_groups_pad_each_expert_by_less_than_the_alignment():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 40, (300, 4), generator=g, dtype=torch.int32)
    hit, offs = load("fp8_ceiling").expert_groups(ids, experts=40)
    sizes = torch.diff(offs, prepend=torch.zeros(1, dtype=torch.int32))
    counts = torch.bincount(ids.flatten().long(), minlength=40)[hit]
    assert (sizes % 16 == 0).all() and (sizes >= counts).all() and (sizes - counts < 16).all()


def test_groups_refuse_bad_ids():
    mod = load("fp8_ceiling")
    with pytest.raises(ValueError, match="out of range"):
        mod.expert_groups(torch.tensor([[0, 7]]), experts=4)
    with pytest.raises(ValueError, match="T, topk"):
        mod.expert_groups(torch.tensor([0, 1]), experts=4)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is the no-GPU path")
def test_without_a_gpu_it_says_it_cannot_time():
    with pytest.raises(SystemExit, match="needs a GPU"):
        load("fp8_ceiling").main(["--model", "deepseek-v3", "--tokens", "16"])
