"""The default tile choice: the documented rules of `mxmoe.heuristic`, pinned on the real shapes.

Oracle: the rules as the module docstring states them (hand-computed grids), and the legality filter.
"""

import pytest

from mxmoe import legality
from mxmoe.heuristic import SLOTS_MAX_ROWS, SPLIT_K_MAX, SPLIT_K_MAX_CTAS, SPLIT_K_MIN_ITERS, default_config
from mxmoe.shapes import MODELS, TOKEN_GRID, Path, get_shape


@pytest.mark.parametrize(("model", "tokens", "stage1_split", "stage2_split"), [
    # v2 tiles: stage 1 N 64 (gate + up), stage 2 N 128; K steps of 128: 7168 -> 56, 2880 -> 23, 2048 -> 16, 256 -> 2
    ("deepseek-v3-tp8", 1, 8, 1),  # stage 1: 56 / 8 = 7 steps, 9 x 4 = 36 CTAs -> 288; stage 2: 2 steps, no split
    ("deepseek-v3-tp8", 4, 8, 1),  # 36 x 4 = 144 -> 1152
    ("deepseek-v3-tp8", 16, 4, 1),  # 144 x 4 = 576 -> 2304: x 8 would pass 2304 CTAs
    ("deepseek-v3-tp8", 64, 2, 1),  # 257 x 4 = 1028 -> 2056
    ("gpt-oss-20b", 1, 2, 1),  # 23 / 2 = 11 steps (23 / 4 = 5 < 7); stage 2 never splits
    ("gpt-oss-20b", 16, 1, 1),  # 32 x 45 = 1440: x 2 would pass 2304
    ("deepseek-v3", 1, 8, 1),
])
def test_decode_splits_k_where_the_grid_is_small(model, tokens, stage1_split, stage2_split):
    cfg = default_config(get_shape(model), Path.A16W4, tokens)
    assert (cfg.stage1.split_k, cfg.stage2.split_k) == (stage1_split, stage2_split)


def test_split_k_stops_at_the_k_blocks_and_the_cap():
    tiny = default_config(MODELS["tiny"], Path.A16W4, 1, interpreter=True)  # K = 64 = one BLOCK_K
    assert (tiny.stage1.split_k, tiny.stage2.split_k) == (1, 1)
    for name, shape in MODELS.items():
        for t in TOKEN_GRID:
            cfg = default_config(shape, Path.A16W4, t)
            for tile in (cfg.stage1, cfg.stage2):
                assert tile.split_k <= SPLIT_K_MAX, (name, t)
                assert tile.split_k == 1 or tile.block_m == 16, (name, t)  # prefill never splits
                k = shape.hidden if tile is cfg.stage1 else shape.inter
                assert tile.split_k == 1 or -(-k // tile.block_k) // tile.split_k >= SPLIT_K_MIN_ITERS, (name, t)
    assert SPLIT_K_MAX_CTAS >= 4 * 132  # a split never starves the H100's SMs


def test_slots_combine_only_where_the_finish_is_small():
    """Stage 2 takes the in-kernel slots combine exactly at decode points whose N-column finish sums at most
    SLOTS_MAX_ROWS rows (T x A); every other point keeps the atomic combine."""
    for name, shape in MODELS.items():
        for t in TOKEN_GRID:
            s2 = default_config(shape, Path.A16W4, t).stage2
            small = s2.block_m == 16 and t * shape.topk <= SLOTS_MAX_ROWS
            assert (s2.combine.value == "slots") == small, (name, t)


@pytest.mark.parametrize("path", list(Path))
def test_every_default_config_is_legal_on_the_h100(path):
    """A sweep measures the heuristic's config as the baseline, so it must pass the filter at every point."""
    for name, shape in MODELS.items():
        for t in TOKEN_GRID:
            cfg = default_config(shape, path, t)
            for stage, tile in ((1, cfg.stage1), (2, cfg.stage2)):
                v = legality.check(shape, path, stage, tile, legality.H100, tokens=t)
                assert v.legal, (name, path.value, t, stage, tile.short(), v)
