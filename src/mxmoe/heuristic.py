"""The default tile choice: the documented baseline every tuned config must beat.

Pure function of (shape, path, T); no torch or triton. `default_config` returns the v2 rule (`v2_config`, its
docstring has the rules and their measurements); with kernels="v1" the rule of the v1 levers, below. The v1 rules,
and why:
- BLOCK_M follows the average rows per hit expert (T*A / experts hit): a decode block holds 1-2
  real rows, so 16 (the MMA minimum) wastes the least; prefill blocks of 64-128 rows reuse each
  weight tile across many tokens, which is what moves the layer from the memory to the compute floor.
- BLOCK_N 64 keeps enough CTAs in flight at decode (hidden or inter / 64 tiles per hit expert) and
  divides every model's N (2880 = 45 x 64); prefill takes 128 where it divides.
- BLOCK_K 128 streams 64 bytes of packed weights per row per step (a full 16 B vector per thread);
  2880 is not a multiple of 128, and the kernels mask the tail.
- Decode stage 1 (BLOCK_M 16) takes N32 K256 with 2 warps and 2 stages: 100.9 us against 124.6 us for
  N64 K256 4 warps (deepseek-v3 a16w4 T=1, H100, results/h100/2026-11-25_s2_scan3.log). A tile that small
  lets many CTAs share an SM, and at one real row per block what decode lacks is memory parallelism.
- Prefill (rows per expert > 32), measured at deepseek-v3 T=4096 on the H100 (same log):
  a16w4 stage 1 takes 4 warps and BLOCK_N 64 (M128N64 8.78 ms against 9.68 ms for M128N128 8 warps;
  M64N128 4 warps spills: 19.5 ms); the MX paths take M64N128 4 warps in a stage whose N 128 divides
  (a8w4 stage 1 11.5 ms against 22.8 ms for M128N128 8 warps, stage 2 6.73 ms against 13.3 ms): their
  activation operand needs its own upcast registers, and the 128-row tile pays for them in spills.
  Whole layer: deepseek-v3 a8w4 T=4096 36.3 -> 18.3 ms, T=32768 194 -> 117 ms (bench CSVs of b605344 and
  c44b721 under results/h100/).
- a16w4 prefill stage 2 (>= 256 rows per expert) takes BLOCK_M=256: 8.37 ms vs 9.80 ms at 128 (deepseek-v3
  T=8192, H100, results/h100/2026-11-25_scan2.log).
- mma: `dot_scaled` on a GPU (the compiler's own e2m1 upcast), `upcast` under the interpreter,
  which lacks tl.dot_scaled.
- combine: fp32 atomics.
- Decode split-K (BLOCK_M 16): a stage whose grid (hit experts x N tiles) is under SPLIT_K_MIN_CTAS splits K
  (whole K blocks) by the smallest power of two that reaches it, at most 8 and at most its K blocks. Measured on
  the H100 (a16w4, results/h100/2026-11-25_splitk_6461d9f.csv, layer us, graph replay, L2 flushed):
  deepseek-v3-tp8 T=1 stage 1 72 CTAs: split 8 90.2 -> 51.7 (split 2 65.6, 4 60.6); T=4 288 CTAs: split 2
  113.5 -> 108.2; gpt-oss-20b T=1 stage 1 360 CTAs: split 2 97.6 -> 95.1, stage 2 180 CTAs: split 4 -> 87.5,
  both split 4 -> 83.8; deepseek-v3 T=1 (512 and 896 CTAs) split 2 was slower (0.98x), hence the threshold.
  Splits past it lose: gpt-oss-20b T=16 (1300-2600 CTAs) split 4 0.87x. Not measured for a8w4 / a4w4, whose
  decode is the same weight stream.
- Measured, not taken, and removed with Kernels v2 (2026-12-06): mma=fma (the tensor-core-free decode lever) ran
  261 us vs 124 us for dot_scaled on deepseek-v3 T=1 stage 1 (scan2 log); the f32 unpack costs more than the
  16-row MMA wastes.
  Nor at BLOCK_M 1, where it multiplies only the real row: deepseek-v3-tp8 T=1 whole layer 50.7 us (a16w4) and
  63.5 us (a4w4) with the heuristic against 79.7 / 84.6 us for the best fma stage 1 and 64.7 / 73.2 us for the best
  fma stage 2 over N 32-128, K 128-512, 2-4 warps (H100, results/h100/2026-11-26_scan_decode_9cc6586.csv).
- Not taken either, and removed with Kernels v2 (whose swap on wgmma is what they aimed at): the swapped levers
  (mma=dot_scaled_t: the weight tile as the MMA's M side, wgmma from
  BLOCK_N 64 over 4 warps). deepseek-v3-tp8 whole layer, H100: a16w4 loses at T=1 (best 54.8 us against 51.0) and
  T=16 (350 against 322); a4w4 gains 1.04x at T=1 (stage 2 M16N64K128 w4: 60.2 against 62.7 us) and 1.08x at T=16
  (both stages swapped, N128 K128 w4: 415 against 450 us) (results/h100/2026-11-26_scan_decode_swapped_5220123.csv).
  The weights' upcast, not the padded MMA rows, is what decode pays for.
- Routing skew is invisible here (a pure function of T): the split-K and BLOCK_M rules assume uniform routing, so
  `hit` overstates the experts a skewed batch hits. Under `skewed` routing the #708 shapes' winners are the
  heuristic's config of a smaller T at decode (one more split-K step: 1.4-1.5x at T = 8) and of a larger T from
  256 tokens up (BLOCK_M 32). The shipped tables carry that where it costs nothing under uniform routing
  (`mxmoe export --robust-over skewed`).
"""

from __future__ import annotations

import math

from mxmoe import legality
from mxmoe.config import Combine, Mma, MoEConfig, TileConfig
from mxmoe.shapes import MoEShape, Path

SPLIT_K_MIN_CTAS = 512  # about 4 CTAs per SM of the H100's 132: below it a decode stage lacks memory parallelism
SPLIT_K_MAX = 8
# v2 decode (BLOCK_M 16) split-K, by the H100 decode scans (layer us, graph replay, L2 flushed; s1 / s2 each
# varied alone): a split keeps at least 7 K steps and the grid at most 2304 CTAs. At 4465c21: deepseek-v3-tp8 T=1
# stage 1 sk8 (7 steps, 288 CTAs) 37.6 against sk4 39.3; T=16 sk4 (2304 CTAs) 166.8 against sk1 194.8 and sk8 169.7;
# T=64 sk2 314 against sk1 330 and sk8 328; gpt-oss-120b T=1 sk2 (12 steps) 47.0 against sk4 (6 steps) 54.1. The cap
# stops splits that lost where the grid was already large: 4096 -> 2304 took gpt-oss-20b T=16 / 32 / 64 from 180 /
# 191 / 196 to 174 / 187 / 189 us and deepseek-v3 T=2 from 170 to 165 (results/h100/2026-12-06_decode_splitcap_ab.log).
# Full deepseek-v3 / kimi-k2 T=1 (256-288 CTAs) measured sk8 105.3 / 108.2 against their best 95.8 (sk1) / 99.7
# (sk4) at 826b8ef: the few-pairs rule below now gives them sk1. Not fitted: deepseek-v3-tp8 T=4 sk8 74.8 against
# sk4 69.5; no CTA-count rule fits it and T=16 together; the tuned tables are for that.
SPLIT_K_MIN_ITERS = 7
SPLIT_K_MAX_CTAS = 2304
# A decode of at most SPLIT_K_FEW_PAIRS (token, slot) pairs (the direct layer's, kernels/decode.py) splits stage 1 by
# `few_pairs_split` instead: any split count up to 16 that keeps the grid at most SPLIT_K_FEW_CTAS CTAs (about 3.3
# an SM) and every split non-empty with at least 4 K steps. H100, whole layer us: at 5bc3221, deepseek-v3-tp8 T=1
# (36 CTAs unsplit, 56 K steps), direct: a16w4 sk12 25.1, sk10 25.8, sk14 28.6, sk8 (v2_split) 31.0, sk6 32.8;
# a8w4 sk10 26.7, sk12 29.1, sk8 32.6 (results/h100/2026-12-06_split_scan_5bc3221.log). At 9ffc544 (the final
# direct kernels), 432 CTAs against 360 / off: deepseek-v3-tp8 T=1 22.4 / 23.3 / 24.8, kimi-k2-tp8 21.5 / 22.6 /
# 22.5, deepseek-v4-tp8 37.7 / 38.5 / 39.5 (sorted then), deepseek-v3 T=1 (sk1) 94.7 / 95.2 / 100.7 (sk8); 560 and
# 300 lost at deepseek-v3-tp8 T=1 (23.3, 24.8); at 28-32 pairs, 900 won deepseek-v4-tp8 T=4 (83.4 against 86.1) but
# lost kimi-k2-tp8 T=4 (61.2 against 57.0) (results/h100/2026-12-06_*_ab_9ffc544.*: decode_levers, direct_pairs,
# few_split_t4).
SPLIT_K_FEW_PAIRS = 32
SPLIT_K_FEW_CTAS = 432
# v2 decode stage 2 takes the slots combine while the last CTA of each N column sums at most this many fp32 slot
# rows (T x A): no zero fill, no cast kernel (kernels/sync.py). Same scan: T=1 slots beat atomic by 1.7-2.3 us
# (deepseek-v3-tp8 35.3 / 37.2, kimi-k2-tp8 31.6 / 33.3, gpt-oss-120b sk2 48.8 / 50.7); at deepseek-v3-tp8 T=16 (128
# rows, 7168 CTAs) slots lost, 194.8 against 177.0. Stage 2 does not split at decode: its K (inter) is at most 23
# steps, and a split lost or tied at every point but one of the scans at 4465c21 and 826b8ef (gpt-oss-120b T=4
# slots 109.0 unsplit against 113.1-121.0 split; deepseek-v3 T=1 100.3 against 100.7-112.4; deepseek-v3-tp8 T=4 73.8
# against 77.9-86.0; the exception, gpt-oss-120b T=1, 51.0 against 48.8 at sk2).
SLOTS_MAX_ROWS = 32
# Stage 2 combines by bf16 rows and a combine kernel (kernels/combine.py) instead of fp32 atomics from BLOCK_M
# ROWS_MIN_BLOCK_M where inter is at most ROWS_MAX_INTER: there the [P, H] output dwarfs stage 2's K, and the atomic
# adds into a [T, H] fp32 target far larger than L2 go to DRAM. H100, whole layer, rows against atomic (rule_ab,
# graph replay, L2 flushed, 41f31dc; results/h100/2026-12-06_rows_ab_41f31dc.csv): deepseek-v3-tp8 T=512 / 1024 /
# 2048 / 4096 / 32768 1.028 / 1.011 / 1.101 / 1.176 / 1.368x, kimi-k2-tp8 T=8192 1.250x, deepseek-v4-tp8 T=1024 /
# 8192 1.051 / 1.232x; at BLOCK_M 16 it lost (deepseek-v3-tp8 T=128 0.949x, T=16 a8w4 0.940x), at 32 tied (T=256
# 0.999x, kimi-k2-tp8 T=512 1.012x). The full shapes gained 1.7-5% (kimi-k2 T=4096 1.050x, gpt-oss-20b T=8192
# 1.039x, deepseek-v3 T=4096 1.027x) but deepseek-v3 T=16384 lost (0.934x): not taken there.
ROWS_MIN_BLOCK_M = 64
ROWS_MAX_INTER = 512
# e4m3 stage 1 (a8w4, weights with the e4m3 layout: heuristic.on_e4m3's tile, two accumulator chains) against the
# bf16 carriers, whole layer, H100 at 761a48a (results/h100/2026-12-06_e4m3_chains_ab_761a48a.csv): deepseek-v3-tp8
# T=2048 / 8192 / 32768 1.249 / 1.185 / 1.133x, kimi-k2-tp8 T=8192 1.228x, deepseek-v4-tp8 T=8192 1.062x,
# deepseek-v3 T=4096 / 16384 / 32768 1.142 / 1.056 (0.991 in a second run) / 1.033x; gpt-oss-120b (hidden 2880)
# T=16384 0.987x, hence the hidden floor. All at the heuristic's BLOCK_M 128 (64 after on_e4m3); smaller blocks
# are not measured. Stage 2 on e4m3 as well lost at the TP8 points (1.072 against 1.185x at deepseek-v3-tp8 8192).
E4M3_MIN_BLOCK_M = 128
E4M3_MIN_HIDDEN = 4096
# ... and only while E4M3_BY_DEFAULT: off, because the e4m3 stage 1 fails the guardrail at real model sizes (H100,
# 9b7d258, `mxmoe guardrail --path a8w4 --e4m3 --e4m3-stage 1 --full`, results/h100/2026-12-07_session18e_9b7d258.log):
# logits_diff deepseek-v3 2.46e-2, gpt-oss 4.12e-2 against the 1e-2 bound, where the bf16 carriers pass (1.9e-3 /
# 6.6e-4). Promoting the fp8 sums into f32 every 4 or 2 K steps (rules.E4M3_PROMOTE_STEPS) with both stages forced
# left 1.26e-2 / 4.02e-2 and 1.33e-2 / 3.21e-2 (..._session18c_8306159.log): half of deepseek-v3's error is the fp8
# accumulation; gpt-oss's is not, nor x's rebase (docs/fp8.md, issue 23). An explicit or tuned e4m3 config still
# runs it.
E4M3_BY_DEFAULT = 0
# Tail tiles (TileConfig.tail_m; kernels/swmoe.py TAIL_WHY), half the block (TAIL_M at BLOCK_M 128): the plan
# aligned to the tail, an expert's one-block remainder on a tail tile. Whole layer on the H100 (rule_ab, graph
# replay, L2 flushed, two rounds, 14d8168; results/h100/2026-12-07_tail_ab_{prefill,cross}_14d8168.csv and the
# session17a log), against no tails:
# - stage 2 at BLOCK_M 128: deepseek-v3 T=4096 / 8192 1.009 / 1.019x, gpt-oss-120b T=4096 1.030x, gpt-oss-20b
#   T=2048 1.021x, kimi-k2 T=4096 1.085x (one noisy round);
# - stage 1 too at BLOCK_M 128 lost on the full shapes (gpt-oss-120b T=4096 0.924x, gpt-oss-20b T=2048 / 1024
#   0.939 / 0.972x, kimi-k2 T=4096 0.955x) but for deepseek-v3 (T=4096 1.062x), hence TAIL_STAGE1_MAX_BLOCK_M;
# - both stages beside the rows combine (the TP8 shapes, BLOCK_M 128): deepseek-v3-tp8 T=4096 1.032x,
#   deepseek-v4-tp8 T=8192 1.028x (TAIL_WITH_ROWS);
# - both stages at BLOCK_M 64 (tail 32): gpt-oss-20b T=512 1.008x, deepseek-v3 / gpt-oss-120b / kimi-k2 /
#   gpt-oss-3072 T=2048 1.077 / 1.056 / 1.021 / 1.056x (TAIL_BLOCK_M 64).
# Confirmed at 0d72a8a (results/h100/2026-12-07_tail_confirm_0d72a8a.csv), this rule against the previous one
# (stage 2 at BLOCK_M 128 alone): deepseek-v3-tp8 T=1024 1.052x, deepseek-v4-tp8 T=2048 1.095x, kimi-k2-tp8 T=8192
# 1.082x, gpt-oss-120b a8w4 T=2048 1.044x, deepseek-v3-tp8 a4w4 T=2048 1.078x; lost kimi-k2-tp8 T=2048 (0.953x).
# BLOCK_M 128 from 48 rows (BM64_MAX_ROWS 48, tails on both stages) won deepseek-v3 T=2048 (1.154x) but lost
# gpt-oss-20b T=512 (0.889x): kept at 64. rule_ab flips these constants (1000 / 0: off).
# Stage 1 at BLOCK_M 128 takes tails too since rules.K_FLOOR: ptxas had serialized both of that kernel's K loops
# (C7515), the reason for the losses above. H100, rule_ab, 4 rounds, fe0a50c (results/h100/
# 2026-12-07_floor_ab4_fe0a50c.csv), floor + stage-1 tails against neither: deepseek-v3 / gpt-oss-120b / kimi-k2
# T=4096 1.059 / 1.070 / 1.075x, gpt-oss-20b T=2048 1.035x, kimi-k2 T=2048 1.016x, deepseek-v3 T=8192 1.005x
# (1.013x for the floor alone); the tails without the floor: 1.046 / 0.953 / 1.059x, 0.933x, 0.995x, 0.940x.
TAIL_BLOCK_M = 64
TAIL_M = 64
TAIL_STAGE1_MAX_BLOCK_M = 128
TAIL_WITH_ROWS = 1
# 1: the tail is BLOCK_M / 2 or / 4, whichever pads the least when an expert's rows are Poisson around the average
# (`tail_by_rows`), instead of TAIL_M's fixed half. Off until the H100 measures it (session 24 had no device time
# left; `benchmarks/gpu_pass.sh open_levers`). benchmarks/padding_bound.py on make_problem's routing: a 32-row tail
# at BLOCK_M 128 takes the layer's pad_eff at deepseek-v3 / gpt-oss-120b T = 4096 from 0.80 to 0.89 and at 8192
# from 0.89 to 0.94, but kimi-k2 T = 8192 (171 rows an expert) from 0.875 to 0.730; a smaller tile also amortizes
# its weight decode over fewer rows, which the model leaves out.
TAIL_BY_ROWS = 0
# BLOCK_M 64 up to this many rows per hit expert, then 128.
BM64_MAX_ROWS = 64


def _rows_per_expert(shape: MoEShape, tokens: int) -> float:
    pairs = tokens * shape.topk
    return pairs / max(1, min(shape.experts, pairs))


def padded_rows(n: int, block_m: int, tail: int) -> int:
    """The rows an expert of `n` rows computes: whole BLOCK_M tiles, and its remainder on a tail tile when it fits
    one (kernels/swmoe.py TAIL_WHY), else on one more BLOCK_M tile (tail 0: no tail tiles). benchmarks/padding_bound.py
    counts with it too."""
    rem = n % block_m
    return n - rem + (0 if rem == 0 else tail if rem <= tail else block_m)


def tail_by_rows(block_m: int, rows: float) -> int:
    """BLOCK_M / 2 or / 4 (at least 16), whichever has the fewer expected padded rows for n ~ Poisson(rows): the
    spread of a uniform routing's rows per expert around their mean (the half on a tie)."""
    candidates = [t for t in (block_m // 2, block_m // 4) if t >= 16]
    span = range(max(0, int(rows - 8 * rows**0.5) - 1), int(rows + 8 * rows**0.5) + 2)  # +-8 sigma
    weights = [(n, math.exp(n * math.log(rows) - rows - math.lgamma(n + 1))) for n in span]
    return min(candidates, key=lambda t: sum(w * padded_rows(n, block_m, t) for n, w in weights))


def _block_n(n: int, prefer: int) -> int:
    for b in (prefer, 64, 32):
        if b <= prefer and n % b == 0:
            return b
    raise ValueError(f"no BLOCK_N in (prefer={prefer}, 64, 32) divides N={n}")


def _block_k(k: int, prefer: int) -> int:
    """`prefer`, capped at K rounded up to a power of two (>= 64): a K step past K only loads masked zeros."""
    return max(64, min(prefer, 1 << (k - 1).bit_length()))


def decode_split(ctas: int, k: int, block_k: int) -> int:
    """The smallest power-of-two split_k that lifts `ctas` to SPLIT_K_MIN_CTAS, within SPLIT_K_MAX and K's blocks."""
    k_blocks = -(-k // block_k)
    split = 1
    while ctas * split < SPLIT_K_MIN_CTAS and split * 2 <= min(SPLIT_K_MAX, k_blocks):
        split *= 2
    return split


def v2_split(ctas: int, k: int, block_k: int) -> int:
    """The v2 decode split: the largest power of two (at most SPLIT_K_MAX) that leaves every split at least
    SPLIT_K_MIN_ITERS K steps (the 4-stage pipeline's fill) and the grid at most SPLIT_K_MAX_CTAS CTAs."""
    k_blocks = -(-k // block_k)
    split = 1
    while (split * 2 <= SPLIT_K_MAX and k_blocks // (split * 2) >= SPLIT_K_MIN_ITERS
           and ctas * split * 2 <= SPLIT_K_MAX_CTAS):
        split *= 2
    return split


def few_pairs_split(ctas: int, k: int, block_k: int) -> int:
    """The largest split (any count up to 16) with at most SPLIT_K_FEW_CTAS CTAs, at least 4 K steps a split and
    none empty (k_range gives each split cdiv(K blocks, split) blocks)."""
    k_blocks = -(-k // block_k)
    best = 1
    for split in range(2, 17):
        per = -(-k_blocks // split)
        if ctas * split <= SPLIT_K_FEW_CTAS and per >= 4 and per * (split - 1) < k_blocks:
            best = split
    return best


def _v2_stage(n: int, k: int, block_m: int, prefer_n_per_warp: int, stage: int) -> TileConfig:
    """One v2 stage: 8 warps (two warpgroups) from BLOCK_M 128 where N is at least 512, else 4; BLOCK_N is the
    preferred rows per warp times the warps, at most N rounded up to a power of two (the last tile is masked,
    so gpt-oss's 2880 takes 128- and 256-row tiles: 23 and 12 of them); stage 2 steps K by 64 from BLOCK_M 64.
    Measured around the rule on the H100 (results/h100/2026-12-06_scan_v2_e04bff9.csv, layer us): deepseek-v4-tp8
    T=4096 stage 1 on 8 warps N128 2934 against 3351 on 4 warps N64; stage 2 K64 gpt-oss-120b T=4096 2419 against
    2513, deepseek-v3-tp8 T=512 683 against 737; at BLOCK_M 16 (deepseek-v3 T=64) K64 lost (1747 against 1717)."""
    warps = 8 if block_m >= 128 and n >= 512 else 4
    bn = max(16 * warps, min(prefer_n_per_warp * warps, 1 << (n - 1).bit_length()))
    bk = 64 if stage == 2 and block_m >= 64 else _block_k(k, 128)
    return TileConfig(block_m=block_m, block_n=bn, block_k=bk, group_m=1 if block_m <= 32 else 8,
                      num_warps=warps, num_stages=4 if block_m <= 64 else 3, mma=Mma.WGMMA)


def v2_config(shape: MoEShape, path: Path | str, tokens: int, *, e4m3: bool = False) -> MoEConfig:
    """The v2 kernels' baseline (mma=wgmma, GPU and interpreter alike).

    BLOCK_M by rows per hit expert as the peer picks it (16 up to 8 rows, 32 to 16, 64 to 64 (BM64_MAX_ROWS), then
    128): the token rows are the MMA's N side, so a decode block pads only to 16. Weight rows (the MMA's M): 16 per
    warp and K step in stage 1 (gate + up, two tiles: 128 rows a CTA at 4 warps), 32 in stage 2; BLOCK_K 128; 4
    stages up to BLOCK_M 64, then 3. Decode (BLOCK_M 16) splits stage 1's K by `few_pairs_split` up to SPLIT_K_FEW_PAIRS
    (token, slot) pairs, else by `v2_split`; stage 2 does not split and combines by slots while T x A is at most
    SLOTS_MAX_ROWS, by bf16 rows from BLOCK_M 64 at inter <= 512 (ROWS_MIN_BLOCK_M, ROWS_MAX_INTER). From BLOCK_M
    64 both stages take tail tiles of half the block (TAIL_BLOCK_M, TAIL_M; stage 1 up to TAIL_STAGE1_MAX_BLOCK_M or
    beside the rows combine; TAIL_BY_ROWS picks the tail by rows per expert instead). `e4m3` (the weights carry
    the e4m3 layout): a8w4 stage 1 on e4m3 wgmma from BLOCK_M E4M3_MIN_BLOCK_M at hidden >= E4M3_MIN_HIDDEN, its
    tile fitted by `on_e4m3`, while E4M3_BY_DEFAULT (off: the guardrail fails it).
    """
    Path(path)  # validates
    rows = _rows_per_expert(shape, tokens)
    block_m = 16 if rows <= 8 else 32 if rows <= 16 else 64 if rows <= BM64_MAX_ROWS else 128
    s1 = _v2_stage(shape.inter, shape.hidden, block_m, 16, 1)
    s2 = _v2_stage(shape.hidden, shape.inter, block_m, 32, 2)
    rows_combine = block_m >= ROWS_MIN_BLOCK_M and shape.inter <= ROWS_MAX_INTER
    if rows_combine:
        s2 = s2.replace(combine=Combine.ROWS)
    if block_m >= TAIL_BLOCK_M and (TAIL_WITH_ROWS or not rows_combine):
        tail = tail_by_rows(block_m, rows) if TAIL_BY_ROWS else TAIL_M * block_m // 128
        s2 = s2.replace(tail_m=tail)
        if block_m <= TAIL_STAGE1_MAX_BLOCK_M or rows_combine:
            s1 = s1.replace(tail_m=tail)
    if block_m == 16:
        hit = min(shape.experts, tokens * shape.topk)
        ctas = hit * -(-shape.inter // s1.block_n)
        few = SPLIT_K_FEW_CTAS and tokens * shape.topk <= SPLIT_K_FEW_PAIRS
        split = few_pairs_split(ctas, shape.hidden, s1.block_k) if few else v2_split(ctas, shape.hidden, s1.block_k)
        s1 = s1.replace(split_k=split)
        if tokens * shape.topk <= SLOTS_MAX_ROWS:  # stage 2 never splits: see SLOTS_MAX_ROWS
            s2 = s2.replace(combine=Combine.SLOTS)
    if (E4M3_BY_DEFAULT and e4m3 and Path(path) is Path.A8W4 and block_m >= E4M3_MIN_BLOCK_M
            and shape.hidden >= E4M3_MIN_HIDDEN):
        s1 = on_e4m3(shape, 1, s1)
    return MoEConfig(s1, s2)


REG_PRESSURE = legality.Reason.REG_PRESSURE


def on_e4m3(shape: MoEShape, stage: int, tile: TileConfig) -> TileConfig:
    """`tile` as an a8w4 stage on e4m3 wgmma (Mma.WGMMA_E4M3). Its two accumulator chains (swmoe.weight_mma) double
    the accumulators, so BLOCK_M halves (then BLOCK_N) until legality's register rule passes: the prefill tile
    M128N128 w8 becomes M64N128 w8 (sm_90: 245 registers, no spill, where M128N128 spilled 160 words)."""
    cfg = tile.replace(mma=Mma.WGMMA_E4M3)
    while getattr(legality.check(shape, Path.A8W4, stage, cfg, legality.H100), "reason", None) is REG_PRESSURE:
        if cfg.block_m > 16:  # the tail stays while below the halved block: the plan's rows do not change
            tail = cfg.tail_m if cfg.tail_m < cfg.block_m // 2 else 0
            cfg = cfg.replace(block_m=cfg.block_m // 2, tail_m=tail)
        elif cfg.block_n > 16:
            cfg = cfg.replace(block_n=cfg.block_n // 2)
        else:
            break
    return cfg


def default_config(shape: MoEShape, path: Path | str, tokens: int, *, interpreter: bool = False,
                   kernels: str = "v2", e4m3: bool = False) -> MoEConfig:
    """The baseline MoEConfig for one launch of `shape` on `path` at `tokens` tokens: the v2 kernels' rule, or
    with kernels="v1" the rule of the v1 levers (kept while the two are measured side by side). `e4m3`: the
    weights carry the e4m3 layout (MoEWeights.e4m3), which lets a8w4 take the e4m3 stage 1 (v2_config)."""
    if kernels == "v2":
        return v2_config(shape, path, tokens, e4m3=e4m3)
    if kernels != "v1":
        raise ValueError(f"kernels={kernels!r}: expected 'v2' or 'v1'")
    Path(path)  # validates
    rows = _rows_per_expert(shape, tokens)
    if rows <= 16:
        block_m, warps, stages = 16, 4, 3
    elif rows <= 32:
        block_m, warps, stages = 32, 4, 4
    elif rows <= 96:
        block_m, warps, stages = 64, 4, 3
    else:
        block_m, warps, stages = 128, 8, 3
    prefer_n = 64 if block_m <= 32 else 128
    mma = Mma.UPCAST if interpreter else Mma.DOT_SCALED
    common = dict(block_m=block_m, block_k=128, group_m=1 if block_m <= 32 else 8, num_warps=warps,
                  num_stages=stages, mma=mma)
    s1 = TileConfig(block_n=_block_n(shape.inter, prefer_n), **{**common, "block_k": _block_k(shape.hidden, 128)})
    s2 = TileConfig(block_n=_block_n(shape.hidden, prefer_n), combine=Combine.ATOMIC,
                    **{**common, "block_k": _block_k(shape.inter, 128)})
    if block_m == 16:
        s1 = s1.replace(block_n=32, block_k=_block_k(shape.hidden, 256), num_warps=2, num_stages=2)
        hit = min(shape.experts, tokens * shape.topk)
        s1 = s1.replace(split_k=decode_split(hit * shape.inter // s1.block_n, shape.hidden, s1.block_k))
        s2 = s2.replace(split_k=decode_split(hit * shape.hidden // s2.block_n, shape.inter, s2.block_k))
    elif block_m >= 64 and Path(path) is not Path.A16W4:
        # The MX prefill tile M64N128 4 warps, where 128 divides the stage's N; a 64-wide N (gpt-oss: 2880)
        # keeps the 128-row 8-warp tile, which measured faster there (gpt-oss-120b a4w4 T=32768: 64.8 ms
        # against 89.6 ms for M64N64 4 warps, results/h100/2026-11-25_bench_heuristic_*.csv).
        if shape.inter % 128 == 0:
            s1 = s1.replace(block_m=64, block_n=128, num_warps=4)
        if shape.hidden % 128 == 0:
            s2 = s2.replace(block_m=64, block_n=128, num_warps=4)
        elif rows >= 256:
            s2 = s2.replace(block_m=256)
    elif block_m >= 64:
        s1 = s1.replace(block_n=_block_n(shape.inter, 64), num_warps=4)
        if rows >= 256:
            s2 = s2.replace(block_m=256, block_n=_block_n(shape.hidden, 128))
    return MoEConfig(s1, s2)
