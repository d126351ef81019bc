"""The v2 kernels (mma=wgmma) on the Triton interpreter: the swizzled layout, the weight-tile decode and the layer.

Oracles: `mxmoe.mx.dequantize` for the decoded weight tile (bit-exact: every decoded value is e2m1 times a power of
two, exact in bf16 and f32, so TILE_TOL is 0), and the fp32 reference for the layer with the path's tolerance
(mxmoe.tolerance.TOLERANCES[(path, "layer")], justified there). The interpreter runs the same layout, bit
placement and reshape chain as the GPU; only the final decode step differs (int32 twin instead of inline asm),
and the GPU suite (test_moe_gpu.py) checks that one against the same oracle.
"""

from __future__ import annotations

import pytest
import torch
import triton
import triton.language as tl

from mxmoe.config import Combine, Mma, MoEConfig, TileConfig
from mxmoe.kernels import rules
from mxmoe.kernels.layout import swizzle, unswizzle
from mxmoe.kernels.mx_tile import qdq_tile
from mxmoe.kernels.wtile import weight_tile
from mxmoe.layer_plan import clear_plans
from mxmoe.moe import moe
from mxmoe.mx import MXFormat, MXTensor, dequantize
from mxmoe.problem import make_problem
from mxmoe.shapes import MODELS, Activation, MoEShape, Path
from mxmoe.tolerance import assert_close

TILE_TOL = 0.0  # bit-exact: see the module docstring


@pytest.mark.parametrize("n_major", [False, True], ids=["kmajor", "nmajor"])
@pytest.mark.parametrize("e,n,k", [(1, 16, 64), (3, 48, 96), (2, 128, 2880 // 45 * 3)])
def test_swizzle_round_trips(e, n, k, n_major):
    g = torch.Generator().manual_seed(n + k)
    data = torch.randint(0, 256, (e, n, k // 2), generator=g, dtype=torch.uint8)
    scales = torch.randint(0, 256, (e, n, k // 32), generator=g, dtype=torch.uint8)
    back = unswizzle(swizzle(data, scales, n_major=n_major))
    assert torch.equal(back[0], data) and torch.equal(back[1], scales)


def test_n_major_stores_the_same_blocks_transposed():
    """The N-major order moves whole 512-byte value blocks and 32-byte scale blocks, nothing inside them."""
    g = torch.Generator().manual_seed(5)
    data = torch.randint(0, 256, (2, 48, 80), generator=g, dtype=torch.uint8)
    scales = torch.randint(0, 256, (2, 48, 5), generator=g, dtype=torch.uint8)
    k, n = swizzle(data, scales), swizzle(data, scales, n_major=True)
    assert (k.n16, k.k64, n.n_major, k.n_major) == (3, 3, True, False)
    assert torch.equal(k.data.view(2, 3, 3, 512).transpose(1, 2), n.data.view(2, 3, 3, 512))
    assert torch.equal(k.scales.view(2, 3, 3, 32).transpose(1, 2), n.scales.view(2, 3, 3, 32))


def test_fold_needs_every_scale_at_most_128():
    """NaN scales (255) take the unfolded decode too: the folded factor has no NaN test."""
    data = torch.zeros(1, 16, 32, dtype=torch.uint8)
    assert swizzle(data, torch.full((1, 16, 2), 128, dtype=torch.uint8)).fold
    one_nan = torch.full((1, 16, 2), 100, dtype=torch.uint8)
    one_nan[0, 3, 1] = 255
    assert not swizzle(data, one_nan).fold
    assert not swizzle(data, torch.full((1, 16, 2), 129, dtype=torch.uint8)).fold


@triton.jit
def _tile_kernel(w_ptr, s_ptr, out_ptr, n16_0, k64_0, N16, K64, FOLD: tl.constexpr, BN: tl.constexpr,
                 BK: tl.constexpr):
    w = weight_tile(w_ptr, s_ptr, n16_0, N16, k64_0, N16, K64, FOLD, True, BN, BK)
    tl.store(out_ptr + tl.arange(0, BN)[:, None] * BK + tl.arange(0, BK)[None, :], w)


@pytest.mark.parametrize("scale_bytes", [(0, 100, 126, 127, 128), (1, 127, 129, 200, 254, 255), (0, 128, 255)],
                         ids=["fold", "wide", "nan"])
@pytest.mark.parametrize("bn,bk,n16_0,k64_0", [(64, 128, 0, 0), (64, 128, 4, 1), (128, 64, 0, 3), (16, 128, 7, 3)])
def test_weight_tile_decodes_the_dequantized_weights(scale_bytes, bn, bk, n16_0, k64_0):
    """Every e2m1 code, scales at both ends of the fold rule, NaN scales, and a tile past K (k64_0 = 3 of 4 blocks
    with BK = 128: its second half reads as zeros)."""
    e, n, k = 1, 128, 256
    g = torch.Generator().manual_seed(bn + bk + n16_0)
    data = torch.randint(0, 256, (e, n, k // 2), generator=g, dtype=torch.uint8)
    choice = torch.tensor(scale_bytes, dtype=torch.uint8)
    scales = choice[torch.randint(0, len(scale_bytes), (e, n, k // 32), generator=g)]
    sw = swizzle(data, scales)
    assert sw.fold == (max(scale_bytes) <= 128)
    want = torch.zeros(bn, bk)
    full = dequantize(MXTensor(data, scales, MXFormat.E2M1, 2, (e, n, k)))[0]
    kk = min(bk, k - 64 * k64_0)
    want[:, :kk] = full[16 * n16_0 : 16 * n16_0 + bn, 64 * k64_0 : 64 * k64_0 + kk]
    got = torch.empty(bn, bk)
    _tile_kernel[(1,)](sw.data[0], sw.scales[0], got, n16_0, k64_0, sw.n16, sw.k64, FOLD=sw.fold, BN=bn, BK=bk)
    assert torch.equal(got.isnan(), want.isnan())
    ok = ~want.isnan()
    assert torch.equal(got[ok].isinf(), want[ok].isinf())  # 6 x 2**127 overflows both, to the same signed inf
    fin = ok & want.isfinite()
    assert (got[fin] - want[fin]).abs().max().item() <= TILE_TOL


def _v2(block_m=16, block_n=64, block_k=64, split_k=1, combine=Combine.ATOMIC, num_warps=4) -> MoEConfig:
    s1 = TileConfig(block_m=block_m, block_n=block_n, block_k=block_k, num_warps=num_warps, mma=Mma.WGMMA,
                    split_k=split_k)
    return MoEConfig(s1, s1.replace(combine=combine, split_k=1 if combine is Combine.ROWS else split_k))


@pytest.mark.parametrize("shape", [MODELS["tiny"], MODELS["tiny-oai"]], ids=lambda s: s.name)
@pytest.mark.parametrize("path", list(Path), ids=lambda p: p.value)
@pytest.mark.parametrize("combine", list(Combine), ids=lambda c: c.value)
@pytest.mark.parametrize("tokens,split_k,block_m", [(1, 1, 16), (3, 2, 16), (17, 1, 32)])
def test_layer_matches_reference(shape, path, combine, tokens, split_k, block_m):
    p = make_problem(shape, path, tokens, seed=tokens)
    out = moe(p.hidden, p.weights, p.topk_ids, p.topk_weights, path, _v2(block_m, split_k=split_k, combine=combine))
    assert_close(out.float(), p.reference(), path=path, stage="layer", name=f"{shape.name}/{path.value}/T={tokens}")


def test_layer_k_tail_and_eight_warps():
    """H = 192 with BLOCK_K 128: stage 1's second K step is half past K (its weight rows and activation columns
    read as zeros); stage 1 also on 8 warps (I = 128: one 128-row slab per warpgroup pair)."""
    shape = MoEShape("k-tail", 4, 2, 192, 128, Activation.SWIGLU_OAI, bias=True)
    p = make_problem(shape, Path.A8W4, 9, seed=2)
    base = _v2(block_k=128)
    for cfg in (base, MoEConfig(base.stage1.replace(block_n=128, num_warps=8, block_m=32),
                                base.stage2.replace(block_m=32))):
        out = moe(p.hidden, p.weights, p.topk_ids, p.topk_weights, Path.A8W4, cfg)
        assert_close(out.float(), p.reference(), path=Path.A8W4, stage="layer")


@pytest.mark.parametrize("path", list(Path), ids=lambda p: p.value)
@pytest.mark.parametrize("split_k", [1, 2])
def test_layer_masked_last_n_tile(path, split_k):
    """BLOCK_N 64 over N = 160 (stage 1: the gate tile must stop at I, not read the up rows) and 96 (stage 2),
    K = 96 (a half-padded swizzle block): every last tile masked, with split-K's partial sums too."""
    shape = MoEShape("ragged", 4, 2, 96, 160, Activation.SWIGLU_OAI, bias=True)
    p = make_problem(shape, path, 5, seed=3)
    out = moe(p.hidden, p.weights, p.topk_ids, p.topk_weights, path, _v2(block_k=128, split_k=split_k))
    assert_close(out.float(), p.reference(), path=path, stage="layer", name=f"{path.value}/sk{split_k}")


@pytest.mark.parametrize("path,floor", [(Path.A16W4, 1), (Path.A8W4, 0), (Path.A4W4, 1)], ids=lambda v: str(v))
def test_layer_empty_last_split(path, floor, monkeypatch):
    """H = I = 160 with BLOCK_K 64 is three K blocks; split_k 4 gives each split one and the fourth none (k_len 0).
    Under rules.K_FLOOR (`floor` 1) that split's K loop still takes one trip (common.k_loop_end: a bound ptxas can
    see is positive keeps the wgmmas asynchronous), at a K offset past K, so it must add only masked zeros in both
    stages; without it the loop runs zero times. Either way the layer meets the oracle, poisoned scratch unseen."""
    monkeypatch.setattr(rules, "K_FLOOR", floor)
    monkeypatch.setattr(rules, "K_FLOOR_MIN_BLOCK_M", 0)  # the floor at this BLOCK_M 16 too
    shape = MoEShape("k160", 4, 2, 160, 160, Activation.SWIGLU_OAI, bias=True)
    p = make_problem(shape, path, 5, seed=4)
    out = moe(p.hidden, p.weights, p.topk_ids, p.topk_weights, path, _v2(split_k=4), poison=True)
    assert_close(out.float(), p.reference(), path=path, stage="layer", name=f"{path.value}/sk4")


@pytest.mark.parametrize("combine", [Combine.SLOTS, Combine.ROWS], ids=lambda c: c.value)
@pytest.mark.parametrize("split_k", [1, 3])
def test_split_and_slots_finish_in_kernel_deterministically(split_k, combine):
    """The last-arrival finishes (stage 1's split-K epilogue, stage 2's slots combine over splits and top-k) and
    the rows combine write every output: poisoned scratch (NaN) never reaches the result, and two runs agree bit
    for bit (the parts are summed in a fixed order, not by atomics). Split 3 over K = 192 / 64: three K blocks, one
    per split (stage 2 of the rows combine does not split)."""
    shape = MoEShape("splits", 6, 3, 192, 128, Activation.SILU)
    p = make_problem(shape, Path.A16W4, 21, seed=5)
    cfg = _v2(block_m=16, split_k=split_k, combine=combine)
    runs = [moe(p.hidden, p.weights, p.topk_ids, p.topk_weights, Path.A16W4, cfg, poison=True) for _ in range(2)]
    assert torch.equal(runs[0], runs[1])
    assert_close(runs[0].float(), p.reference(), path=Path.A16W4, stage="layer", name=f"sk{split_k}")


@pytest.mark.parametrize("in_kernel", [True, False], ids=["in_kernel", "memset_cast"])
@pytest.mark.parametrize("split_k", [1, 2])
def test_atomic_combine_zeroed_by_stage1_and_rounded_in_kernel(split_k, in_kernel, monkeypatch):
    """The atomic combine without a memset or cast kernel (where `finishes_atomic_in_kernel`; the minimum K steps
    is moved to force either side): moe() hands stage 1 the fp32 sums to zero (NaN-filled here, so a strip left
    unzeroed shows), and the last of each token's TOPK x SPLIT_K arrivals per N column writes its bf16 row slice
    (the result is NaN-poisoned first: a slice never written shows). The memset + cast side meets the same bar."""
    from mxmoe.kernels import rules, swmoe

    monkeypatch.setattr(rules, "ATOMIC_FINISH_MIN_K_STEPS", 1 if in_kernel else 1 << 30)
    clear_plans()  # the layer plan is memoized on its arguments: a patched rule needs a fresh one
    real_empty = torch.empty
    monkeypatch.setattr(torch, "empty", lambda *a, **k: real_empty(*a, **k).fill_(float("nan"))
                        if k.get("dtype") is torch.float32 else real_empty(*a, **k))
    shape = MoEShape("atomic", 6, 3, 192, 128, Activation.SILU)
    p = make_problem(shape, Path.A16W4, 21, seed=7)
    cfg = _v2(block_m=16, split_k=split_k, combine=Combine.ATOMIC)
    assert rules.finishes_atomic_in_kernel(cfg.stage2, shape.inter) == in_kernel
    out = moe(p.hidden, p.weights, p.topk_ids, p.topk_weights, Path.A16W4, cfg, poison=True)
    assert_close(out.float(), p.reference(), path=Path.A16W4, stage="layer", name=f"sk{split_k}")
    monkeypatch.undo()
    # more strips than programs: each program zeroes several, grid-strided
    from mxmoe.kernels.align import align
    from mxmoe.kernels.quant import quantize_input

    buf = torch.full((50 * 1024 + 7,), float("nan"))
    plan = align(p.topk_ids, shape.experts, 16)
    swmoe.stage1_wgmma(quantize_input(p.hidden, Path.A16W4, bf16=True), p.weights, plan, cfg.stage1, zero=buf)
    assert not buf.any() and not buf.isnan().any()
    clear_plans()


def test_atomic_finish_rule():
    """In-kernel atomic finish for BM 16 tiles with at least 8 K steps per split (swmoe's measured rule)."""
    from mxmoe.kernels.rules import finishes_atomic_in_kernel

    t = TileConfig(block_m=16, block_n=128, block_k=128, mma=Mma.WGMMA)
    assert finishes_atomic_in_kernel(t, 2048)  # 16 steps
    assert not finishes_atomic_in_kernel(t, 256)  # a TP8 inter: 2 steps
    assert not finishes_atomic_in_kernel(t.replace(split_k=4), 2048)  # 4 steps a split
    assert not finishes_atomic_in_kernel(t.replace(block_m=32), 2048)
    assert not finishes_atomic_in_kernel(t.replace(combine=Combine.SLOTS), 2048)


@pytest.mark.parametrize("path", [Path.A8W4, Path.A4W4], ids=lambda p: p.value)
def test_deferred_rounding_is_the_fused_rounding(path, monkeypatch):
    """From BLOCK_M 64 stage 1 stores bf16 h and kernels/quant.py rounds it in place: the same bits as the
    epilogue's fused rounding of the same sums (the two runs differ only in where qdq_tile runs), and the layer
    still meets the oracle with poisoned buffers."""
    from mxmoe.kernels import rules, swmoe
    from mxmoe.kernels.align import align
    from mxmoe.kernels.quant import quantize_input

    shape = MoEShape("defer", 4, 2, 128, 96, Activation.SWIGLU_OAI, bias=True)
    p = make_problem(shape, path, 40, seed=6)
    cfg = _v2(block_m=64, block_k=128)
    assert rules.defers_rounding(path, cfg.stage1)
    x = quantize_input(p.hidden, path, bf16=True)
    plan = align(p.topk_ids, shape.experts, 64)
    deferred = swmoe.stage1_wgmma(x, p.weights, plan, cfg.stage1, poison=True).data
    monkeypatch.setattr(rules, "DEFER_MIN_BLOCK_M", 1 << 30)
    fused = swmoe.stage1_wgmma(x, p.weights, plan, cfg.stage1, poison=True).data
    assert torch.equal(deferred, fused)
    monkeypatch.undo()
    out = moe(p.hidden, p.weights, p.topk_ids, p.topk_weights, path, cfg, poison=True)
    assert_close(out.float(), p.reference(), path=path, stage="layer", name=path.value)


@pytest.mark.parametrize("path", list(Path), ids=lambda p: p.value)
def test_nan_in_the_input_reaches_its_token_on_every_path(path):
    """A NaN in one token's hidden state poisons that token's output row and no other, on all three paths
    (quantizing alone would turn it into a finite code on a8w4 / a4w4)."""
    p = make_problem(MODELS["tiny"], path, 3, seed=4)
    hidden = p.hidden.clone()
    hidden[0, 5] = float("nan")
    out = moe(hidden, p.weights, p.topk_ids, p.topk_weights, path, _v2())
    assert not out[0].isfinite().any()
    assert_close(out[1:].float(), p.reference()[1:], path=path, stage="layer")


@triton.jit
def _qdq_kernel(x_ptr, out_ptr, FP4: tl.constexpr, INTERP: tl.constexpr, R: tl.constexpr, C: tl.constexpr):
    offs = tl.arange(0, R)[:, None] * C + tl.arange(0, C)[None, :]
    tl.store(out_ptr + offs, qdq_tile(tl.load(x_ptr + offs), FP4, INTERP, R, C))


def _qdq_inputs(device) -> torch.Tensor:
    """Every e2m1 / e4m3 tie and its neighbours at several block scales, subnormal blocks, zeros, huge values."""
    g = torch.Generator().manual_seed(7)
    grid = torch.tensor([0.0, 0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 6.0, 7.0, 1.0625, 1.1875, 448.0, 464.0])
    ties = torch.cat([grid, grid * (1 + 2**-20), grid * (1 - 2**-20)])
    rows = [torch.cat([ties, torch.randn(64 - ties.numel(), generator=g)])[torch.randperm(64, generator=g)]
            * 2.0 ** float(e) for e in (-130, -20, -3, 0, 5, 60)]
    rows += [torch.zeros(64), torch.randn(64, generator=g) * 2.0**-140]
    x = torch.stack(rows)
    return torch.cat([x, -x]).to(device)


def _check_qdq(fp4: bool, gpu: bool) -> None:
    from mxmoe.mx import quantize_mxfp4, quantize_mxfp8

    x = _qdq_inputs("cuda" if gpu else "cpu")
    want = dequantize((quantize_mxfp4 if fp4 else quantize_mxfp8)(x.float().cpu()))
    got = torch.empty_like(x)
    _qdq_kernel[(1,)](x, got, FP4=fp4, INTERP=not gpu, R=x.shape[0], C=x.shape[1])
    assert torch.equal(got.cpu(), want)


@pytest.mark.parametrize("fp4", [True, False], ids=["mxfp4", "mxfp8"])
def test_qdq_tile_is_the_oracle_round_trip(fp4):
    """The v2 carriers' rounding (mx_tile.qdq_tile) equals quantize + dequantize of mxmoe.mx, bit for bit."""
    _check_qdq(fp4, gpu=torch.cuda.is_available())


@pytest.mark.gpu
@pytest.mark.parametrize("fp4", [True, False], ids=["mxfp4", "mxfp8"])
def test_qdq_tile_gpu(fp4):
    """The same on the GPU, where MXFP8 rounds with the hardware's e4m3 conversion."""
    _check_qdq(fp4, gpu=True)
