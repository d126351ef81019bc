"""Which variant of the v2 kernels each launch takes: pure rules of (config, shape, path), each next to the
H100 measurement that chose it. One owner: the stage wrappers (kernels/swmoe.py), the layer plan and the tests
read them here, and benchmarks/rule_ab.py A/Bs a rule by setting its constant on this module.

Axis legend: T tokens, P = T*A pairs, E experts, BM / BN / BK the tile, K the stage's reduced axis.

Measured, not taken (2026-12-06, 7cde68f): a bulk L2 prefetch at decode (`cp.async.bulk.prefetch.L2` of each BM-16
CTA's whole K range of weights at its start, stage 1 also prefetching its experts' stage-2 weights, and a variant
that issued it all before stage 1's PDL wait, overlapping the align kernel). H100, whole layer, graph replay, L2
flushed (results/h100/2026-12-06_prefetch_ab_7cde68f.log): off / after the wait / before the wait, us:
deepseek-v3-tp8 T=1 34.5 / 38.8 / 35.4, deepseek-v4-tp8 T=1 42.9 / 49.2 / 44.5, gpt-oss-120b T=16 278 / 366 / 383,
deepseek-v3 T=64 1729 / 2673 / 2777. Issued before the wait it cost about a microsecond and bought nothing: at
decode the weight stream is not what the layer waits on (the kernels are latency- and instruction-bound, session
8's ncu); from T = 16 the copy engine's extra L2 traffic slowed the DRAM-bound main loops by up to 35%.
"""

from __future__ import annotations

import torch
import triton

from mxmoe.config import Combine, Mma, TileConfig
from mxmoe.shapes import Path

# See defers_rounding. H100, whole layer us, fused -> deferred (results/h100/2026-12-06_mx_defer_ab_0b53aba.log):
# deepseek-v4-tp8 T=1024 a8w4 1919 -> 1664 (a16w4 1636), kimi-k2-tp8 T=1024 a8w4 1073 -> 982, deepseek-v3-tp8 T=1024
# a4w4 896 -> 817, gpt-oss-120b T=4096 a8w4 2780 -> 2547 (a16w4 2433), deepseek-v3 T=4096 a8w4 8436 -> 7787.
# Since 2026-12-07 the pass rounds stage 1's bf16 h in place (the reference rounds h to bf16 before the MX grid),
# where it read fp32 h and wrote a second buffer. H100, whole layer, graph replay, L2 flushed, us fp32 pass / bf16
# in place / fused (1279041, results/h100/2026-12-07_defer_ab_1279041.csv): T=4096 gpt-oss-20b a8w4 1879 / 1831 /
# 2015 (a16w4 1748), a4w4 1876 / 1827 / 2033, gpt-oss-120b a8w4 2291 / 2238 / 2505 (a16w4 2177), gpt-oss-3072 a8w4
# 2519 / 2437 / 2725, kimi-k2-tp8 a8w4 1717 / 1702 / 2108 (a16w4 1611), deepseek-v3-tp8 a8w4 1737 / 1721 / 2101,
# deepseek-v4-tp8 a4w4 2232 / 2228 / 2438, deepseek-v3 a4w4 7210 / 7136 / 7951.
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


def finishes_atomic_in_kernel(cfg: TileConfig, k: int) -> bool:
    """Whether a v2 stage 2 (K = `k`) with the atomic combine takes its zeroed sums from stage 1 and rounds them
    itself (per-token arrival counters) instead of a memset before it and a cast kernel after it: BM 16 tiles with
    at least ATOMIC_FINISH_MIN_K_STEPS K steps, where that measured faster (see the constants)."""
    return (cfg.combine is Combine.ATOMIC and cfg.block_m <= ATOMIC_FINISH_MAX_BLOCK_M
            and triton.cdiv(k, cfg.block_k * cfg.split_k) >= ATOMIC_FINISH_MIN_K_STEPS)


def counters_needed(cfg: TileConfig, stage: int, n: int, k: int, max_blocks: int, tokens: int) -> int:
    """The arrival counters (int32 zeros) a v2 launch over [n outputs, k reduced] takes: one per output tile of a
    split stage 1; one per N column of a slots-combined stage 2, one per token and N column of an atomic one that
    `finishes_atomic_in_kernel`; none otherwise."""
    if stage == 1:
        return max_blocks * triton.cdiv(n, cfg.block_n) if cfg.split_k > 1 else 0
    if cfg.combine is Combine.SLOTS:
        return triton.cdiv(n, cfg.block_n)
    return tokens * triton.cdiv(n, cfg.block_n) if finishes_atomic_in_kernel(cfg, k) else 0


def deferred_h_dtype(cfg: TileConfig) -> torch.dtype:
    """The dtype a stage 1 that `defers_rounding` stores h in, before the pass rounds it to the path's grid: bf16
    (rounded in place), or for an e4m3 stage fp32 holding the same bf16-rounded values, because its bf16 store made
    ptxas serialize the two fp8 accumulator chains (sm_90 CPU compile, M64N128K128 w8: ptxas info C7515 'non wgmma
    instructions defining accumulator registers', DEPBAR 0x0 after each of 16 wgmmas instead of 0x7, 203 registers
    against 244), which tests/kernels/test_e4m3_stage1.py guards."""
    return torch.float32 if cfg.mma.e4m3 else torch.bfloat16


# See quant_overlaps_align. H100 timeline (layer_timeline.py, 2fdc1fa, results/h100/2026-12-07_session19b_2fdc1fa.log):
# with the quantization first, kimi-k2-tp8 T=4096 a8w4's stage 1 waited 112 us for quant (43 us, near the 39 us
# byte floor) and the two align kernels, which ran 4x slower behind it (about 80 us against a16w4's 20 us: behind
# 59 MB of dirty L2 lines). Whole layer, graph replay, L2 flushed, us first / overlapped (..._quant_ab_2fdc1fa.csv):
# kimi-k2-tp8 T=4096 a8w4 1709 / 1650, deepseek-v3-tp8 a8w4 1729 / 1669, a4w4 1737 / 1668, gpt-oss-20b a8w4 1877 /
# 1832, kimi-k2-tp8 T=1024 a8w4 704 / 694, gpt-oss-120b T=256 a4w4 631 / 628. Bigger quant tiles lost there
# (ROWS 32: 0.94-1.00x, ROWS 64 with 8 warps: 0.94-1.00x).
# Up to QUANT_FIRST_MAX_PAIRS (token, slot) pairs it lost: H100 at 0f08838, whole layer us overlapped / first
# (results/h100/2026-12-07_overlap_ab_0f08838.csv): gpt-oss-20b a8w4 T=1 55.5 / 47.2, T=2 80.8 / 75.6, deepseek-v3
# a8w4 T=1 112.4 / 101.3, gpt-oss-120b a4w4 T=2 71.8 / 65.0 (4 to 16 pairs); from 64 pairs it won or tied:
# gpt-oss-20b T=16 173.5 / 176.1, T=128 209.8 / 212.7, deepseek-v3 T=16 837.2 / 839.6, T=256 2057 / 2063,
# kimi-k2-tp8 T=64 a4w4 395.8 / 398.5, gpt-oss-120b T=512 745.9 / 747.6, deepseek-v3-tp8 T=1024 605.8 / 640.4.
# (The grid of 0f08838 caught it: a8w4 / a16w4 at gpt-oss-20b T=2 0.87x, deepseek-v3 T=1 0.86x.)
QUANT_OVERLAPS_ALIGN = 1
QUANT_FIRST_MAX_PAIRS = 32


def quant_overlaps_align(path: Path, cfg: TileConfig, pairs: int) -> bool:
    """Whether the layer of `pairs` (token, slot) pairs launches the align kernels before an MX path's input
    quantization and runs that kernel overlapped with them (`sync.overlap_begin`: it reads only the layer input),
    instead of quantizing first."""
    return (bool(QUANT_OVERLAPS_ALIGN) and path is not Path.A16W4 and cfg.mma is Mma.WGMMA
            and pairs > QUANT_FIRST_MAX_PAIRS)


def defers_rounding(path: Path, cfg: TileConfig) -> bool:
    """Whether stage 1 leaves an MX path's rounding of h to a separate pass (kernels/quant.py) instead of its
    epilogue: from BLOCK_M DEFER_MIN_BLOCK_M, where the fused per-32 rounding (a group spans two warps of the wgmma
    accumulator) costs the main loop its register budget."""
    return path is not Path.A16W4 and cfg.block_m >= DEFER_MIN_BLOCK_M


# The direct decode layer (kernels/decode.py: two kernels, no alignment) runs a v2 config whose stages both take
# BLOCK_M 16 and whose stage 2 combines by slots, up to DIRECT_MAX_PAIRS (token, slot) pairs and an inter of at
# most DIRECT_MAX_INTER. H100, whole layer, CUDA-graph replay, L2 flushed, direct / sorted us at 9ffc544 (with the
# few-pairs split, heuristic.py; results/h100/2026-12-06_direct_{inter,pairs}_ab_9ffc544.csv): deepseek-v4-tp8
# (inter 512) T=1 32.8 / 37.3, a8w4 34.7 / 38.8, T=2 51.0 / 57.4; deepseek-v3-tp8 T=2 (18 pairs) 39.0 / 48.5, T=3
# (27 pairs) 52.7 / 59.4; gpt-oss-120b (inter 2880) T=1 46.1 / 45.5 and gpt-oss-20b 46.1 / 45.7 (lost: its stage 2
# rebuilds h from the split partials in each of 23 N tiles). The slots combine caps the pairs at 32 anyway.
# History: at 63b1ec1, before stage 2 built h on one row, it lost at inter 512 (0.96x) and tied at 18 pairs.
DIRECT_MAX_PAIRS = 32
DIRECT_MAX_INTER = 512
# Weight tiles (K steps) of its stage 2 loaded before the PDL wait, at most 3 (the kernel's unrolled preloads). A
# fourth (deepseek-v4-tp8's whole K of 4 steps before the wait) compiled to 180 registers against 161 (sm_90), so no
# stage-2 CTA fit beside stage 1's three, and lost on the H100 (8306159, results/h100/2026-12-07_decode_ab2_8306159.csv,
# whole layer us): deepseek-v4-tp8 T=1 a16w4 30.6 -> 34.9, a8w4 32.4 -> 38.1, a4w4 32.2 -> 37.7; removed.
DIRECT_PRELOAD_STEPS = 3
# Whether the direct stage 1 reads W13's N-major copy where the weights carry one (MoEWeights.with_decode_layout, an
# opt-in that adds the weights' size again; kernels/layout.py): a slab's K range contiguous, one 8 KB run a slab over
# a deepseek-v4-tp8 split instead of four 2 KB runs at a 32 KB stride a K step. Built in session 25 without a GPU;
# benchmarks/decode_pattern.py (`nmajor` against `layout`) says whether the pattern bounds stage 1, and gpu_pass.sh's
# decode_pattern step A/Bs the layer (rule_ab.py MODEL:T:PATH:nmajor, with both rules 0 and with this one alone).
DIRECT1_N_MAJOR = 1
# The same for stage 2 and W2's copy (a program's [BN, K] tile is then one contiguous run: 32 KB at deepseek-v4-tp8
# against two 4 KB runs a K step at a 224 KB stride).
DIRECT2_N_MAJOR = 1
# A register cap (maxnreg) for its a8w4 stage 2 where it preloads at most DIRECT_S2_CAP_MAX_PRE K steps (0: none).
# sm_90 CPU compile, deepseek-v3-tp8 T=1 (2 K steps, both preloaded): a8w4 146 registers against a4w4's 128 (the e4m3
# rounding of h), so one CTA fits an SM beside stage 1's three instead of two; capped at 128, no spill. H100 whole
# layer, graph replay, L2 flushed, us uncapped -> capped (3094e39, results/h100/2026-12-07_decode_ab_3094e39.csv):
# deepseek-v3-tp8 T=1 a8w4 28.1 -> 24.5, kimi-k2-tp8 26.4 -> 23.2; deepseek-v4-tp8 T=1 a8w4 (3 preloaded steps, 157
# registers, capped: 96 bytes of stack) 32.1 -> 34.3, so not there. a16w4 / a4w4 compile to 128 at those points.
# Confirmed under the rule (8306159, ..._decode_ab2_8306159.csv), capped / uncapped: deepseek-v3-tp8 a8w4 T=1 24.7 /
# 28.0, T=2 40.1 / 41.2, kimi-k2-tp8 T=1 23.3 / 26.0.
DIRECT_S2_MAXNREG_A8W4 = 128
DIRECT_S2_CAP_MAX_PRE = 2
# Tried and dropped (H100, bbdaf3b, results/h100/2026-12-07_register_caps_ab_bbdaf3b.csv, whole layer us, now /
# capped): caps on the other decode stages. Under a cap of at most 96 ptxas compiles the a16w4 direct stage 1
# without keeping its wgmma A registers live across the groups in flight (sm_90: 110 registers -> 48 at a cap of 64,
# no spill), which leaves room for two stage-2 CTAs beside stage 1's three; it lost everywhere: deepseek-v4-tp8 T=1
# 30.7 / 32.7, T=2 49.3 / 51.8, deepseek-v3-tp8 T=1 22.9 / 23.5, kimi-k2-tp8 T=1 21.5 / 23.1 (with stage 2 at 160
# too: 32.7, 27.1, 25.7). The sorted decode stages at 64 / 96 (108-112 -> 54-63, 120-130 -> 89-93 registers, no
# spill) lost 2-4%: deepseek-v3 T=1 94.6 / 96.8, deepseek-v3-tp8 T=16 156.8 / 163.6, kimi-k2-tp8 T=8 99.2 / 103.1.
# Also dropped (H100, fe0a50c, results/h100/2026-12-07_chain1_ab_fe0a50c.csv, whole layer us, now / tried): a direct
# stage 1 computing BLOCK_N contiguous rows of W13's stacked [2I] axis in one accumulator chain, drained every K step
# (75 registers and 31 KB against 110 and 46 KB: six CTAs an SM instead of three, twice the programs): deepseek-v4-tp8
# T=1 30.6 / 30.2 (30.0 with the split held to 288 CTAs), deepseek-v3-tp8 T=1 22.6 / 23.3, kimi-k2-tp8 T=1 21.5 /
# 21.5, deepseek-v4-tp8 a8w4 T=1 32.1 / 31.8, T=2 49.2 / 49.2: twice the occupancy bought no bandwidth. Stage 2 at
# BLOCK_N 64 (16 weight rows a warp, 91 registers against 161) lost 8-13% (33.2, 26.2, 24.3, 36.3 at those points).
# And (45c41ce, results/h100/2026-12-08_ahead_ab_45c41ce.csv, 3 rounds): the direct stage 2 building its preloaded
# steps' h tiles before any MMA, so all its loads of stage 1's partial sums leave right after the PDL wait instead of
# one step's 14 behind the previous step's full wgmma wait (sm_90 SASS): deepseek-v4-tp8 T=1 30.6 / 30.8, a8w4 32.4 /
# 31.6, T=2 48.5 / 49.3, deepseek-v3-tp8 T=1 22.8 / 25.8, kimi-k2-tp8 T=1 21.2 / 23.6 (128 -> 165 registers there:
# fewer stage-2 CTAs beside stage 1's). The serialized partial-sum loads are not what holds the decode back.


def direct_preload(steps: int) -> int:
    """The preloaded stage-2 K steps of a direct split of `steps` K steps."""
    return max(1, min(steps, DIRECT_PRELOAD_STEPS, 3))


def direct_register_cap(path: Path, preload: int) -> int:
    """The direct stage 2's register cap on `path` with `preload` K steps loaded before its wait (0: none)."""
    return DIRECT_S2_MAXNREG_A8W4 if path is Path.A8W4 and preload <= DIRECT_S2_CAP_MAX_PRE else 0


def runs_direct(config, tokens: int, topk: int, inter: int) -> bool:
    """Whether the layer of `config` at `tokens` runs the direct decode layer (see the constants)."""
    s1, s2 = config.stage1, config.stage2
    return (s1.mma is s2.mma is Mma.WGMMA and s1.block_m == 16 and s2.block_m == 16
            and s2.combine is Combine.SLOTS and tokens * topk <= DIRECT_MAX_PAIRS and inter <= DIRECT_MAX_INTER)


# See e4m3_promote_steps. 0: the two accumulator chains (swmoe.weight_mma: CHAINS_WHY), measured on the H100
# (761a48a) but failing the real-size guardrail with both stages forced (1aafe28: logits_diff 2.5e-2 / 4.3e-2 >
# 1e-2, docs/fp8.md). N > 0: one chain per chunk of N K steps, added into f32 totals after each chunk (sm_90 CPU
# compile at N = 4, stage 1 M64N128K128 w8: asynchronous inside each chunk, 242 registers, no spill, 64 KB of
# shared memory; stage 2 M64N256K64 w8: 228 registers, 32 KB). Its speed and error are not measured: rule_ab
# (rules.E4M3_PROMOTE_STEPS=4) and the guardrail with --e4m3 decide it. Legality's shared-memory model counts the
# chains' two staged steps a loop iteration, so it overstates a promoted stage's (one step: half the bytes).
E4M3_PROMOTE_STEPS = 0


def e4m3_promote_steps(cfg: TileConfig) -> int:
    """K steps an e4m3 stage sums in its fp8 accumulator before adding them into f32 (0: the two chains over the
    whole K range); 0 for a stage on bf16 carriers, whose wgmma accumulates in f32."""
    return E4M3_PROMOTE_STEPS if cfg.mma.e4m3 else 0


# See stage2_drains. 0: off. Triton 3.6 leaves 3 of the sorted stage 2's 4 k16 wgmma
# groups in flight at its K loop's back edge while their A fragments are registers (docs/architecture.md, "Known
# hazard"); in every stage-2 config compiled for sm_90 the loop top then writes some of those registers before its
# first wait (deepseek-v3 T = 8192, M128N256K64 w8 t64: 96 and 75 writes, benchmarks/wgmma_hazard.py), which
# corrupted that layer on the H100 under the 9-instruction decode (session 21). Draining every wgmma at the end of
# each K step leaves none in flight (same compile: 0 and 0) at the cost of the last groups' overlap with the next
# step's decode. H100 at 896c613 (results/h100/2026-12-07_session22a_896c613.log, drain_ab_896c613.csv): the T = 8192
# layer is correct both ways (3 runs agree to 7.8e-3 / 3.9e-3, max_rel 2.2e-3), so is the 9-instruction decode
# with the drain; the drain costs 0.5-3.8% (whole layer, drain / now: deepseek-v3 T=4096 0.995x, gpt-oss-120b
# T=4096 0.962x, gpt-oss-20b T=1024 0.978x, kimi-k2-tp8 T=2048 a8w4 0.995x, deepseek-v3 T=64 1.000x), and the
# 9-instruction decode with it gains nothing back (deepseek-v4-tp8 T=1 30.5 / 30.4, kimi-k2-tp8 T=2048 901 / 895,
# deepseek-v3 T=4096 7062 / 7272 us). So it stays off: the kernels as shipped measure correct (the T=8192
# agreement test guards them) and the lever is the switch to throw if a change exposes the hazard again.
STAGE2_DRAIN = 0


def stage2_drains(cfg: TileConfig) -> bool:
    """Whether the sorted stage 2 on bf16 carriers waits for all its wgmma at the end of each K step (STAGE2_DRAIN;
    the e4m3 forms keep their chains)."""
    return bool(STAGE2_DRAIN) and not cfg.mma.e4m3


# See k_floor. The sorted stages' K loops may run zero times (split_k_range's empty splits), and that path makes ptxas
# serialize every wgmma of some tiles (common.k_loop_end: C7515_WHY). sm_90 CPU compiles at 35a52d8 of every default
# config (results/cpu/2026-12-07_c7515_audit_*): a16w4, 8 shapes x 16 T: stage 2 at M64N128K64 w4 without a bias
# (deepseek-v3 / kimi-k2 T = 1024 and 2048) is serialized, 8 HGMMA a K step each waiting for completion; with the
# floor 3 of 4 groups stay in flight, as the same tile with a bias (gpt-oss-20b T = 512) already had. a8w4 and a4w4
# alike, 8 shapes x 6 T: 18 of 48 points each, the unsplit BLOCK_M 16 / 32 stage 1 at T = 64 and 256 on every shape
# (its epilogue rounds h to MXFP8) and the same stage 2 as a16w4. Stage 1 with tail tiles at BLOCK_M 128 w8 compiles
# with both loops serialized without the floor; with it 7 of 16 groups stay in flight. Stage 1's loops have no
# loop-top writes to in-flight A registers, stage 2's do (docs/architecture.md, "Known hazard"): the H100 GPU suite
# (269 passed, its T = 8192 agreement test included) ran with the floor on everywhere at fe0a50c.
# Whole layer, H100, rule_ab, 4 rounds, fe0a50c (results/h100/2026-12-07_floor_ab4_fe0a50c.csv): the floor alone
# is neutral from BLOCK_M 64 (deepseek-v3 T=1024 0.985x, kimi-k2 T=2048 1.008x, deepseek-v3 T=4096 / 8192 1.004 /
# 1.013x, gpt-oss-120b T=4096 0.999x, kimi-k2 T=4096 1.046x (noisy), gpt-oss-20b T=2048 0.985x) and what makes
# stage-1 tails at BLOCK_M 128 win (heuristic.TAIL_STAGE1_MAX_BLOCK_M); at BLOCK_M 16 it lost kimi-k2-tp8 a8w4 T=256
# (0.971x, four tight rounds) and gained gpt-oss-120b a8w4 T=256 (1.014x, two rounds): K_FLOOR_MIN_BLOCK_M keeps the
# decode tiles as they were.
K_FLOOR = 1
K_FLOOR_MIN_BLOCK_M = 64


def k_floor(cfg: TileConfig) -> bool:
    """Whether this sorted stage's K loops take common.k_loop_end's bound (K_FLOOR, from K_FLOOR_MIN_BLOCK_M)."""
    return bool(K_FLOOR) and cfg.block_m >= K_FLOOR_MIN_BLOCK_M
