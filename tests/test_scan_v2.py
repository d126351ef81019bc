"""benchmarks/scan_v2.py's variant list (CPU): each lever moves alone from the base, and a tail variant that scales
group_m keeps the grouping of whole tiles (GROUP_M counts plan blocks, BLOCK_M / tail_m of them a tile)."""

from __future__ import annotations

from bench_script import load

from mxmoe.config import Mma, TileConfig


def _variants():
    return load("scan_v2")._variants


def test_variants_move_one_lever_and_scale_group_m_with_the_tail():
    base = TileConfig(block_m=128, block_n=128, block_k=128, group_m=8, num_warps=8, num_stages=3, mma=Mma.WGMMA)
    out = _variants()(base, 1, "tiles")
    assert base not in out and len(out) == len(set(out))
    assert base.replace(tail_m=64) in out and base.replace(tail_m=64, group_m=16) in out
    assert base.replace(tail_m=32, group_m=32) in out and base.replace(group_m=16) in out
    for v in out:  # every variant differs from the base in the fields of one lever (tail + group_m count as one)
        diff = {f for f in ("block_m", "block_n", "block_k", "group_m", "num_warps", "num_stages", "tail_m")
                if getattr(v, f) != getattr(base, f)}
        assert diff and diff <= {"num_warps", "block_n"} or diff <= {"tail_m", "group_m"} or len(diff) == 1, v


def test_finish_and_none_levers():
    base = TileConfig(block_m=16, block_n=64, block_k=128, num_warps=4, mma=Mma.WGMMA)
    assert _variants()(base, 1, "none") == []
    assert all(v.block_m == 16 for v in _variants()(base, 2, "finish"))
