"""Stage 2: h x W2 (MXFP4 along I) + bias, times the routing weight, combined per token.

Axis legend: T tokens, A topk, P = T*A pairs, E experts, I inter (K of this stage), H hidden (N).
h rows are indexed by pair id p = t*A + a (stage 1 wrote them so); the routing plan groups them by
expert. Combine strategies (TileConfig.combine):
  atomic: fp32 atomic add of w * y into out32 [T, H] (split-K adds its partial sums the same way)
  slots:  w * y written to rows [P, H] f32, then summed over A
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from mxmoe.config import Combine, TileConfig
from mxmoe.kernels.common import (
    MMA_CODES,
    PATH_CODES,
    KernelInput,
    atomic_add_tile,
    check_launch,
    grid_swizzle,
    interpreting,
    load_act_tile,
    mma_tile,
    split_k_range,
)
from mxmoe.kernels.swmoe_stage2 import stage2_wgmma


@triton.jit
def _stage2_kernel(
    # pointers
    h_ptr, hs_ptr, w_ptr, ws_ptr, b_ptr, rw_ptr, out_ptr,
    sorted_ids_ptr, block_expert_ptr, num_padded_ptr,
    # sizes
    num_pairs, H, I, max_blocks,
    # strides
    stride_hp, stride_hsp, stride_we, stride_wn, stride_wse, stride_wsn, stride_be, stride_or,
    # meta-parameters
    TOPK: tl.constexpr, PATH: tl.constexpr, HAS_BIAS: tl.constexpr, MMA: tl.constexpr, SLOTS: tl.constexpr,
    EVEN_K: tl.constexpr, INTERP: tl.constexpr,
    SPLIT_K: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    num_n = tl.cdiv(H, BLOCK_N)
    pid_k = tl.program_id(1)
    pid_m, pid_n = grid_swizzle(tl.program_id(0), max_blocks, num_n, GROUP_M)
    if pid_m * BLOCK_M >= tl.load(num_padded_ptr):
        return
    expert = tl.load(block_expert_ptr + pid_m).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    pair = tl.load(sorted_ids_ptr + offs_m)
    row_ok = pair < num_pairs
    rows = pair.to(tl.int64)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    w_e = w_ptr + expert * stride_we
    ws_e = ws_ptr + expert * stride_wse

    if SPLIT_K == 1:
        k_first = pid_k * I  # pid_k is 0; kept as compiled since the legality tables were recorded
        k_len = I
    else:
        k_first, k_len = split_k_range(pid_k, I, SPLIT_K, BLOCK_K)
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for kk in range(0, k_len, BLOCK_K):
        k0 = k_first + kk
        a_even, a_odd, a_full, a_scale = load_act_tile(
            h_ptr, hs_ptr, rows, row_ok, k0, I, stride_hp, stride_hsp, PATH, MMA, EVEN_K, INTERP, BLOCK_M, BLOCK_K)
        acc = mma_tile(acc, a_even, a_odd, a_full, a_scale, w_e, ws_e, offs_n, k0, I,
                       stride_wn, stride_wsn, PATH, MMA, EVEN_K, INTERP, BLOCK_N, BLOCK_K)

    if HAS_BIAS:  # noqa: SIM102 -- HAS_BIAS is a constexpr, pid_k a runtime value
        if pid_k == 0:
            acc += tl.load(b_ptr + expert * stride_be + offs_n)[None, :]
    weight = tl.load(rw_ptr + rows, mask=row_ok, other=0.0)
    acc = acc * weight[:, None]
    if SLOTS:
        tl.store(out_ptr + rows[:, None] * stride_or + offs_n[None, :], acc, mask=row_ok[:, None])
    else:
        token = rows // TOPK
        atomic_add_tile(out_ptr + token[:, None] * stride_or + offs_n[None, :], acc, row_ok, BLOCK_M, BLOCK_N)


def stage2(h: KernelInput, weights, plan, topk_weights: torch.Tensor, cfg: TileConfig, num_tokens: int,
           *, out: torch.Tensor | None = None, poison: bool = False,
           counters: torch.Tensor | None = None, zeroed: bool = False) -> torch.Tensor:
    """Launch stage 2 and combine; returns bf16 [T, H].

    topk_weights: [T, A] f32 routing weights. `out` is the fp32 scratch the kernel writes
    ([T, H] for atomic; slots: [P, H], or [split_k, P, H] on the v2 kernels); it is zeroed here for atomic,
    poisoned by callers that want to. `poison` allocates the slots scratch NaN-filled (a slot the kernel skips
    then shows in the sum); the atomic scratch must start at zero, so there it changes nothing. `counters`: the
    v2 kernels' arrival counters (`swmoe.counters_needed`), allocated when not given. `zeroed` (v2 atomic): `out`
    is already zero (stage 1 zeroed it), so it is not zeroed again.
    """
    ws = weights.w2
    e, hidden, _ = ws.data.shape
    inter = weights.inter
    check_launch(h, inter, weights, plan, cfg, stage=2)
    even_k = inter % cfg.block_k == 0
    if tuple(topk_weights.shape) != (num_tokens, plan.topk):
        raise ValueError(f"topk_weights shape {tuple(topk_weights.shape)}, expected {(num_tokens, plan.topk)}")
    if cfg.mma.v2:  # v2 masks its last N tile and finishes the slots combine in its kernel
        return stage2_wgmma(h, weights, plan, topk_weights, cfg, num_tokens, out=out, poison=poison,
                            counters=counters, zeroed=zeroed)
    slots = cfg.combine is Combine.SLOTS
    rows = plan.num_pairs if slots else num_tokens
    if out is None:
        fill = float("nan") if poison and slots else 0.0
        out = torch.full((rows, hidden), fill, dtype=torch.float32, device=h.data.device)
    elif not slots:
        out.zero_()
    if plan.max_blocks > 0:
        rw = topk_weights.to(torch.float32).contiguous().view(-1)
        b = weights.b2 if weights.b2 is not None else rw
        grid = (plan.max_blocks * triton.cdiv(hidden, cfg.block_n), cfg.split_k)
        _stage2_kernel[grid](
            h.data, h.scales_or(h.data), ws.data, ws.scales, b, rw, out,
            plan.sorted_ids, plan.block_expert, plan.num_padded,
            plan.num_pairs, hidden, inter, plan.max_blocks,
            h.data.stride(0), h.scales_or(h.data).stride(0), ws.data.stride(0), ws.data.stride(1),
            ws.scales.stride(0), ws.scales.stride(1), b.stride(0), out.stride(0),
            TOPK=plan.topk, PATH=PATH_CODES[h.path], HAS_BIAS=weights.b2 is not None,
            MMA=MMA_CODES[cfg.mma], SLOTS=slots, SPLIT_K=cfg.split_k, EVEN_K=even_k, INTERP=interpreting(),
            BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k, GROUP_M=cfg.group_m,
            num_warps=cfg.num_warps, num_stages=cfg.num_stages,
        )
    if slots:
        return out.view(num_tokens, plan.topk, hidden).sum(dim=1).to(torch.bfloat16)
    return out.to(torch.bfloat16)
