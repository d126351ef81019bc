"""Legality filter: reject tile configs that cannot compile, cannot launch, or only waste work, before compiling.

No torch or triton here: `check` is a pure function of (shape, path, stage, config, device limits[, T]),
so the sweep driver, the CLI and CPU tests call it instantly. A verdict is `Legal` (modelled shared
memory and accumulator registers) or `Illegal(reason, detail, smem_bytes)`; the sweep records rejected
configs, it never drops them. Rules run in the order of this table; the first that fails is the reason.

| code             | rejects                                                                       | prevents       |
|------------------|-------------------------------------------------------------------------------|----------------|
| PATH_UNSUPPORTED | combine=slots in stage 1; split_k > 1 with slots (v1 kernels);                | wrapper error  |
|                  | mma=dot_scaled under the interpreter                                          |                |
| MX_FLOOR         | BLOCK_M or BLOCK_N < 16 (MMA tile); BLOCK_K < 64 (two halves of one MX group) | bad MMA tiles  |
| DIVISIBILITY     | BLOCK_K % 64; BLOCK_N % 32; N % BLOCK_N (splits take whole K blocks: any K); | wrapper error  |
|                  | mma=wgmma: N % 32 instead of N % BLOCK_N (its last N tile is masked)          |                |
| TILE_TOO_LARGE   | a BLOCK_* not a power of two (tl.arange); a tile over 2**20 elements          | compile error  |
| WARP_LAYOUT      | num_warps not a power of two, or above 32 (1024 threads); mma=wgmma: warps   | compile error  |
|                  | not 4 or 8, BLOCK_N not a multiple of 16 x num_warps, BLOCK_M above 256      | wrong layout   |
| SMEM_OVERFLOW    | modelled shared memory + SMEM_SAFETY_BYTES above the device's opt-in limit    | OutOfResources |
| REG_PRESSURE     | fp32 accumulators > 128 regs/thread; accumulators + upcast operands > 255     | heavy spills   |
| DEGENERATE       | < 4 accumulator elements/thread (replicated warps); split_k above the K       | nothing: waste |
|                  | blocks, cdiv(K, BLOCK_K); with T: BLOCK_M above 2 x next_pow2(rows per hit    |                |
|                  | expert), or split_k > 1 when T*A > 4*E*BLOCK_M (either stage)                 |                |

Stage geometry, the shared-memory model and the register model are in `mxmoe.resources` (re-exported here).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from mxmoe.config import Combine, TileConfig
from mxmoe.resources import (  # noqa: F401 -- re-exported: legality's callers and tests reach them here
    MX_GROUP,
    SMEM_MODEL,
    SmemModel,
    StageGeometry,
    register_model,
    smem_breakdown,
    stage_geometry,
)
from mxmoe.shapes import MoEShape, Path
from mxmoe.space import candidate_space

MAX_TENSOR_NUMEL = 2**20  # triton.language TRITON_MAX_TENSOR_NUMEL (Triton 3.6)
MIN_BLOCK_MN = 16  # MMA tile M and N (mma.sync m16n8k16; wgmma's m64 is a multiple)
MIN_BLOCK_K = 64  # the upcast splits BLOCK_K into even/odd halves of >= one 32-element MX group
MAX_WARPS = 32  # 1024 threads per CTA
V2_WARPS = (4, 8)  # mma=wgmma: one or two warpgroups (kernels/common._check_v2 refuses the rest at launch)
V2_MAX_BLOCK_M = 256  # mma=wgmma: BLOCK_M is the MMA's N
ACC_REG_BUDGET = 128  # fp32 accumulator registers/thread: every config above it spilled >= 1 KiB (sm_90)
SMEM_SAFETY_BYTES = 4096  # headroom for scratch the model omits: barriers (<= 512 B), upcast conversions (4 KiB seen)
HEAVY_SPILL_BYTES = 512  # local memory per thread that counts as heavy spilling (REG_PRESSURE confirmed)
MIN_ACC_PER_THREAD = 4  # DEGENERATE: fewer accumulator elements per thread means replicated warps
DEGENERATE_BLOCK_M_SLACK = 2  # DEGENERATE: BLOCK_M above 2 x next_pow2(rows per hit expert) is mostly padding
# DEGENERATE: split-K pays only while the grid is too small to fill the GPU; past T*A > 4*E*BLOCK_M every
# expert already has several M blocks and split-K only adds atomics.
DEGENERATE_SPLIT_K_ROWS = 4


class Reason(str, Enum):
    """Why a config cannot (or should not) launch. Values are the ledger's `illegal:<reason>` suffix;
    each member's `__doc__` is its one-line meaning (docs/legality.md lists them all)."""

    def __new__(cls, value: str, doc: str) -> Reason:
        member = str.__new__(cls, value)
        member._value_ = value
        member.__doc__ = doc
        return member

    PATH_UNSUPPORTED = ("path_unsupported", "A lever the stage, path or runtime lacks (slots in stage 1, ...).")
    MX_FLOOR = ("mx_floor", "A block below the MMA tile (16), or BLOCK_K below two halves of one MX group.")
    DIVISIBILITY = ("divisibility", "A block that does not tile its axis (BLOCK_K % 64, N % BLOCK_N, ...).")
    TILE_TOO_LARGE = ("tile_too_large", "A block tl.arange cannot take (not a power of two), or a tile > 2**20.")
    WARP_LAYOUT = ("warp_layout", "A num_warps the compiler refuses: not a power of two, or above 32.")
    SMEM_OVERFLOW = ("smem_overflow", "Modelled shared memory above the device's opt-in limit (OutOfResources).")
    REG_PRESSURE = ("reg_pressure", "Accumulators (+ upcast operands) past the register file: heavy spills.")
    DEGENERATE = ("degenerate", "Compiles and launches but only wastes work at this shape and T (a choice).")

    @property
    def is_failure(self) -> bool:
        """True when the code predicts a compile, launch or heavy-spill failure; False for a choice."""
        return self is not Reason.DEGENERATE


@dataclass(frozen=True, slots=True)
class DeviceLimits:
    """What a device lets one CTA have. Plain values, so no CUDA context is needed to build one."""

    name: str
    smem_optin_bytes: int
    sm_count: int
    regs_per_thread_max: int = 255
    regs_per_sm: int = 65536
    interpreter: bool = False

    def __post_init__(self) -> None:
        for f in ("smem_optin_bytes", "sm_count", "regs_per_thread_max", "regs_per_sm"):
            v = getattr(self, f)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"DeviceLimits.{f} must be a positive int, got {v!r}")


H100 = DeviceLimits(name="NVIDIA H100 80GB HBM3", smem_optin_bytes=232448, sm_count=132)  # 227 KiB opt-in
# The interpreter has no shared memory worth modelling, and no tl.dot_scaled.
INTERPRETER = DeviceLimits(name="triton-interpreter", smem_optin_bytes=2**31 - 1, sm_count=1, interpreter=True)


def limits_from_properties(name: str, smem: int, sms: int, *, interpreter: bool = False) -> DeviceLimits:
    """DeviceLimits from plain properties the caller read (torch.cuda.get_device_properties: name,
    shared_memory_per_block_optin, multi_processor_count), so this module never touches CUDA."""
    return DeviceLimits(name=name, smem_optin_bytes=smem, sm_count=sms, interpreter=interpreter)


@dataclass(frozen=True, slots=True)
class Legal:
    """The config can launch; the resources it is modelled to take."""

    smem_bytes: int
    acc_regs_per_thread: int

    @property
    def legal(self) -> bool:
        return True


@dataclass(frozen=True, slots=True)
class Illegal:
    """The config is rejected: `reason` is the code, `detail` names the bad value and the limit."""

    reason: Reason
    detail: str
    smem_bytes: int | None = None

    @property
    def legal(self) -> bool:
        return False


def _is_pow2(v: int) -> bool:
    return v > 0 and v & (v - 1) == 0


def _next_pow2(v: int) -> int:
    return 1 << max(0, (v - 1).bit_length())


def _check_levers(stage: int, cfg: TileConfig, interpreter: bool) -> Illegal | None:
    if stage == 1 and cfg.combine is not Combine.ATOMIC:
        return Illegal(Reason.PATH_UNSUPPORTED, f"stage 1 has no combine strategy (got combine={cfg.combine.value})")
    if cfg.split_k > 1 and cfg.combine is not Combine.ATOMIC and not cfg.mma.v2:
        return Illegal(Reason.PATH_UNSUPPORTED, f"split_k={cfg.split_k} needs combine=atomic on the v1 kernels, "
                       f"got {cfg.combine.value}")
    if cfg.combine is Combine.ROWS and not (cfg.mma.v2 and cfg.split_k == 1):
        return Illegal(Reason.PATH_UNSUPPORTED, f"combine=rows needs the v2 kernels unsplit, got mma={cfg.mma.value} "
                       f"split_k={cfg.split_k}")
    if interpreter and cfg.mma.needs_dot_scaled:
        return Illegal(Reason.PATH_UNSUPPORTED, f"mma={cfg.mma.value} is not implemented by the Triton 3.6 "
                       "interpreter")
    return _check_tail(cfg)


def _check_tail(cfg: TileConfig) -> Illegal | None:
    """tail_m (TileConfig): the v2 kernels' tail tiles, a divisor of BLOCK_M below it and at least the MMA tile;
    not with the slots combine, whose last-arrival count is the plan's BLOCK_M blocks."""
    if not cfg.tail_m:
        return None
    if not cfg.mma.v2:
        return Illegal(Reason.PATH_UNSUPPORTED, f"tail_m={cfg.tail_m} needs the v2 kernels, got mma={cfg.mma.value}")
    if cfg.combine is Combine.SLOTS:
        return Illegal(Reason.PATH_UNSUPPORTED, f"tail_m={cfg.tail_m} with combine=slots")
    if cfg.tail_m < MIN_BLOCK_MN or cfg.tail_m >= cfg.block_m or cfg.block_m % cfg.tail_m:
        return Illegal(Reason.DIVISIBILITY, f"tail_m={cfg.tail_m} must divide BLOCK_M={cfg.block_m}, below it and "
                       f">= {MIN_BLOCK_MN} (the MMA tile)")
    if cfg.tail_m & (cfg.tail_m - 1):
        return Illegal(Reason.TILE_TOO_LARGE, f"tail_m={cfg.tail_m} is not a power of two (tl.arange)")
    return None


def _check_floor(cfg: TileConfig) -> Illegal | None:
    if cfg.block_m < MIN_BLOCK_MN or cfg.block_n < MIN_BLOCK_MN:
        return Illegal(Reason.MX_FLOOR, f"BLOCK_M={cfg.block_m}, BLOCK_N={cfg.block_n}: both must be >= "
                       f"{MIN_BLOCK_MN} (the MMA tile)")
    if cfg.block_k < MIN_BLOCK_K:
        return Illegal(Reason.MX_FLOOR, f"BLOCK_K={cfg.block_k} < {MIN_BLOCK_K}: the upcast splits it into two "
                       f"halves of >= {MX_GROUP} (one MX group, K >= 16 per tl.dot)")
    return None


def _check_divisibility(geo: StageGeometry, stage: int, cfg: TileConfig) -> Illegal | None:
    if cfg.block_k % 64:
        return Illegal(Reason.DIVISIBILITY, f"BLOCK_K={cfg.block_k} must be a multiple of 64 (32-element scale "
                       "groups, two e2m1 values per byte)")
    if cfg.block_n % 32:
        return Illegal(Reason.DIVISIBILITY, f"BLOCK_N={cfg.block_n} must be a multiple of 32 (MX groups of the "
                       "stage-1 epilogue)")
    if cfg.mma.v2 and geo.n % MX_GROUP:
        return Illegal(Reason.DIVISIBILITY, f"mma=wgmma masks its last N tile but needs N={geo.n} a multiple of "
                       f"{MX_GROUP}")
    if geo.n % cfg.block_n and not cfg.mma.v2:
        axis = "inter" if stage == 1 else "hidden"
        return Illegal(Reason.DIVISIBILITY, f"BLOCK_N={cfg.block_n} does not divide stage {stage} N={geo.n} ({axis})")
    return None


def _check_tile(cfg: TileConfig) -> Illegal | None:
    for name in ("block_m", "block_n", "block_k"):
        v = getattr(cfg, name)
        if not _is_pow2(v):
            return Illegal(Reason.TILE_TOO_LARGE, f"{name.upper()}={v} is not a power of two (tl.arange sizes)")
    bm, bn, bk = cfg.block_m, cfg.block_n, cfg.block_k
    for what, numel in (("accumulator BMxBN", bm * bn), ("activation BMxBK", bm * bk), ("weight BNxBK", bn * bk)):
        if numel > MAX_TENSOR_NUMEL:
            return Illegal(Reason.TILE_TOO_LARGE, f"{what} tile has {numel} elements > {MAX_TENSOR_NUMEL}")
    return None


def _check_warps(cfg: TileConfig) -> Illegal | None:
    if not _is_pow2(cfg.num_warps) or cfg.num_warps > MAX_WARPS:
        return Illegal(Reason.WARP_LAYOUT, f"num_warps={cfg.num_warps} must be a power of two <= {MAX_WARPS}")
    if cfg.mma.v2 and cfg.num_warps not in V2_WARPS:
        return Illegal(Reason.WARP_LAYOUT, f"mma=wgmma needs num_warps in {V2_WARPS} (a warpgroup issues wgmma; the "
                       f"swizzled layout gives each warp 16-row slabs), got {cfg.num_warps}")
    if cfg.mma.v2 and cfg.block_n % (16 * cfg.num_warps):
        return Illegal(Reason.WARP_LAYOUT, f"mma=wgmma needs BLOCK_N a multiple of 16 x num_warps = "
                       f"{16 * cfg.num_warps}, got {cfg.block_n}")
    if cfg.mma.v2 and cfg.block_m > V2_MAX_BLOCK_M:
        return Illegal(Reason.WARP_LAYOUT, f"mma=wgmma: BLOCK_M={cfg.block_m} is wgmma's N, at most {V2_MAX_BLOCK_M}")
    return None


def _check_structure(stage: int, cfg: TileConfig, geo: StageGeometry, interpreter: bool) -> Illegal | None:
    """The rules that need neither device resources nor T: the levers, the MMA floor, divisibility by the stage's N,
    tile sizes and the warp layout."""
    return (_check_levers(stage, cfg, interpreter) or _check_floor(cfg) or _check_divisibility(geo, stage, cfg)
            or _check_tile(cfg) or _check_warps(cfg))


def launch_rules(stage: int, cfg: TileConfig, n: int, k: int, *, interpreter: bool) -> Illegal | None:
    """What a kernel launch checks of its config on its own (`kernels.common.check_launch`, which has the weights'
    N and K but no shape or device): the structural rules of `check`, the same functions, so a lever rule has one
    owner. Resources (shared memory, registers) and DEGENERATE are the caller's (`check`, `refusal`)."""
    geo = StageGeometry(n=n, k=k, weight_streams=2 if stage == 1 else 1, accumulators=2 if stage == 1 else 1)
    return _check_structure(stage, cfg, geo, interpreter)


def _check_resources(shape: MoEShape, path: Path, stage: int, cfg: TileConfig, limits: DeviceLimits,
                     model: SmemModel) -> tuple[int, int, Illegal | None]:
    smem = smem_breakdown(shape, path, stage, cfg, model)["total"]
    regs = register_model(path, stage, cfg)
    if smem + SMEM_SAFETY_BYTES > limits.smem_optin_bytes:
        return smem, regs["acc"], Illegal(
            Reason.SMEM_OVERFLOW, f"modelled shared memory {smem} B (+{SMEM_SAFETY_BYTES} B headroom) > "
            f"{limits.smem_optin_bytes} B opt-in limit of {limits.name}", smem)
    if regs["acc"] > ACC_REG_BUDGET:
        n_acc = (2 if stage == 1 else 1) * (2 if cfg.mma.e4m3 else 1)  # e4m3: two chains of each
        return smem, regs["acc"], Illegal(
            Reason.REG_PRESSURE, f"{regs['acc']} fp32 accumulator registers/thread > {ACC_REG_BUDGET} ({n_acc} x "
            f"{cfg.block_m}x{cfg.block_n} over {cfg.num_warps} warps)", smem)
    if regs["total"] > limits.regs_per_thread_max:
        return smem, regs["acc"], Illegal(
            Reason.REG_PRESSURE, f"{regs['acc']} accumulator + {regs['operand']} upcast-operand registers/thread "
            f"> {limits.regs_per_thread_max}", smem)
    return smem, regs["acc"], None


def _check_degenerate(shape: MoEShape, geo: StageGeometry, cfg: TileConfig, tokens: int | None) -> str | None:
    per_thread = cfg.block_m * cfg.block_n / (32 * cfg.num_warps)
    if per_thread < MIN_ACC_PER_THREAD:
        return (f"BLOCK_M x BLOCK_N = {cfg.block_m * cfg.block_n} gives {per_thread:g} accumulator elements per "
                f"thread at num_warps={cfg.num_warps} (< {MIN_ACC_PER_THREAD}): warps replicate each other's MMA")
    k_blocks = -(-geo.k // cfg.block_k)
    if cfg.split_k > k_blocks:
        return (f"split_k={cfg.split_k} > {k_blocks} K blocks (K={geo.k}, BLOCK_K={cfg.block_k}): the splits past "
                "the last block launch only to add zeros")
    if tokens is None:
        return None
    pairs = tokens * shape.topk
    rows = -(-pairs // min(shape.experts, pairs))  # average rows per hit expert, rounded up
    cap = DEGENERATE_BLOCK_M_SLACK * _next_pow2(max(MIN_BLOCK_MN, rows))
    if cfg.block_m > cap:
        return f"BLOCK_M={cfg.block_m} > {cap}: T={tokens} gives ~{rows} rows per hit expert, blocks are mostly padding"
    limit = DEGENERATE_SPLIT_K_ROWS * shape.experts * cfg.block_m
    if cfg.split_k > 1 and pairs > limit:
        return (f"split_k={cfg.split_k} at T={tokens}: T*A={pairs} > {DEGENERATE_SPLIT_K_ROWS}*E*BLOCK_M={limit}, "
                "the grid is already full and split-K only adds atomics")
    return None


def refusal(shape: MoEShape, path: Path | str, stage: int, cfg: TileConfig, limits: DeviceLimits,
            tokens: int | None = None, *, degenerate_refuses: bool) -> Illegal | None:
    """The verdict that stops `cfg` from launching, or None: `check`, with the one exemption every caller shares
    written here once. DEGENERATE means "legal, but only wastes work": it refuses a sweep candidate
    (`degenerate_refuses=True`), never a launch the runtime was asked for (an explicit config, a tuned table) nor the
    heuristic's own tile, which is what moe() runs and what a tuned config has to beat."""
    v = check(shape, path, stage, cfg, limits, tokens)
    if not isinstance(v, Illegal) or (v.reason is Reason.DEGENERATE and not degenerate_refuses):
        return None
    return v


def check(shape: MoEShape, path: Path | str, stage: int, cfg: TileConfig, limits: DeviceLimits,
          tokens: int | None = None, *, model: SmemModel = SMEM_MODEL) -> Legal | Illegal:
    """Legal or Illegal(reason) for launching `cfg` as `stage` of `shape` on `path` under `limits`.

    No compile, no GPU. `tokens` (T) turns on the T-dependent DEGENERATE rules.
    """
    if not isinstance(cfg, TileConfig):
        raise TypeError(f"cfg must be a TileConfig, got {type(cfg).__name__}")
    if not isinstance(limits, DeviceLimits):
        raise TypeError(f"limits must be a DeviceLimits, got {type(limits).__name__}")
    if tokens is not None and (not isinstance(tokens, int) or isinstance(tokens, bool) or tokens < 1):
        raise ValueError(f"tokens must be a positive int or None, got {tokens!r}")
    path = Path(path)
    if cfg.mma.e4m3 and path is not Path.A8W4:
        return Illegal(Reason.PATH_UNSUPPORTED, f"mma=wgmma_e4m3 runs a8w4 only, got {path.value}")
    geo = stage_geometry(shape, stage)
    verdict = _check_structure(stage, cfg, geo, limits.interpreter)
    if verdict is not None:
        return verdict
    smem, acc, verdict = _check_resources(shape, path, stage, cfg, limits, model)
    if verdict is not None:
        return verdict
    waste = _check_degenerate(shape, geo, cfg, tokens)
    if waste is not None:
        return Illegal(Reason.DEGENERATE, waste, smem)
    return Legal(smem_bytes=smem, acc_regs_per_thread=acc)


def observed_failure(compile_ok: bool, launch_ok: bool | None, n_spills: int | None) -> str | None:
    """What a real compile showed, judged as legality is: 'compile' (compiler or loader refused), 'launch'
    (launch wrapper or kernel failed), 'spills' (>= HEAVY_SPILL_BYTES of local memory), or None (fine).

    `launch_ok` None means not launched; `n_spills` is Triton's count of 4-byte local-memory words.
    """
    if not compile_ok:
        return "compile"
    if launch_ok is False:
        return "launch"
    if n_spills is not None and n_spills * 4 >= HEAVY_SPILL_BYTES:
        return "spills"
    return None


def summarize(shape: MoEShape, path: Path | str, stage: int, space_name: str = "default",
              limits: DeviceLimits = H100, tokens: int | None = None) -> dict[str, Any]:
    """Every config of a candidate space with its verdict, and counts per reason (`legal` included).

    The `mxmoe legal` command is a thin wrapper: `counts` for the table, `verdicts` for --show and --json.
    """
    configs = candidate_space(stage, path, space_name)
    verdicts = [(cfg, check(shape, path, stage, cfg, limits, tokens)) for cfg in configs]
    counts = {"legal": 0} | {r.value: 0 for r in Reason}
    for _, v in verdicts:
        counts["legal" if isinstance(v, Legal) else v.reason.value] += 1
    return {
        "shape": shape.name,
        "path": Path(path).value,
        "stage": stage,
        "space": space_name,
        "device": limits.name,
        "tokens": tokens,
        "total": len(configs),
        "counts": counts,
        "verdicts": verdicts,
    }


def verdict_to_dict(v: Legal | Illegal) -> dict[str, Any]:
    """A verdict as JSON-ready values (for --json and the validation CSV)."""
    if isinstance(v, Legal):
        return {"legal": True, "reason": None, "detail": "", "smem_bytes": v.smem_bytes,
                "acc_regs_per_thread": v.acc_regs_per_thread}
    return {"legal": False, "reason": v.reason.value, "detail": v.detail, "smem_bytes": v.smem_bytes}
