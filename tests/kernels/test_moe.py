"""Fused kernels vs the fp32 oracle (mxmoe.reference) on the Triton interpreter, tiny shapes.

Oracle: Problem.reference() -> mxmoe.reference.moe_reference_from_weights (fp32, same activation
fake-quantization as the path). Tolerances: mxmoe.tolerance.TOLERANCES[(path, "layer")], justified there
from the bf16 / e4m3 / e2m1 roundings the kernels and the oracle share (only rounding flips and the
bf16 output rounding differ). The interpreter runs mma=upcast only (it lacks tl.dot_scaled); the GPU
suite (test_moe_gpu.py) covers dot_scaled.
"""

from __future__ import annotations

import pytest
import torch

from mxmoe.config import Combine, Mma, MoEConfig, TileConfig
from mxmoe.legality import INTERPRETER, Legal, Reason, check
from mxmoe.moe import moe
from mxmoe.problem import make_problem
from mxmoe.shapes import MODELS, Activation, MoEShape, Path
from mxmoe.tolerance import assert_close, compare, lookup
from mxmoe.weights import MoEWeights

TINY = MODELS["tiny"]
TINY_OAI = MODELS["tiny-oai"]


def cfg(block_m=16, block_n=32, block_k=64, **kw) -> MoEConfig:
    s2 = {k: v for k, v in kw.items()}
    s1 = {k: v for k, v in kw.items() if k not in ("combine", "split_k")}
    return MoEConfig(TileConfig(block_m=block_m, block_n=block_n, block_k=block_k, mma=Mma.UPCAST, **s1),
                     TileConfig(block_m=block_m, block_n=block_n, block_k=block_k, mma=Mma.UPCAST, **s2))


def run(p, config=None):
    return moe(p.hidden, p.weights, p.topk_ids, p.topk_weights, p.path, config)

V1_COMBINES = [c for c in Combine if c is not Combine.ROWS]  # rows is a v2 combine (tests/kernels/test_wgmma.py)


@pytest.mark.parametrize("shape", [TINY, TINY_OAI], ids=lambda s: s.name)
@pytest.mark.parametrize("path", list(Path), ids=lambda p: p.value)
@pytest.mark.parametrize("combine", V1_COMBINES, ids=lambda c: c.value)
@pytest.mark.parametrize("tokens", [1, 3, 17, 64])
def test_layer_matches_reference(shape, path, combine, tokens):
    p = make_problem(shape, path, tokens, seed=tokens)
    out = run(p, cfg(combine=combine))
    assert out.dtype == torch.bfloat16 and out.shape == (tokens, shape.hidden)
    assert_close(out.float(), p.reference(), path=path, stage="layer", name=f"{shape.name}/{path.value}/T={tokens}")


@pytest.mark.parametrize(
    "name,config",
    [
        ("block_m=32", cfg(block_m=32)),
        ("group_m=4", cfg(group_m=4)),
        ("block_n=64,block_k=128", cfg(block_n=64, block_k=128)),
    ],
)
def test_levers(name, config):
    p = make_problem(TINY_OAI, Path.A16W4, 33, seed=5)
    assert_close(run(p, config).float(), p.reference(), path=Path.A16W4, stage="layer", name=name)


@pytest.mark.parametrize("path", [Path.A16W4, Path.A4W4], ids=lambda p: p.value)
@pytest.mark.parametrize("combine", V1_COMBINES, ids=lambda c: c.value)
def test_poisoned_buffers_change_nothing_when_every_tile_is_written(path, combine):
    """moe(poison=True) NaN-fills the intermediate and the combine buffer first (the sweep's check): a correct
    launch overwrites every element it reads, so the answer is bit-identical to the plain call."""
    p = make_problem(TINY, path, 17, seed=8)
    c = cfg(combine=combine)
    plain = run(p, c)
    poisoned = moe(p.hidden, p.weights, p.topk_ids, p.topk_weights, p.path, c, poison=True)
    assert torch.equal(plain, poisoned) and not poisoned.isnan().any()


def test_split_k():
    """split_k=2 over inter=128 with BLOCK_K=64: two programs add partial sums; only the first adds the bias."""
    shape = MoEShape("split", 4, 2, 64, 128, Activation.SWIGLU_OAI, bias=True)
    p = make_problem(shape, Path.A16W4, 21, seed=6)
    assert_close(run(p, cfg(split_k=2)).float(), p.reference(), path=Path.A16W4, stage="layer")


# Stage-1 split-K over hidden=160 with BLOCK_K=64: three K blocks, the last half masked. split_k=2 hands out
# blocks (0, 1) and (2); split_k=4 one each, and a fourth split with none (more splits than blocks).
# Each (path, activation) takes both split counts, at two of the three T, so every T meets every path,
# activation and split count: 12 layer runs.
SPLIT1_T = (1, 3, 17)
SPLIT1_CASES = [
    pytest.param(path, act, sk, SPLIT1_T[(i + j) % 3], id=f"{path.value}-{act.value}-sk{sk}-T{SPLIT1_T[(i + j) % 3]}")
    for i, (path, act) in enumerate((p, a) for p in Path for a in Activation)
    for j, sk in enumerate((2, 4))
]


def stage1_split(split_k: int) -> MoEConfig:
    c = TileConfig(block_m=16, block_n=32, block_k=64, mma=Mma.UPCAST)
    return MoEConfig(c.replace(split_k=split_k), c)


@pytest.mark.parametrize("path,activation,split_k,tokens", SPLIT1_CASES)
def test_stage1_split_k(path, activation, split_k, tokens):
    """Partial gate/up sums meet in the zeroed fp32 scratch (split 0 adds the bias) and the epilogue kernel
    runs over every pair: h is poisoned first, so a pair row it skipped would show as NaN."""
    shape = MoEShape(f"k160-{activation.value}", 4, 2, 160, 64, activation, bias=activation is Activation.SWIGLU_OAI)
    p = make_problem(shape, path, tokens, seed=tokens)
    out = moe(p.hidden, p.weights, p.topk_ids, p.topk_weights, path, stage1_split(split_k), poison=True)
    assert_close(out.float(), p.reference(), path=path, stage="layer", name=f"{shape.name}/{path.value}/T={tokens}")


def test_dot_scaled_is_refused_by_the_interpreter():
    p = make_problem(TINY, Path.A16W4, 1)
    c = TileConfig(block_m=16, block_n=32, block_k=64, mma=Mma.DOT_SCALED)
    with pytest.raises(ValueError, match="interpreter"):
        moe(p.hidden, p.weights, p.topk_ids, p.topk_weights, Path.A16W4, MoEConfig(c, c))
    assert check(TINY, Path.A16W4, 1, c, INTERPRETER, tokens=1).reason is Reason.PATH_UNSUPPORTED


# Stage-2 split-K over inter=160 with BLOCK_K=64 (not a multiple of split_k x BLOCK_K): three K blocks, the last
# half masked. split_k=2 hands out blocks (0, 1) and (2); split_k=4 one each and a fourth split none, a count
# legality refuses as DEGENERATE (waste), which must still compute right if launched. Every path takes both split
# counts and both activations, at T 1, 3 and 17.
_SILU, _OAI = Activation.SILU, Activation.SWIGLU_OAI
SPLIT2_CASES = [
    pytest.param(path, sk, act, t, id=f"{path.value}-sk{sk}-{act.value}-T{t}")
    for path, sk, act, t in ((Path.A16W4, 2, _SILU, 3), (Path.A16W4, 4, _OAI, 17), (Path.A8W4, 2, _OAI, 1),
                             (Path.A8W4, 4, _SILU, 3), (Path.A4W4, 2, _SILU, 17), (Path.A4W4, 4, _OAI, 1))
]


@pytest.mark.parametrize("path,split_k,activation,tokens", SPLIT2_CASES)
def test_stage2_split_k_whole_blocks(path, split_k, activation, tokens):
    """Each split takes whole K blocks, so an inter that split_k x BLOCK_K does not divide splits too; the
    partial sums meet in the fp32 atomics and only split 0 adds the bias."""
    shape = MoEShape(f"i160-{activation.value}", 4, 2, 64, 160, activation, bias=activation is Activation.SWIGLU_OAI)
    c = TileConfig(block_m=16, block_n=32, block_k=64, mma=Mma.UPCAST)
    config = MoEConfig(c, c.replace(split_k=split_k))
    verdict = check(shape, path, 2, config.stage2, INTERPRETER)
    if split_k > 3:
        assert verdict.reason is Reason.DEGENERATE and "3 K blocks" in verdict.detail
    else:
        assert isinstance(verdict, Legal)
    p = make_problem(shape, path, tokens, seed=tokens)
    out = moe(p.hidden, p.weights, p.topk_ids, p.topk_weights, path, config, poison=True)
    assert_close(out.float(), p.reference(), path=path, stage="layer", name=f"{shape.name}/{path.value}/sk{split_k}")


def test_k_tail_masking():
    """hidden=96 and inter=96 are not multiples of BLOCK_K=64: the last K step is half masked."""
    shape = MoEShape("odd-k", 4, 2, 96, 96, Activation.SILU)
    for path in Path:
        p = make_problem(shape, path, 9, seed=3)
        assert_close(run(p, cfg(block_n=32, block_k=64)).float(), p.reference(), path=path, stage="layer")


@pytest.mark.parametrize("routing", ["few_active", "all_active", "sentinel_padding", "skewed"])
def test_routing_distributions(routing):
    p = make_problem(TINY, Path.A8W4, 40, seed=2, routing=routing)
    assert_close(run(p, cfg()).float(), p.reference(), path=Path.A8W4, stage="layer", name=routing)


def test_topk_one_and_all_on_one_expert():
    shape = MoEShape("k1", 4, 1, 64, 64, Activation.SILU)
    p = make_problem(shape, Path.A16W4, 19, seed=1)
    assert_close(run(p, cfg()).float(), p.reference(), path=Path.A16W4, stage="layer")
    ids = torch.full((19, 1), 2, dtype=torch.int32)
    w = torch.ones(19, 1)
    out = moe(p.hidden, p.weights, ids, w, Path.A16W4, cfg())
    from mxmoe.reference import moe_reference_from_weights

    assert_close(out.float(), moe_reference_from_weights(p.hidden, p.weights, ids, w, Path.A16W4),
                 path=Path.A16W4, stage="layer")


def test_zero_tokens():
    p = make_problem(TINY, Path.A4W4, 0)
    out = run(p, cfg())
    assert out.shape == (0, TINY.hidden)


def test_heuristic_config_runs():
    p = make_problem(TINY, Path.A16W4, 17, seed=9)
    assert compare(run(p).float(), p.reference(), lookup(Path.A16W4, "layer")).ok


def test_every_row_written():
    """Rows the routing never reaches stay exactly zero; a kernel writing garbage there would show."""
    p = make_problem(TINY, Path.A16W4, 8, seed=4, routing="few_active")
    out = run(p, cfg())
    assert torch.isfinite(out).all()


# ---- bad input -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prob():
    return make_problem(TINY, Path.A16W4, 5, seed=0)


def test_wrong_hidden_size(prob):
    with pytest.raises(ValueError, match="H=32 columns"):
        moe(prob.hidden[:, :32].contiguous(), prob.weights, prob.topk_ids, prob.topk_weights)


def test_wrong_dtype(prob):
    with pytest.raises(TypeError, match="bf16, fp16 or fp32"):
        moe(prob.hidden.to(torch.int32), prob.weights, prob.topk_ids, prob.topk_weights)


def test_ids_out_of_range(prob):
    bad = prob.topk_ids.clone()
    bad[0, 0] = TINY.experts
    with pytest.raises(ValueError, match="expected \\[0, 4\\)"):
        moe(prob.hidden, prob.weights, bad, prob.topk_weights)


def test_routing_shape_mismatch(prob):
    with pytest.raises(ValueError, match="topk_weights shape"):
        moe(prob.hidden, prob.weights, prob.topk_ids, prob.topk_weights[:, :1])


def test_device_mismatch(prob):
    with pytest.raises(ValueError, match="is on meta"):
        moe(prob.hidden.to("meta"), prob.weights, prob.topk_ids, prob.topk_weights)


def test_non_contiguous_hidden_is_handled(prob):
    wide = prob.hidden.t().contiguous().t()  # column-major: same values, not contiguous
    assert not wide.is_contiguous()
    ref = moe(prob.hidden, prob.weights, prob.topk_ids, prob.topk_weights, config=cfg())
    assert torch.equal(moe(wide, prob.weights, prob.topk_ids, prob.topk_weights, config=cfg()), ref)


def test_bad_block_k(prob):
    with pytest.raises(ValueError, match="multiple of 64"):
        moe(prob.hidden, prob.weights, prob.topk_ids, prob.topk_weights, config=cfg(block_k=96))


def test_dot_scaled_refused_on_interpreter(prob):
    c = cfg()
    c = MoEConfig(c.stage1.replace(mma=Mma.DOT_SCALED), c.stage2)
    with pytest.raises(ValueError, match="interpreter"):
        moe(prob.hidden, prob.weights, prob.topk_ids, prob.topk_weights, config=c)


def test_stage1_combine_refused(prob):
    c = cfg()
    c = MoEConfig(c.stage1.replace(combine=Combine.SLOTS), c.stage2)
    with pytest.raises(ValueError, match="stage 1 .*illegal: path_unsupported .*stage 1 has no combine"):
        moe(prob.hidden, prob.weights, prob.topk_ids, prob.topk_weights, config=c)


def test_from_float_rejects_bad_k():
    with pytest.raises(ValueError, match="multiples of 32"):
        MoEWeights.from_float(torch.randn(2, 64, 48), torch.randn(2, 48, 32))


def test_from_float_rejects_nan():
    w13 = torch.randn(2, 64, 64)
    w13[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        MoEWeights.from_float(w13, torch.randn(2, 64, 32))


def test_from_float_matches_random_layout_roundtrip():
    """from_float de-interleaves swiglu_oai rows; w13_model_layout must give the model order back."""
    w13 = torch.randn(2, 64, 64) * 0.1
    w = MoEWeights.from_float(w13, torch.randn(2, 64, 32) * 0.1, activation="swiglu_oai")
    from mxmoe.mx import dequantize, quantize_mxfp4

    assert torch.equal(w.w13_model_layout(), dequantize(quantize_mxfp4(w13)))


def test_heuristic_prefill_configs_run():
    """The prefill heuristic (v2: BLOCK_M 128 in both stages) on the interpreter, and a stage 2 on its own BLOCK_M
    (two routing plans)."""
    shape = MoEShape("prefill-ish", 4, 2, 128, 128, Activation.SILU)
    p = make_problem(shape, Path.A16W4, 600, seed=8)
    from mxmoe.heuristic import default_config

    c = default_config(shape, Path.A16W4, 600, interpreter=True)
    assert (c.stage1.block_m, c.stage2.block_m) == (128, 128)
    assert_close(run(p, c).float(), p.reference(), path=Path.A16W4, stage="layer")
    two_plans = MoEConfig(c.stage1.replace(tail_m=0), c.stage2.replace(block_m=64, tail_m=0))  # plans of 128, 64
    assert_close(run(p, two_plans).float(), p.reference(), path=Path.A16W4, stage="layer")


@pytest.mark.parametrize("topk", [7, 9])
def test_non_power_of_two_topk_with_shared_expert(topk):
    """The #708 shapes: top-7 / top-9 with the fused shared expert last (every token, weight 1)."""
    shape = MoEShape(f"tp8-like-k{topk}", 17, topk, 64, 64, Activation.SILU, shared_expert=True)
    p = make_problem(shape, Path.A4W4, 11, seed=topk)
    assert (p.topk_ids[:, -1] == 16).all() and (p.topk_weights[:, -1] == 1).all()
    assert_close(run(p, cfg()).float(), p.reference(), path=Path.A4W4, stage="layer")
