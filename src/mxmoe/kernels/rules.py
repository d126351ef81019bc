"""Which variant of the v2 kernels each launch takes: pure rules of (config, shape, path), each next to the
H100 measurement that chose it. One owner: the stage wrappers (kernels/swmoe.py), the layer plan and the tests
read them here, and benchmarks/rule_ab.py A/Bs a rule by setting its constant on this module.

Axis legend: T tokens, P = T*A pairs, E experts, BM / BN / BK the tile, K the stage's reduced axis.
"""

from __future__ import annotations

import triton

from mxmoe.config import Combine, TileConfig
from mxmoe.kernels.prefetch import next_stage_fits
from mxmoe.shapes import Path

# See defers_rounding. H100, whole layer us, fused -> deferred (results/h100/2026-12-06_mx_defer_ab_0b53aba.log):
# deepseek-v4-tp8 T=1024 a8w4 1919 -> 1664 (a16w4 1636), kimi-k2-tp8 T=1024 a8w4 1073 -> 982, deepseek-v3-tp8 T=1024
# a4w4 896 -> 817, gpt-oss-120b T=4096 a8w4 2780 -> 2547 (a16w4 2433), deepseek-v3 T=4096 a8w4 8436 -> 7787.
DEFER_MIN_BLOCK_M = 64
# See finishes_atomic_in_kernel. H100 vs_peer grid, whole layer us, memset + cast kernels -> in-kernel finish
# everywhere (results/h100/2026-12-06_vs_peer_ab9dc64.csv against the align-only run 2b748a4 and 79179f0): BM 16
# with a long K gained (gpt-oss-20b T=16 / 64 181.6 / 193.4 -> 169.1 / 181.1, deepseek-v3 T=64 / 256 1806.6 /
# 2157.7 -> 1752.3 / 2086.6); BM 16 over the TP8 shapes' 2 K steps lost or tied (deepseek-v3-tp8 T=128 365.3 ->
# 372.6, deepseek-v4-tp8 T=256 875.6 -> 901.5), and from BM 32 it lost up to 12% (kimi-k2-tp8 T=512 611.6 -> 654.3,
# deepseek-v3-tp8 T=4096 1986.4 -> 2220.2): each row's acq_rel arrival waits for the thread's atomics to land, a
# stall a short or one-CTA-per-SM tile cannot hide.
ATOMIC_FINISH_MAX_BLOCK_M = 16
ATOMIC_FINISH_MIN_K_STEPS = 8
# See prefetches / prefetches_next (kernels/prefetch.py): the bulk L2 prefetch of a CTA's weights at its start,
# and stage 1's prefetch of the stage-2 weights of its experts while they fit this share of the 50 MB L2.
PREFETCH_MAX_BLOCK_M = 16
PREFETCH_NEXT_BUDGET = 16 << 20
PREFETCH_EARLY = 1  # 0 turns off prefetches_early


def finishes_atomic_in_kernel(cfg: TileConfig, k: int) -> bool:
    """Whether a v2 stage 2 (K = `k`) with the atomic combine takes its zeroed sums from stage 1 and rounds them
    itself (per-token arrival counters) instead of a memset before it and a cast kernel after it: BM 16 tiles with
    at least ATOMIC_FINISH_MIN_K_STEPS K steps, where that measured faster (see the constants)."""
    return (cfg.combine is Combine.ATOMIC and cfg.block_m <= ATOMIC_FINISH_MAX_BLOCK_M
            and triton.cdiv(k, cfg.block_k * cfg.split_k) >= ATOMIC_FINISH_MIN_K_STEPS)


def prefetches(cfg: TileConfig) -> bool:
    """Whether a v2 stage's CTAs bulk-prefetch their whole K range of weights into L2 at their start: decode
    tiles (BLOCK_M <= PREFETCH_MAX_BLOCK_M), whose few K steps in flight leave DRAM latency-bound."""
    return cfg.block_m <= PREFETCH_MAX_BLOCK_M


def prefetches_next(cfg: TileConfig, pairs: int, weights) -> bool:
    """Whether stage 1 also prefetches the stage-2 weights of the experts it runs: a prefetching stage 1 whose
    pairs hit experts whose W2 (values and scales) fits PREFETCH_NEXT_BUDGET, so it is still in L2 for stage 2."""
    w2 = weights.w2_sw
    per_expert = w2.data.stride(0) + w2.scales.stride(0)
    return prefetches(cfg) and next_stage_fits(pairs, weights.num_experts, per_expert, PREFETCH_NEXT_BUDGET)


def prefetches_early(cfg: TileConfig, plan) -> bool:
    """Whether stage 1 prefetches before its PDL wait, from the top-k ids (CTA row m: pair m's expert; at decode
    every block's expert is some pair's) instead of after it from the plan: a prefetching stage 1 whose plan
    carries its ids, which the one-program align kernel, the launch just before, read after its own wait. The
    prefetch then overlaps the align kernel."""
    return bool(PREFETCH_EARLY) and prefetches(cfg) and getattr(plan, "topk_ids", None) is not None


def counters_needed(cfg: TileConfig, stage: int, n: int, k: int, max_blocks: int, tokens: int) -> int:
    """The arrival counters (int32 zeros) a v2 launch over [n outputs, k reduced] takes: one per output tile of a
    split stage 1; one per N column of a slots-combined stage 2, one per token and N column of an atomic one that
    `finishes_atomic_in_kernel`; none otherwise."""
    if stage == 1:
        return max_blocks * triton.cdiv(n, cfg.block_n) if cfg.split_k > 1 else 0
    if cfg.combine is Combine.SLOTS:
        return triton.cdiv(n, cfg.block_n)
    return tokens * triton.cdiv(n, cfg.block_n) if finishes_atomic_in_kernel(cfg, k) else 0


def defers_rounding(path: Path, cfg: TileConfig) -> bool:
    """Whether stage 1 leaves an MX path's rounding of h to a separate pass (kernels/quant.py) instead of its
    epilogue: from BLOCK_M DEFER_MIN_BLOCK_M, where the fused per-32 rounding (a group spans two warps of the wgmma
    accumulator) costs the main loop its register budget."""
    return path is not Path.A16W4 and cfg.block_m >= DEFER_MIN_BLOCK_M
