"""The default tile choice: the documented rules of `mxmoe.heuristic`, pinned on the real shapes.

Oracle: the rules as the module docstring states them (hand-computed grids), and the legality filter.
"""

import pytest

from mxmoe import legality
from mxmoe.heuristic import (
    SLOTS_MAX_ROWS,
    SPLIT_K_FEW_CTAS,
    SPLIT_K_FEW_PAIRS,
    SPLIT_K_MAX,
    SPLIT_K_MAX_CTAS,
    SPLIT_K_MIN_ITERS,
    default_config,
    few_pairs_split,
)
from mxmoe.shapes import MODELS, TOKEN_GRID, Path, get_shape


@pytest.mark.parametrize(("model", "tokens", "stage1_split", "stage2_split"), [
    # v2 tiles: stage 1 N 64 (gate + up), stage 2 N 128; K steps of 128: 7168 -> 56, 2880 -> 23, 2048 -> 16, 256 -> 2
    ("deepseek-v3-tp8", 1, 12, 1),  # 9 pairs: 36 CTAs x 12 = 432 (few_pairs_split); stage 2: 2 steps, no split
    ("kimi-k2-tp8", 1, 12, 1),  # 32 x 13 = 416 would leave an empty split (5 steps x 12 covers 56)
    ("deepseek-v4-tp8", 1, 7, 1),  # 7 x 8 = 56 CTAs x 7 = 392
    ("deepseek-v3-tp8", 2, 6, 1),  # 18 pairs: 72 x 6 = 432
    ("deepseek-v4-tp8", 4, 1, 1),  # 28 pairs: 224 x 2 passes 432
    ("deepseek-v3-tp8", 4, 8, 1),  # 36 x 4 = 144 -> 1152
    ("deepseek-v3-tp8", 16, 4, 1),  # 144 x 4 = 576 -> 2304: x 8 would pass 2304 CTAs
    ("deepseek-v3-tp8", 64, 2, 1),  # 257 x 4 = 1028 -> 2056
    ("gpt-oss-20b", 1, 2, 1),  # 4 pairs: 4 x 45 = 180 CTAs x 2 = 360 (x 3 passes 432); stage 2 never splits
    ("gpt-oss-20b", 16, 1, 1),  # 32 x 45 = 1440: x 2 would pass 2304
    ("deepseek-v3", 1, 1, 1),  # 9 x 32 = 288 CTAs: x 2 passes SPLIT_K_FEW_CTAS (sk1 was its best at 826b8ef)
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
            few = t * shape.topk <= SPLIT_K_FEW_PAIRS
            for tile in (cfg.stage1, cfg.stage2):
                assert tile.split_k <= (16 if few else SPLIT_K_MAX), (name, t)
                assert tile.split_k == 1 or tile.block_m == 16, (name, t)  # prefill never splits
                k = shape.hidden if tile is cfg.stage1 else shape.inter
                steps = -(-k // tile.block_k)
                if few:
                    assert tile.split_k == 1 or -(-steps // tile.split_k) >= 4, (name, t)
                else:
                    assert tile.split_k == 1 or steps // tile.split_k >= SPLIT_K_MIN_ITERS, (name, t)
    assert SPLIT_K_MAX_CTAS >= 4 * 132  # a split never starves the H100's SMs


def test_few_pairs_split_fills_the_cta_budget_without_empty_splits():
    assert SPLIT_K_FEW_CTAS >= 2 * 132  # at least two CTAs an SM of the H100
    assert few_pairs_split(36, 7168, 128) == SPLIT_K_FEW_CTAS // 36 == 12  # 56 steps: 12 splits of 5 (the last 1)
    assert few_pairs_split(32, 7168, 128) == 12  # 13 splits of 5 steps would cover 65: the last one empty
    assert few_pairs_split(36, 512, 128) == 1  # 4 steps: a split would leave under 4
    assert few_pairs_split(SPLIT_K_FEW_CTAS + 1, 7168, 128) == 1
    for ctas in range(1, 200):
        split = few_pairs_split(ctas, 7168, 128)
        assert split == 1 or (ctas * split <= SPLIT_K_FEW_CTAS and -(-56 // split) * (split - 1) < 56)


def test_slots_combine_only_where_the_finish_is_small():
    """Stage 2 takes the in-kernel slots combine exactly at decode points whose N-column finish sums at most
    SLOTS_MAX_ROWS rows (T x A); every other point keeps the atomic combine."""
    for name, shape in MODELS.items():
        for t in TOKEN_GRID:
            s2 = default_config(shape, Path.A16W4, t).stage2
            small = s2.block_m == 16 and t * shape.topk <= SLOTS_MAX_ROWS
            assert (s2.combine.value == "slots") == small, (name, t)


@pytest.mark.parametrize("e4m3", [False, True], ids=["bf16-layout", "e4m3-layout"])
@pytest.mark.parametrize("path", list(Path))
def test_every_default_config_is_legal_on_the_h100(path, e4m3):
    """A sweep measures the heuristic's config as the baseline, so it must pass the filter at every point, with
    the weights' e4m3 layout too (the e4m3 stage 1 tile of `on_e4m3`)."""
    for name, shape in MODELS.items():
        for t in TOKEN_GRID:
            cfg = default_config(shape, path, t, e4m3=e4m3)
            for stage, tile in ((1, cfg.stage1), (2, cfg.stage2)):
                v = legality.check(shape, path, stage, tile, legality.H100, tokens=t)
                assert v.legal, (name, path.value, t, stage, tile.short(), v)


def test_e4m3_stage1_is_off_by_default():
    """The shipped heuristic never takes the e4m3 stage 1, e4m3 layout or not (heuristic.E4M3_BY_DEFAULT: it fails
    the real-size guardrail)."""
    for model, t in (("deepseek-v3-tp8", 8192), ("deepseek-v3", 4096), ("kimi-k2", 32768)):
        cfg = default_config(MODELS[model], Path.A8W4, t, e4m3=True)
        assert cfg == default_config(MODELS[model], Path.A8W4, t) and not cfg.e4m3, (model, t)


def test_e4m3_stage1_rule(monkeypatch):
    """Where switched on (heuristic.E4M3_BY_DEFAULT), a8w4 takes the e4m3 stage 1 only when the weights carry its
    layout, from BLOCK_M 128 at hidden >= 4096 (heuristic.E4M3_*, measured there); the tile is the bf16 one fitted
    to the two accumulator chains."""
    from mxmoe.config import Mma
    from mxmoe.heuristic import E4M3_MIN_HIDDEN

    monkeypatch.setattr("mxmoe.heuristic.E4M3_BY_DEFAULT", 1)
    for model, t in (("deepseek-v3-tp8", 8192), ("kimi-k2-tp8", 8192), ("deepseek-v3", 4096)):
        shape = MODELS[model]
        bf16, e4 = default_config(shape, Path.A8W4, t), default_config(shape, Path.A8W4, t, e4m3=True)
        assert bf16.stage1.block_m == 128 and shape.hidden >= E4M3_MIN_HIDDEN
        assert e4.stage1 == bf16.stage1.replace(mma=Mma.WGMMA_E4M3, block_m=64, tail_m=0) and e4.stage2 == bf16.stage2
        assert e4.stage1.plan_rows == bf16.stage2.plan_rows, model  # stage 1 on e4m3 reads stage 2's plan: one align
    for model, path, t in (("gpt-oss-120b", Path.A8W4, 16384), ("deepseek-v3", Path.A16W4, 4096),
                           ("deepseek-v3", Path.A4W4, 4096), ("deepseek-v3-tp8", Path.A8W4, 512)):
        cfg = default_config(MODELS[model], path, t, e4m3=True)
        assert cfg == default_config(MODELS[model], path, t) and not cfg.stage1.mma.e4m3, (model, path, t)


def test_moe_takes_the_e4m3_rule_with_the_e4m3_layout(monkeypatch):
    """moe(config=None) asks dispatch with the weights' layout: the same shape and T launch the e4m3 stage 1
    with an e4m3 layout and the bf16 one without (heuristic cache keyed by both)."""
    import sys

    from mxmoe.dispatch import clear_cache
    from mxmoe.heuristic import v2_config
    from mxmoe.moe import moe
    from mxmoe.problem import make_problem

    moe_mod = sys.modules["mxmoe.moe"]
    p = make_problem(MODELS["tiny"], Path.A8W4, 3, seed=1)
    seen = []
    monkeypatch.setattr(moe_mod, "layer_plan", lambda shape, path, cfg, t: _Stop(cfg))
    monkeypatch.setattr("mxmoe.heuristic.E4M3_MIN_HIDDEN", 0)
    monkeypatch.setattr("mxmoe.heuristic.E4M3_MIN_BLOCK_M", 16)
    monkeypatch.setattr("mxmoe.heuristic.E4M3_BY_DEFAULT", 1)
    clear_cache()  # dispatch caches the heuristic's answers per shape: none from before the patch, none kept after
    try:
        for w in (p.weights, p.weights.with_e4m3(), p.weights):
            with pytest.raises(_Stopped) as stopped:  # the third call takes the first one's kept plan
                moe(p.hidden, w, p.topk_ids, p.topk_weights, Path.A8W4)
            seen.append(stopped.value.args[0])
    finally:
        clear_cache()
    assert [c.stage1.mma.e4m3 for c in seen] == [False, True, False]
    assert seen[0] == v2_config(p.shape, Path.A8W4, 3)


class _Stopped(Exception):
    pass


class _Stop:
    def __init__(self, config):
        self.config = config

    def run(self, *a, **kw):
        raise _Stopped(self.config)


def test_rows_combine_rule():
    """Stage 2 combines by bf16 rows from BLOCK_M 64 at inter <= 512 (heuristic.ROWS_*, measured there), by fp32
    atomics on the full-expert shapes and by slots or atomics at decode."""
    from mxmoe.config import Combine
    from mxmoe.heuristic import ROWS_MAX_INTER, ROWS_MIN_BLOCK_M, v2_config
    from mxmoe.shapes import MODELS, Path

    for model, t in (("deepseek-v3-tp8", 512), ("kimi-k2-tp8", 32768), ("deepseek-v4-tp8", 8192)):
        s2 = v2_config(MODELS[model], Path.A16W4, t).stage2
        assert s2.block_m >= ROWS_MIN_BLOCK_M and MODELS[model].inter <= ROWS_MAX_INTER
        assert s2.combine is Combine.ROWS and s2.split_k == 1
    assert v2_config(MODELS["deepseek-v3-tp8"], Path.A16W4, 128).stage2.combine is Combine.ATOMIC  # BLOCK_M 16
    assert v2_config(MODELS["deepseek-v3"], Path.A8W4, 16384).stage2.combine is Combine.ATOMIC  # inter 2048


# Monte Carlo of the padding tail_by_rows minimizes: 200k Poisson draws estimate each tail's mean padded rows to
# about 0.1 row (sd of the padded rows <= 128 / sqrt(200k)); the cases below differ by 4 rows or more.
_DRAWS = 200_000


@pytest.mark.parametrize(("block_m", "rows", "want"), [
    (128, 128.0, 32),  # deepseek-v3 / gpt-oss-120b T = 4096: remainders of n ~ 128 +- 11 mostly under 32
    (128, 256.0, 32),  # T = 8192
    (128, 171.0, 64),  # kimi-k2 T = 8192: remainders around 43
    (128, 85.0, 64),  # kimi-k2 T = 4096: one remainder of ~85, past both tails (a tie: the half)
    (64, 64.0, 16),  # deepseek-v3 T = 2048 at BLOCK_M 64
    (64, 43.0, 32),  # kimi-k2 T = 2048
])
def test_tail_by_rows_picks_the_least_padding(block_m, rows, want):
    """heuristic.TAIL_BY_ROWS' choice against a simulation: n ~ Poisson(rows) drawn by torch, each expert padded
    to whole BLOCK_M tiles plus its remainder on a tail tile where it fits (kernels/swmoe.py TAIL_WHY)."""
    import torch

    from mxmoe.heuristic import tail_by_rows

    n = torch.poisson(torch.full((_DRAWS,), rows), generator=torch.Generator().manual_seed(0)).long()
    rem = n % block_m

    def padded(t: int) -> float:
        extra = torch.where(rem == 0, 0, torch.where(rem <= t, t, block_m))
        return (n - rem + extra).double().mean().item()

    means = {t: padded(t) for t in (block_m // 2, block_m // 4)}
    assert tail_by_rows(block_m, rows) == want
    assert means[want] <= min(means.values()) + 0.5, means


def test_tail_by_rows_lever(monkeypatch):
    """Off (the shipped TAIL_BY_ROWS 0): TAIL_M's half tile everywhere. On: the tail follows the rows per expert on
    both stages (deepseek-v3 T = 4096: 32 rows; kimi-k2 T = 8192: 64), and every such config stays legal."""
    from mxmoe import heuristic

    assert heuristic.TAIL_BY_ROWS == 0
    cfg = default_config(MODELS["deepseek-v3"], Path.A16W4, 4096)
    assert cfg.stage1.tail_m == cfg.stage2.tail_m == 64
    monkeypatch.setattr(heuristic, "TAIL_BY_ROWS", 1)
    for model, tokens, tail in (("deepseek-v3", 4096, 32), ("kimi-k2", 8192, 64), ("gpt-oss-120b", 2048, 16)):
        cfg = default_config(MODELS[model], Path.A16W4, tokens)
        assert cfg.stage1.tail_m == cfg.stage2.tail_m == tail, (model, cfg)
        for stage, tile in ((1, cfg.stage1), (2, cfg.stage2)):
            assert isinstance(legality.check(MODELS[model], Path.A16W4, stage, tile, legality.H100), legality.Legal)
