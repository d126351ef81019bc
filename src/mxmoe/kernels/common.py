"""Pieces both stages share: the activation operand at a path's width, launch checks, tile loads.

Axis legend: R rows (tokens or pairs), C columns (H or I), BM x BK one activation tile.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from mxmoe.config import Mma, TileConfig
from mxmoe.kernels.mx_tile import e2m1_to_f32, e4m3_to_f32, e8m0_to_f32
from mxmoe.legality import launch_rules
from mxmoe.shapes import Activation, Path

# The constexpr codes the kernels branch on, by name (a kernel compares `PATH == A8W4`, never `PATH == 1`).
A16W4 = tl.constexpr(0)
A8W4 = tl.constexpr(1)
A4W4 = tl.constexpr(2)
SILU = tl.constexpr(0)
SWIGLU_OAI = tl.constexpr(1)
UPCAST = tl.constexpr(0)  # v1 kernels only: the hand upcast + tl.dot
DOT_SCALED = tl.constexpr(1)  # v1 kernels only: tl.dot_scaled
PATH_CODES = {Path.A16W4: A16W4.value, Path.A8W4: A8W4.value, Path.A4W4: A4W4.value}
ACT_CODES = {Activation.SILU: SILU.value, Activation.SWIGLU_OAI: SWIGLU_OAI.value}
MMA_CODES = {Mma.UPCAST: UPCAST.value, Mma.DOT_SCALED: DOT_SCALED.value}  # v1 kernels


class KernelInput(NamedTuple):
    """An activation matrix at its path's width: bf16 [R, C]; e4m3 bytes [R, C]; e2m1 pairs [R, C//2].

    MX paths carry e8m0 scales [R, C//32], except on the v2 kernels, where every path carries bf16 [R, C] holding
    values on its grid (MXFP8 / MXFP4 values are exact in bf16) and `scales` is None. A NamedTuple: immutable like
    a frozen dataclass at half its construction cost (about 0.25 against 0.5 us; a moe() call builds one or two).
    """

    data: torch.Tensor
    scales: torch.Tensor | None
    path: Path

    @property
    def rows(self) -> int:
        return self.data.shape[0]

    @property
    def cols(self) -> int:
        return self.data.shape[1] * (2 if self.path is Path.A4W4 and not self.bf16 else 1)

    @property
    def token_e4m3(self) -> bool:
        """e4m3 bytes [R, C] with one f32 scale per row [R] (quant.quantize_token_e4m3: Mma.WGMMA_E4M3's input)."""
        return (self.data.dtype == torch.uint8 and self.scales is not None and self.scales.dtype == torch.float32
                and self.scales.dim() == 1)

    @property
    def bf16(self) -> bool:
        """Carried as bf16 (a16w4, or an MX path on the v2 kernels)."""
        return self.data.dtype == torch.bfloat16

    @classmethod
    def empty(cls, path: Path, rows: int, cols: int, device: torch.device) -> KernelInput:
        if path is Path.A16W4:
            return cls(torch.empty(rows, cols, dtype=torch.bfloat16, device=device), None, path)
        width = cols // 2 if path is Path.A4W4 else cols
        return cls(
            torch.empty(rows, width, dtype=torch.uint8, device=device),
            torch.empty(rows, cols // 32, dtype=torch.uint8, device=device),
            path,
        )

    def scales_or(self, fallback: torch.Tensor) -> torch.Tensor:
        """The scales, or a dummy pointer for bf16 (the kernel never reads it)."""
        return self.scales if self.scales is not None else fallback

    def poison(self) -> KernelInput:
        """Fill with NaN (bf16) or 0xFF bytes (an e4m3 NaN / an e8m0 NaN scale) and return self."""
        if self.path is Path.A16W4:
            self.data.fill_(float("nan"))
        else:
            self.data.fill_(0xFF)
        if self.scales is not None:
            self.scales.fill_(0xFF)
        return self


# Triton fixes interpretation when a kernel is decorated (`triton.jit` reads TRITON_INTERPRET then), which happens
# as mxmoe's kernel modules are imported, together with this one: so the INTERP constexpr is read once, here (an
# environment read is about 0.4 us, and a moe() call launches two to four kernels).
_INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"


def interpreting() -> bool:
    """Whether the kernels run on the Triton interpreter (as decorated: see _INTERPRETED)."""
    return _INTERPRETED


def require_executable(t: torch.Tensor) -> None:
    """Triton launches need a CUDA tensor, or CPU tensors under the interpreter."""
    if t.is_cuda:
        return
    if os.environ.get("TRITON_INTERPRET") == "1":
        return
    raise RuntimeError(
        f"mxmoe kernels need CUDA tensors (got a tensor on {t.device}); on a machine without a GPU set "
        "TRITON_INTERPRET=1 before importing mxmoe to run them on the Triton interpreter"
    )


def check_launch(x: KernelInput, k: int, weights, plan, cfg: TileConfig, *, stage: int) -> None:
    """Refuse a launch that would read out of bounds or silently compute the wrong thing: the config's lever rules
    are legality's (`legality.launch_rules`, one owner), the rest is what only the launch can see (the tensors)."""
    require_executable(x.data)
    if x.cols != k:
        raise ValueError(f"stage {stage}: activation has {x.cols} columns, weights expect K={k}")
    if x.data.device != weights.device:
        raise ValueError(f"stage {stage}: activation on {x.data.device}, weights on {weights.device}")
    if not x.data.is_contiguous() or (x.scales is not None and not x.scales.is_contiguous()):
        raise ValueError(f"stage {stage}: activation must be contiguous")
    n = weights.inter if stage == 1 else weights.hidden
    verdict = launch_rules(stage, cfg, n, k, interpreter=interpreting())
    if verdict is not None:
        raise ValueError(f"stage {stage} {cfg.short()}: {verdict.reason.value}: {verdict.detail}")
    if cfg.plan_rows != plan.block_m:
        what = f"TAIL_M={cfg.tail_m}" if cfg.tail_m else f"BLOCK_M={cfg.block_m}"
        raise ValueError(f"stage {stage}: {what} but the routing plan was aligned to {plan.block_m}")
    if cfg.mma.e4m3:
        if x.path is not Path.A8W4:
            raise ValueError(f"stage {stage}: mma=wgmma_e4m3 runs a8w4 only, got {x.path.value}")
        if not x.token_e4m3:
            raise ValueError(f"stage {stage}: mma=wgmma_e4m3 takes e4m3 bytes with per-token f32 scales "
                             "(quant.quantize_token_e4m3)")
        if (weights.w13_e4m3 if stage == 1 else weights.w2_e4m3) is None:
            raise ValueError(f"stage {stage}: mma=wgmma_e4m3 needs the e4m3 weight layout: MoEWeights(..., "
                             "e4m3=True) or weights.with_e4m3()")
    elif cfg.mma.v2 and not x.bf16:
        raise ValueError(f"stage {stage}: mma=wgmma takes bf16 activations (quantize_input(..., bf16=True))")
    if not cfg.mma.v2 and x.bf16 and x.path is not Path.A16W4:
        raise ValueError(f"stage {stage}: mma={cfg.mma.value} reads {x.path.value} activations as MX bytes; "
                         "bf16 carriers are for mma=wgmma")


@triton.jit
def activation(acc_g, acc_u, ACT: tl.constexpr):
    """The fused activation of fp32 gate and up sums: silu(gate) * up, or GPT-OSS swiglu (gate clamped above at 7,
    up to [-7, 7], alpha 1.702, up + 1)."""
    if ACT == SILU:
        return acc_g * tl.sigmoid(acc_g) * acc_u
    else:
        g = tl.minimum(acc_g, 7.0)
        u = tl.minimum(tl.maximum(acc_u, -7.0), 7.0)
        return g * tl.sigmoid(1.702 * g) * (u + 1.0)


@triton.jit
def atomic_add_tile(ptrs, vals, row_ok, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Relaxed fp32 atomic add of a [BM, BN] tile into the rows `row_ok` lets through."""
    tl.atomic_add(ptrs, vals, mask=row_ok[:, None], sem="relaxed")


@triton.jit
def split_k_range(pid_k, K, SPLIT_K: tl.constexpr, BLOCK_K: tl.constexpr):
    """(k_first, k_len) of split `pid_k`: whole K blocks, cdiv(cdiv(K, BK), SPLIT_K) of them. So any K splits
    (gpt-oss 2880 = 45 x 64), the tail block keeps its mask, and every k0 stays a multiple of the constexpr
    BLOCK_K, which keeps the e2m1 rows aligned enough for Triton to stage them (a split at pid_k * (K // SPLIT_K)
    lost that past split 2, and its unstaged dot_scaled lowering computed wrong sums on the H100: docs/legality.md).
    A split past the last block gets k_len 0: it loops zero times and adds zeros."""
    num_kb = tl.cdiv(K, BLOCK_K)
    per_split = tl.cdiv(num_kb, SPLIT_K)
    kb_first = pid_k * per_split
    return kb_first * BLOCK_K, (tl.minimum(num_kb, kb_first + per_split) - kb_first) * BLOCK_K


@triton.jit
def k_range(pid_k, K, SPLIT_K: tl.constexpr, BLOCK_K: tl.constexpr):
    """(k_first, k_len) of split `pid_k`: all of K at SPLIT_K 1 (k_first the constant 0), else `split_k_range`."""
    if SPLIT_K == 1:
        return 0, K
    else:
        return split_k_range(pid_k, K, SPLIT_K, BLOCK_K)


@triton.jit
def k_loop_end(end, at_least, FLOOR: tl.constexpr):
    """A K loop's bound: `end`, or with FLOOR (rules.K_FLOOR) at least `at_least` (one trip). C7515_WHY: where a K loop
    may run zero times, the accumulator's zeros reach the loop's exit through a second path of movs, and ptxas
    (sm_90) then serializes every wgmma of the kernel: "wgmma.mma_async instructions are serialized due to non wgmma
    instructions defining accumulator registers of a wgmma between start and end of the pipeline stage" (C7515; each
    HGMMA followed by WARPGROUP.DEPBAR.LE gsb0, 0x0, so no MMA overlaps the next step's decode). A bound the compiler
    can see is positive removes that path. The extra trip happens only where the range is empty (a split past K's
    last block: split_k_range gives it k_len <= 0 and k_first >= K), and there it loads masked zeros and adds
    nothing."""
    return tl.maximum(end, at_least) if FLOOR else end


@triton.jit
def grid_swizzle(pid, num_m, num_n, GROUP_M: tl.constexpr):
    """Grouped ordering: GROUP_M consecutive M blocks share each N tile while it sits in L2."""
    width = GROUP_M * num_n
    group = pid // width
    first_m = group * GROUP_M
    size_m = tl.minimum(num_m - first_m, GROUP_M)
    pid_m = first_m + (pid % width) % size_m
    pid_n = (pid % width) // size_m
    return pid_m, pid_n


@triton.jit
def to_operand(x, F32: tl.constexpr):
    """MMA operand dtype: bf16 for the tensor cores; f32 under the interpreter, whose bf16 tl.dot is wrong in
    Triton 3.6 (upcast operands are exact in bf16: same products)."""
    if F32:
        return x.to(tl.float32)
    else:
        return x.to(tl.bfloat16)


@triton.jit
def bf16_grid(x):
    """f32 -> f32 rounded to the nearest bf16 (half to even) by bit arithmetic; finite values past bf16's largest
    become Inf, as the cast's would. NaN is kept as it is: the GPU's canonical NaN 0x7FFFFFFF would carry into the
    sign bit and come out as -0."""
    bits = x.to(tl.int32, bitcast=True)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & -65536  # mask 0xFFFF0000
    return tl.where(x == x, bits.to(tl.float32, bitcast=True), x)


@triton.jit
def to_bf16_rne(x, INTERP: tl.constexpr):
    """f32 -> bf16, round half to even. The GPU's cvt does this; the 3.6 interpreter truncates, so there we
    round the bits first (the truncating cast of an already-rounded value is exact)."""
    if INTERP:
        return bf16_grid(x).to(tl.bfloat16)
    else:
        return x.to(tl.bfloat16)


@triton.jit
def _scale_cols(s, BLOCK_M: tl.constexpr, GROUPS: tl.constexpr, REPEAT: tl.constexpr):
    """[BM, G] per-32 scales -> [BM, G * REPEAT], each scale repeated over its group's columns."""
    return tl.reshape(tl.broadcast_to(s[:, :, None], [BLOCK_M, GROUPS, REPEAT]), [BLOCK_M, GROUPS * REPEAT])


@triton.jit
def load_act_tile(x_ptr, xs_ptr, row, row_ok, k0, K, stride_x, stride_xs, PATH: tl.constexpr, MMA: tl.constexpr,
                  EVEN_K: tl.constexpr, INTERP: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr):
    """Rows `row` x [k0, k0+BK) of the activation. Returns (even K, odd K, whole tile, scales):
    the upcast lever uses the even/odd halves, dot_scaled the raw tile and its scales.
    Columns past K (a K that BLOCK_K does not divide) read as zeros unless EVEN_K."""
    offs_k = k0 + tl.arange(0, BLOCK_K)
    offs_b = k0 // 2 + tl.arange(0, BLOCK_K // 2)
    offs_s = k0 // 32 + tl.arange(0, BLOCK_K // 32)
    if EVEN_K:
        mask = row_ok[:, None]
        mask_b = mask
        mask_s = mask
    else:
        mask = row_ok[:, None] & (offs_k < K)[None, :]
        mask_b = row_ok[:, None] & (offs_b < K // 2)[None, :]
        mask_s = row_ok[:, None] & (offs_s < K // 32)[None, :]
    if PATH == A16W4:
        a = tl.load(x_ptr + row[:, None] * stride_x + offs_k[None, :], mask=mask, other=0.0)
        a_scale = a
        if MMA == UPCAST:
            a_even, a_odd = tl.split(tl.reshape(to_operand(a, INTERP), [BLOCK_M, BLOCK_K // 2, 2]))
        else:
            a_even = a
            a_odd = a
    else:
        a_scale = tl.load(xs_ptr + row[:, None] * stride_xs + offs_s[None, :], mask=mask_s, other=0)
        if PATH == A8W4:
            a = tl.load(x_ptr + row[:, None] * stride_x + offs_k[None, :], mask=mask, other=0)
            if MMA == UPCAST:
                s = _scale_cols(e8m0_to_f32(a_scale.to(tl.int32)), BLOCK_M, BLOCK_K // 32, 32)
                f = to_operand(e4m3_to_f32(a.to(tl.int32)) * s, INTERP)
                a_even, a_odd = tl.split(tl.reshape(f, [BLOCK_M, BLOCK_K // 2, 2]))
            else:
                a_even = a
                a_odd = a
        else:
            a = tl.load(x_ptr + row[:, None] * stride_x + offs_b[None, :], mask=mask_b, other=0)
            if MMA == UPCAST:
                s = _scale_cols(e8m0_to_f32(a_scale.to(tl.int32)), BLOCK_M, BLOCK_K // 32, 16)
                ai = a.to(tl.int32)
                a_even = to_operand(e2m1_to_f32(ai & 15) * s, INTERP)
                a_odd = to_operand(e2m1_to_f32(ai >> 4) * s, INTERP)
            else:
                a_even = a
                a_odd = a
    return a_even, a_odd, a, a_scale


@triton.jit
def load_w_tile(w_ptr, s_ptr, rows, k0, K, stride_wn, stride_sn, MMA: tl.constexpr, EVEN_K: tl.constexpr,
                INTERP: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """MXFP4 weight rows x [k0, k0+BK). Upcast MMA: (bf16 even-K [BN, BK//2], bf16 odd-K, ...);
    dot_scaled: (packed [BK//2, BN] (K-major, as tl.dot_scaled wants its right operand), scales [BN, BK//32])."""
    offs_b = k0 // 2 + tl.arange(0, BLOCK_K // 2)
    offs_s = k0 // 32 + tl.arange(0, BLOCK_K // 32)
    s_ptrs = s_ptr + rows[:, None] * stride_sn + offs_s[None, :]
    if MMA == UPCAST:
        w_ptrs = w_ptr + rows[:, None] * stride_wn + offs_b[None, :]
    else:
        w_ptrs = w_ptr + rows[None, :] * stride_wn + offs_b[:, None]
    if EVEN_K:
        s = tl.load(s_ptrs)
        w = tl.load(w_ptrs)
    else:
        s = tl.load(s_ptrs, mask=(offs_s < K // 32)[None, :], other=0)
        if MMA == UPCAST:
            w = tl.load(w_ptrs, mask=(offs_b < K // 2)[None, :], other=0)
        else:
            w = tl.load(w_ptrs, mask=(offs_b < K // 2)[:, None], other=0)
    if MMA == UPCAST:
        wi = w.to(tl.int32)
        sf = e8m0_to_f32(s.to(tl.int32))
        sf = tl.reshape(tl.broadcast_to(sf[:, :, None], [BLOCK_N, BLOCK_K // 32, 16]), [BLOCK_N, BLOCK_K // 2])
        w_even = to_operand(e2m1_to_f32(wi & 15) * sf, INTERP)
        w_odd = to_operand(e2m1_to_f32(wi >> 4) * sf, INTERP)
        return w_even, w_odd, s
    else:
        return w, w, s


@triton.jit
def mma_tile(acc, a_even, a_odd, a_full, a_scale, w_ptr, s_ptr, rows, k0, K, stride_wn, stride_sn,
             PATH: tl.constexpr, MMA: tl.constexpr, EVEN_K: tl.constexpr, INTERP: tl.constexpr,
             BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """acc += A_tile @ W_tile^T for one K step: manual upcast + tl.dot (UPCAST) or tl.dot_scaled (DOT_SCALED)."""
    w0, w1, w_s = load_w_tile(w_ptr, s_ptr, rows, k0, K, stride_wn, stride_sn, MMA, EVEN_K, INTERP, BLOCK_N, BLOCK_K)
    if MMA == UPCAST:
        if INTERP:
            acc = tl.dot(a_even, tl.trans(w0), acc, input_precision="ieee")
            acc = tl.dot(a_odd, tl.trans(w1), acc, input_precision="ieee")
        else:
            acc = tl.dot(a_even, tl.trans(w0), acc)
            acc = tl.dot(a_odd, tl.trans(w1), acc)
    elif PATH == A16W4:
        acc = tl.dot_scaled(a_full, None, "bf16", w0, w_s, "e2m1", acc)
    elif PATH == A8W4:
        acc = tl.dot_scaled(a_full, a_scale, "e4m3", w0, w_s, "e2m1", acc)
    else:
        acc = tl.dot_scaled(a_full, a_scale, "e2m1", w0, w_s, "e2m1", acc)
    return acc
