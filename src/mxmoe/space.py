"""Candidate spaces: every TileConfig a sweep may try, per stage, before the legality filter.

No torch or triton here. A space is the cartesian product of one range per TileConfig field; it is
deliberately blind to the shape and the device, so the legality filter (`mxmoe.legality.check`)
decides what a given problem can launch and records why the rest cannot.

| field       | default           | wide                          |
|-------------|-------------------|-------------------------------|
| block_m     | 16, 32, 64, 128   | 16, 32, 64, 128, 256          |
| block_n     | 64, 128           | 64, 128, 256                  |
| block_k     | 128, 256          | 64, 128, 256, 512             |
| group_m     | 1, 8              | 1, 4, 8, 16                   |
| num_warps   | 4, 8              | 4, 8 (a warpgroup or two)     |
| num_stages  | 3, 4              | 2, 3, 4, 5                    |
| mma         | wgmma             | wgmma                         |
| stage 1 (combine, split_k) | (atomic, 1), (atomic, 4) | (atomic, 1/2/4/8) |
| stage 2 (combine, split_k) | (atomic, 1), (slots, 1), (atomic, 4) | (atomic, 1/2/4/8), (slots, 1) |
| tail_m (stage 1 / stage 2) | 0, 32, 64 / 0, 32, 64 | 0, 32, 64 / 0, 32, 64 |

Stage 1 has only the atomic combine value: its output is one row per pair, and its split-K partial sums meet
(in the last split to arrive) before the fused activation. Here split_k > 1 only pairs with the atomic combine:
the v2 kernels also take slots with split_k > 1 (a slot row per split), which measured slower at decode
(heuristic.SLOTS_MAX_ROWS). The baseline (`heuristic.default_config`) is not guaranteed to
be in a space (its prefill stage 2 takes BLOCK_M=256, its tiny-shape BLOCK_K 64): a sweep adds it. A tail_m is
only paired with a BLOCK_M above it (TileConfig.tail_m; the default space takes the tails the heuristic takes,
where the H100 measured them, heuristic.TAIL_*), and legality drops it beside the slots combine.

Order: sorted by `space_sort_key` (block_m, block_n, block_k, group_m, num_warps, num_stages,
mma value, combine value, split_k, tail_m), so a space is identical across processes and releases.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import cache

from mxmoe.config import Combine, Mma, TileConfig
from mxmoe.shapes import Path

SPACE_NAMES = ("default", "wide")


@dataclass(frozen=True, slots=True)
class SpaceRanges:
    """The per-field ranges a space is the product of."""

    block_m: tuple[int, ...]
    block_n: tuple[int, ...]
    block_k: tuple[int, ...]
    group_m: tuple[int, ...]
    num_warps: tuple[int, ...]
    num_stages: tuple[int, ...]
    mma: tuple[Mma, ...]
    stage1_combine_split: tuple[tuple[Combine, int], ...]
    stage2_combine_split: tuple[tuple[Combine, int], ...]
    stage1_tail: tuple[int, ...] = (0,)
    stage2_tail: tuple[int, ...] = (0,)


# The v2 kernels only: they beat the v1 levers at every point measured (1.33-3.00x on the H100,
# results/h100/2026-12-06_v2_vs_v1_dce7fba.log), which stay launchable by an explicit config.
_MMAS = (Mma.WGMMA,)

RANGES: dict[str, SpaceRanges] = {
    "default": SpaceRanges(
        block_m=(16, 32, 64, 128),
        block_n=(64, 128),
        block_k=(128, 256),
        group_m=(1, 8),
        num_warps=(4, 8),
        num_stages=(3, 4),
        mma=_MMAS,
        stage1_combine_split=((Combine.ATOMIC, 1), (Combine.ATOMIC, 4)),
        stage2_combine_split=((Combine.ATOMIC, 1), (Combine.SLOTS, 1), (Combine.ROWS, 1), (Combine.ATOMIC, 4)),
        stage1_tail=(0, 32, 64),
        stage2_tail=(0, 32, 64),
    ),
    "wide": SpaceRanges(
        block_m=(16, 32, 64, 128, 256),
        block_n=(64, 128, 256),
        block_k=(64, 128, 256, 512),
        group_m=(1, 4, 8, 16),
        num_warps=(4, 8),
        num_stages=(2, 3, 4, 5),
        mma=_MMAS,
        stage1_combine_split=((Combine.ATOMIC, 1), (Combine.ATOMIC, 2), (Combine.ATOMIC, 4), (Combine.ATOMIC, 8)),
        stage2_combine_split=(
            (Combine.ATOMIC, 1), (Combine.ATOMIC, 2), (Combine.ATOMIC, 4), (Combine.ATOMIC, 8), (Combine.SLOTS, 1),
            (Combine.ROWS, 1),
        ),
        stage1_tail=(0, 32, 64),
        stage2_tail=(0, 32, 64),
    ),
}


def space_sort_key(cfg: TileConfig) -> tuple:
    """The documented order of every space: tile sizes first, then schedule, then levers."""
    return (cfg.block_m, cfg.block_n, cfg.block_k, cfg.group_m, cfg.num_warps, cfg.num_stages,
            cfg.mma.value, cfg.combine.value, cfg.split_k, cfg.tail_m)


def _check_stage(stage: int) -> None:
    if stage not in (1, 2) or isinstance(stage, bool):
        raise ValueError(f"stage must be 1 or 2, got {stage!r}")


@cache
def _build(stage: int, name: str) -> tuple[TileConfig, ...]:
    r = RANGES[name]
    levers = r.stage2_combine_split if stage == 2 else r.stage1_combine_split
    tails = r.stage2_tail if stage == 2 else r.stage1_tail
    configs = {
        TileConfig(block_m=bm, block_n=bn, block_k=bk, group_m=gm, num_warps=nw, num_stages=ns, mma=mma,
                   combine=comb, split_k=sk, tail_m=tail)
        for bm, bn, bk, gm, nw, ns, mma, (comb, sk), tail in itertools.product(
            r.block_m, r.block_n, r.block_k, r.group_m, r.num_warps, r.num_stages, r.mma, levers, tails)
        if tail < bm
    }
    return tuple(sorted(configs, key=space_sort_key))


def candidate_space(stage: int, path: Path | str, name: str = "default") -> tuple[TileConfig, ...]:
    """Every candidate TileConfig of one stage, sorted by `space_sort_key`, without duplicates.

    The ranges are the same for every path, but a8w4 takes every tile twice: on bf16 carriers and on e4m3 wgmma
    (the tuning harness builds a8w4 weights with their e4m3 layouts).
    """
    _check_stage(stage)
    path = Path(path)  # validates: ValueError names the bad value
    if name not in RANGES:
        raise ValueError(f"unknown space {name!r}; known: {', '.join(SPACE_NAMES)}")
    if takes_e4m3(path):  # and every tile again on e4m3 wgmma (Mma.WGMMA_E4M3)
        return _with_e4m3(_build(stage, name))
    return _build(stage, name)


def takes_e4m3(path: Path | str) -> bool:
    """Whether `path`'s spaces hold e4m3 tiles (a8w4): a problem that may run them (a sweep's candidates, a tuned
    table's choice) needs its weights' e4m3 layouts (MoEWeights.with_e4m3)."""
    return Path(path) is Path.A8W4


@cache
def _with_e4m3(space: tuple[TileConfig, ...]) -> tuple[TileConfig, ...]:
    return tuple(sorted({*space, *(c.replace(mma=Mma.WGMMA_E4M3) for c in space)}, key=space_sort_key))
