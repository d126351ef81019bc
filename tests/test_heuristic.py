"""The default tile choice: the documented rules of `mxmoe.heuristic`, pinned on the real shapes.

Oracle: the rules as the module docstring states them (hand-computed grids), and the legality filter.
"""

import pytest

from mxmoe import legality
from mxmoe.heuristic import SPLIT_K_MAX, SPLIT_K_MIN_CTAS, default_config
from mxmoe.shapes import MODELS, TOKEN_GRID, Path, get_shape


@pytest.mark.parametrize(("model", "tokens", "stage1_split", "stage2_split"), [
    # v2 tiles: stage 1 N 64 (gate + up), stage 2 N 128 (gpt-oss's 2880: 23 tiles, the last one masked)
    ("deepseek-v3-tp8", 1, 8, 2),  # stage 1: 9 hit experts x 256/64 = 36 CTAs -> 288 (cap 8); stage 2: 504 -> 1008
    ("deepseek-v3-tp8", 4, 4, 1),  # 36 x 4 = 144 -> 576; 36 x 56 = 2016
    ("deepseek-v3-tp8", 16, 1, 1),  # 144 x 4 = 576
    ("gpt-oss-20b", 1, 4, 8),  # 4 x 2880/64 = 180 -> 720; 4 x 23 = 92 -> 736 (cap 8)
    ("gpt-oss-20b", 2, 2, 4),  # 8 x 45 = 360 -> 720; 8 x 23 = 184 -> 736
    ("deepseek-v3", 1, 2, 2),  # 8 x 2048/64 = 256 -> 512; 8 x 7168/128 = 448 -> 896
    ("kimi-k2-tp8", 1, 8, 2),  # 8 x 4 = 32 -> 256 (cap 8); 8 x 56 = 448 -> 896
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
    assert SPLIT_K_MIN_CTAS >= 132  # at least one CTA per H100 SM


@pytest.mark.parametrize("path", list(Path))
def test_every_default_config_is_legal_on_the_h100(path):
    """A sweep measures the heuristic's config as the baseline, so it must pass the filter at every point."""
    for name, shape in MODELS.items():
        for t in TOKEN_GRID:
            cfg = default_config(shape, path, t)
            for stage, tile in ((1, cfg.stage1), (2, cfg.stage2)):
                v = legality.check(shape, path, stage, tile, legality.H100, tokens=t)
                assert v.legal, (name, path.value, t, stage, tile.short(), v)
