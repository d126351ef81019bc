"""Resource models of one stage launch: its geometry, shared memory per CTA and registers per thread.

No torch or triton here: pure functions of (shape, path, stage, config), which `mxmoe.legality` judges against a
device's limits.

Stage geometry: stage 1 has N = inter (each program holds a gate and an up tile: two weight streams,
two accumulators) and K = hidden; stage 2 has N = hidden and K = inter, one of each.

Shared memory per CTA (`smem_breakdown`; constants in `SmemModel`, fitted to Triton 3.6 sm_90 compiles of
these kernels, `metadata.shared`, see docs/legality.md):

    act      = act_buffers * BM*BK*b_act [+ act scales]    b_act = 2 (a16w4), 1 (a8w4), 1/2 (a4w4) B/element
    weights  = n_w * w_buffers * (BN*BK/2 [+ BN*BK/32])     n_w = 2 in stage 1 (gate + up), 1 in stage 2
    upcast   = BN*BK*2                                       the bf16 weight operand wgmma reads (x1)
    epilogue = 4 * min(BM*BN, R * max(BN, R))               stage 2 only: fp32 accumulator -> atomic layout
                                                             (the stage-1 split-K atomics took none)
    total    = max(act + weights + upcast, epilogue) + fixed

    w_buffers   = num_stages + PIPELINE_OFFSET (-1); act_buffers the same, +1 for a bf16 activation fed to
                  tl.dot_scaled as loaded (num_warps >= 4, BLOCK_N >= 64). Every activation and weight tile
                  is staged: cp.async needs each row to start on >= 4 bytes, and every loop start k0 is
                  known to be a multiple of 16 elements (K, a multiple of 32, is an int argument Triton
                  specializes as divisible by 16; stage 2 at split_k = 1 starts at pid_k * K, and a split
                  of either stage at a multiple of the constexpr BLOCK_K). Not the trip count: the loop
                  bounds are runtime values, so a one-iteration loop (K = BLOCK_K, one block per split)
                  still gets num_stages - 1 buffers per stream.
    [scales]    when K/32 is a multiple of 16, BLOCK_K >= 128 and the tile gives each thread >= 4 bytes
                (Triton pipelines a load by cp.async only then), and only where k0 // 32 has a known
                alignment: stage 1, and stage 2 with split_k > 1 (k0 a multiple of BLOCK_K); not stage 2
                at split_k = 1 (k0 = pid_k * K + kk is known divisible by 16, so k0 // 32 by nothing)
    upcast      only under wgmma (BLOCK_M % 64 == 0, num_warps % 4 == 0) and when the activation is not a
                bf16 tile fed straight to tl.dot_scaled (mma.sync keeps operands in registers)
    R           16 * num_warps under wgmma, 16 under mma.sync

Registers per thread (`register_model`): acc = n_acc*BM*BN/(32*num_warps) fp32 (n_acc = 2 in stage 1);
operand = the bf16 tiles the upcast builds in registers: BN*BK*2 bytes of weights, plus BM*BK*2 of
activation unless it is a bf16 tile fed straight to tl.dot_scaled, over 4 bytes x threads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

from mxmoe.config import TileConfig
from mxmoe.shapes import MoEShape, Path

MX_GROUP = 32  # elements per e8m0 scale


@dataclass(frozen=True, slots=True)
class SmemModel:
    """The shared-memory formula's constants, in one place so they can be refitted to real compiles.

    Defaults: Triton 3.6, sm_90, fitted to ~280 compiles of these kernels, and the stage-2 split-K scales to
    192 more (docs/legality.md).
    """

    pipeline_offset: int = -1  # buffers per pipelined operand stream = num_stages + offset
    direct_operand_extra: int = 1  # one more buffer for a bf16 activation tl.dot_scaled reads as loaded ...
    direct_min_warps: int = 4  # ... seen only with num_warps >= 4 ...
    direct_min_block_n: int = 64  # ... and BLOCK_N >= 64
    wgmma_min_block_m: int = 64  # Triton picks wgmma (operands in smem) for BLOCK_M % 64 == 0 ...
    wgmma_warp_multiple: int = 4  # ... and num_warps a multiple of a 4-warp group
    upcast_operand_bytes: float = 2.0  # bytes per weight element of the bf16 operand wgmma reads (one tile)
    scale_row_alignment: int = 16  # K/32 must be a multiple (Triton's divisibility specialization) ...
    scale_min_row_bytes: int = 4  # ... BLOCK_K/32 >= 4 contiguous bytes per row ...
    scale_min_bytes_per_thread: int = 4  # ... and >= 4 bytes per thread for cp.async to pipeline a scale tile
    epilogue_bytes: float = 4.0  # stage 2: bytes per element of the fp32 accumulator's layout conversion
    epilogue_rows_per_warp: int = 16  # R = 16 * num_warps under wgmma ...
    epilogue_rows_mma_sync: int = 16  # ... and 16 under mma.sync
    fixed_bytes: int = 0  # barriers and small conversion scratch (0 to 512 B seen; see SMEM_SAFETY_BYTES)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


SMEM_MODEL = SmemModel()


@dataclass(frozen=True, slots=True)
class StageGeometry:
    """The GEMM one stage runs: N and K of its weights, weight streams and accumulators per program."""

    n: int
    k: int
    weight_streams: int
    accumulators: int


def stage_geometry(shape: MoEShape, stage: int) -> StageGeometry:
    if stage == 1 and not isinstance(stage, bool):
        return StageGeometry(n=shape.inter, k=shape.hidden, weight_streams=2, accumulators=2)
    if stage == 2:
        return StageGeometry(n=shape.hidden, k=shape.inter, weight_streams=1, accumulators=1)
    raise ValueError(f"stage must be 1 or 2, got {stage!r}")


def _uses_wgmma(cfg: TileConfig, model: SmemModel) -> bool:
    return cfg.block_m % model.wgmma_min_block_m == 0 and cfg.num_warps % model.wgmma_warp_multiple == 0


def _act_direct(path: Path, cfg: TileConfig) -> bool:
    """The activation tile meets the MMA as loaded (bf16 into tl.dot_scaled): no register upcast."""
    return path is Path.A16W4 and cfg.mma.needs_dot_scaled


def _scales_pipelined(geo: StageGeometry, stage: int, cfg: TileConfig, tile_bytes: float, model: SmemModel) -> bool:
    """Whether Triton stages an e8m0 scale tile through shared memory (cp.async) rather than registers: only
    where the loop start is a multiple of the constexpr BLOCK_K (not stage 2's pid_k * K at split_k = 1)."""
    return ((stage == 1 or cfg.split_k > 1) and (geo.k // MX_GROUP) % model.scale_row_alignment == 0
            and cfg.block_k // MX_GROUP >= model.scale_min_row_bytes
            and tile_bytes / (32 * cfg.num_warps) >= model.scale_min_bytes_per_thread)


def smem_breakdown(shape: MoEShape, path: Path | str, stage: int, cfg: TileConfig,
                   model: SmemModel = SMEM_MODEL) -> dict[str, int]:
    """Modelled shared memory per CTA, term by term, in bytes; `total` is what legality compares.

    Terms: act (pipelined activation tiles + scales), weights (pipelined packed weights + scales, all
    streams), upcast (the bf16 weight operand wgmma reads), mainloop (their sum), epilogue (the stage-2
    accumulator layout conversion, which reuses the main loop's space), fixed, total.
    """
    path = Path(path)
    geo = stage_geometry(shape, stage)
    bm, bn, bk = cfg.block_m, cfg.block_n, cfg.block_k
    base = max(1, cfg.num_stages + model.pipeline_offset)
    if cfg.mma.v2:
        return _smem_v2(geo, stage, cfg, base, model)
    direct = _act_direct(path, cfg)
    extra = direct and cfg.num_warps >= model.direct_min_warps and bn >= model.direct_min_block_n
    act_buffers = base + (model.direct_operand_extra if extra else 0)

    act_tile = bm * bk * {Path.A16W4: 2.0, Path.A8W4: 1.0, Path.A4W4: 0.5}[path]
    act_scales = bm * bk / MX_GROUP
    if path is not Path.A16W4 and _scales_pipelined(geo, stage, cfg, act_scales, model):
        act_tile += act_scales
    w_tile = bn * bk / 2
    w_scales = bn * bk / MX_GROUP
    if _scales_pipelined(geo, stage, cfg, w_scales, model):
        w_tile += w_scales

    act = act_buffers * act_tile
    weights = geo.weight_streams * base * w_tile
    upcast = model.upcast_operand_bytes * bn * bk if _uses_wgmma(cfg, model) and not direct else 0.0
    mainloop = act + weights + upcast
    epilogue = 0.0
    if stage == 2:
        rows = model.epilogue_rows_per_warp * cfg.num_warps if _uses_wgmma(cfg, model) else model.epilogue_rows_mma_sync
        epilogue = model.epilogue_bytes * min(bm * bn, rows * max(bn, rows))
    total = max(mainloop, epilogue) + model.fixed_bytes
    return {
        "act": math.ceil(act),
        "weights": math.ceil(weights),
        "upcast": math.ceil(upcast),
        "mainloop": math.ceil(mainloop),
        "epilogue": math.ceil(epilogue),
        "fixed": model.fixed_bytes,
        "total": math.ceil(total),
    }


def _smem_v2(geo: StageGeometry, stage: int, cfg: TileConfig, base: int, model: SmemModel) -> dict[str, int]:
    """The v2 kernels (mma=wgmma), fitted exactly to Triton 3.6 sm_90 compiles (`metadata.shared`, 10 configs of
    both stages from M16N64K128 s4 = 47104 B to M128N256K128 s3 = 139264 B; docs/legality.md): the bf16 activation
    tile gets num_stages buffers, each weight stream num_stages - 1 of its packed values plus its scales, which
    take BN*BK/8 bytes (the 4-byte scale word is loaded by each of the 4 lanes sharing it). The decoded weights stay
    in registers; the stage-2 epilogue's conversion reuses the main loop's space. On the H100, M128N256K128 s5
    (245760 B by this model) failed to launch with "Required: 245760" (results/h100/2026-12-06_scan_v2_e04bff9.log).
    mma=wgmma_e4m3 stages one byte per activation value and the same bytes of weights and dcodes, for the two K
    steps each loop iteration takes (two accumulator chains, swmoe.weight_mma): stage 1 M64N128K128 w8 s3 131072 B
    and M128N64K128 w8 s3 139264 B compiled, as modelled (sm_90, CPU, 2026-12-06).
    """
    del stage, model
    bm, bn, bk = cfg.block_m, cfg.block_n, cfg.block_k
    steps = 2 if cfg.mma.e4m3 else 1
    act = steps * (base + 1) * bm * bk * (1 if cfg.mma.e4m3 else 2)
    weights = steps * geo.weight_streams * base * (bn * bk // 2 + bn * bk // 8)
    return {"act": act, "weights": weights, "upcast": 0, "mainloop": act + weights, "epilogue": 0, "fixed": 0,
            "total": act + weights}


V2_LIVE_K = 128


def register_model(path: Path | str, stage: int, cfg: TileConfig) -> dict[str, int]:
    """Modelled 32-bit registers per thread: `acc` (fp32 accumulators; e4m3 keeps two chains of each, even and odd
    K steps: swmoe.weight_mma), `operand` (the decoded weight tiles), `total`. sm_90 compiles of stage 1 e4m3 (CPU,
    2026-12-06, deepseek-v3): M64N128K128 w8 (acc 128) 245 registers, M128N64K128 w8 (128) 251, no spill;
    M128N128K128 w8 (256) spilled 160 words."""
    path = Path(path)
    n_acc = (2 if stage == 1 else 1) * (2 if cfg.mma.e4m3 else 1)
    threads = 32 * cfg.num_warps
    acc = math.ceil(n_acc * cfg.block_m * cfg.block_n / threads)
    width = 1 if cfg.mma.e4m3 else 2  # bytes per decoded weight value
    # v2: the compiler decodes a weight tile and feeds it to wgmma a K block at a time, the gate tile before the up
    # tile, so one tile of at most V2_LIVE_K columns counts (sm_90 stage 1, w4: M16N64K512 compiled to 193 registers
    # and M16N256K128 to 210, no spill, M16N128K256 to 255 with 2 spilled words, where both whole tiles would model
    # 272, 320 and 288; results/cpu/2026-12-06_sm90_compile_a8w4_e4m3_sample.csv)
    k_live = min(cfg.block_k, V2_LIVE_K) if cfg.mma.v2 else cfg.block_k
    operand_bytes = cfg.block_n * k_live * width
    if not _act_direct(path, cfg) and not cfg.mma.v2:  # v2 reads its activation from shared memory
        operand_bytes += cfg.block_m * cfg.block_k * 2
    operand = math.ceil(operand_bytes / 4 / threads)
    return {"acc": acc, "operand": operand, "total": acc + operand}
