"""Fused kernels vs the fp32 oracle on the GPU: every model shape, both MMA levers, the real sizes.

Oracle and tolerances as in test_moe.py (mxmoe.reference through Problem.reference(), and
mxmoe.tolerance.TOLERANCES[(path, "layer")]). Skipped without a CUDA GPU (tests/conftest.py).
"""

from __future__ import annotations

import pytest
import torch

from mxmoe.config import Combine, Mma, MoEConfig
from mxmoe.heuristic import default_config, on_e4m3
from mxmoe.moe import moe
from mxmoe.problem import make_problem
from mxmoe.shapes import FULL_MODELS, MODELS, Path
from mxmoe.tolerance import assert_close

pytestmark = pytest.mark.gpu

CASES = [(m, Path.A16W4, t) for m in FULL_MODELS for t in (1, 16, 128, 1024)]
CASES += [(m, p, t) for m in ("gpt-oss-120b", "deepseek-v3") for p in (Path.A8W4, Path.A4W4) for t in (1, 128, 1024)]
CASES += [("deepseek-v3", Path.A16W4, 8192), ("kimi-k2", Path.A16W4, 8192)]
CASES += [(m, p, t) for m in ("deepseek-v3-tp8", "deepseek-v4-tp8", "kimi-k2-tp8", "gpt-oss-3072")
          for p in Path for t in (1, 256)]
# Two runs of one prefill layer may differ only by the order of the fp32 atomic adds, which moves a bf16 output by
# at most one rounding step (2**-8 of its magnitude, 2**-8 of the output's max at worst); 2**-6 of the max leaves
# room for two such steps and stays far below what the register-A wgmma hazard did (docs/architecture.md, "Known
# hazard": deepseek-v3 T=8192 runs 0.55 apart on outputs of max ~7.5, i.e. 2**-3.8 of the max).
RERUN_REL = 2.0**-6
MMA_CASES = [(m, p, t, mma) for (m, p, t) in CASES for mma in Mma if not mma.e4m3]  # wgmma (v2), v1 dot_scaled, upcast
# (wgmma_e4m3, an a8w4 stage-1 lever: test_e4m3_stage1_gpu)


def _with(cfg: MoEConfig, mma: Mma, combine: Combine) -> MoEConfig:
    return MoEConfig(cfg.stage1.replace(mma=mma), cfg.stage2.replace(mma=mma, combine=combine))


@pytest.fixture(scope="module")
def problems():
    """Weights of the big shapes take seconds to draw: keep one Problem per (model, path, T) alive."""
    cache: dict = {}

    def get(model, path, t):
        key = (model, path, t)
        if key not in cache:
            cache.clear()
            torch.cuda.empty_cache()
            cache[key] = make_problem(MODELS[model], path, t, seed=t, device="cuda")
        return cache[key]

    return get


@pytest.mark.parametrize("model,path,tokens,mma", MMA_CASES, ids=lambda v: getattr(v, "value", str(v)))
def test_layer_gpu(problems, model, path, tokens, mma):
    p = problems(model, path, tokens)
    cfg = _with(default_config(p.shape, path, tokens, kernels="v2" if mma.v2 else "v1"), mma, Combine.ATOMIC)
    out = moe(p.hidden, p.weights, p.topk_ids, p.topk_weights, path, cfg)
    assert_close(out.float(), p.reference(), path=path, stage="layer", name=f"{model}/{path.value}/T={tokens}")


@pytest.mark.parametrize("model", ["deepseek-v3", "kimi-k2"])
def test_prefill_layer_runs_agree_gpu(problems, model):
    """The default prefill tiles at T=8192, run three times: the stage-2 wgmma pipeline hazard that corrupted them
    (docs/architecture.md, "Known hazard") showed as runs differing, not only as a miss against the oracle."""
    p = problems(model, Path.A16W4, 8192)
    cfg = _with(default_config(p.shape, Path.A16W4, 8192), Mma.WGMMA, Combine.ATOMIC)
    outs = [moe(p.hidden, p.weights, p.topk_ids, p.topk_weights, Path.A16W4, cfg).float() for _ in range(3)]
    bound = RERUN_REL * float(outs[0].abs().max())
    for o in outs[1:]:
        assert float((o - outs[0]).abs().max()) <= bound


@pytest.mark.parametrize("routing", ["sentinel_padding", "few_active", "skewed", "all_active"])
def test_slots_combine_and_routings_gpu(routing):
    p = make_problem(MODELS["gpt-oss-120b"], Path.A16W4, 200, seed=3, routing=routing, device="cuda")
    for combine in Combine:
        cfg = _with(default_config(p.shape, Path.A16W4, 200), Mma.WGMMA, combine)
        out = moe(p.hidden, p.weights, p.topk_ids, p.topk_weights, Path.A16W4, cfg)
        assert_close(out.float(), p.reference(), path=Path.A16W4, stage="layer", name=f"{routing}/{combine.value}")


@pytest.mark.parametrize("path", list(Path), ids=lambda p: p.value)
def test_rows_combine_tp8_prefill_gpu(problems, path):
    """The bf16 rows combine where it is meant to run: 9 slots of H = 7168 per token at prefill."""
    p = problems("deepseek-v3-tp8", path, 2048)
    cfg = _with(default_config(p.shape, path, 2048), Mma.WGMMA, Combine.ROWS)
    out = moe(p.hidden, p.weights, p.topk_ids, p.topk_weights, path, cfg)
    assert_close(out.float(), p.reference(), path=path, stage="layer", name=f"rows/{path.value}")


@pytest.mark.parametrize("stages", ["1", "2", "12"])
@pytest.mark.parametrize("model,tokens", [("deepseek-v3", 1024), ("gpt-oss-120b", 128), ("deepseek-v3-tp8", 2048)])
def test_e4m3_stage1_gpu(model, tokens, stages):
    """a8w4 on e4m3 wgmma (QGMMA, the prmt decode, the two accumulator chains, the epilogue scales) at real sizes,
    on stage 1, stage 2 or both, the heuristic's tiles as `on_e4m3` fits them to the chains' registers."""
    p = make_problem(MODELS[model], Path.A8W4, tokens, seed=tokens, device="cuda")
    base = default_config(p.shape, Path.A8W4, tokens)
    s1, s2 = base.stage1, base.stage2
    if "1" in stages:
        s1 = on_e4m3(p.shape, 1, s1)
    if "2" in stages:
        s2 = on_e4m3(p.shape, 2, s2)
    out = moe(p.hidden, p.weights.with_e4m3(), p.topk_ids, p.topk_weights, Path.A8W4, MoEConfig(s1, s2))
    assert_close(out.float(), p.reference(), path=Path.A8W4, stage="layer", name=f"e4m3/{model}/T={tokens}/{stages}")


def test_cuda_graph_capture_replays_new_inputs():
    """moe(validate=False) is capturable: capture once, change inputs in place, replay, compare."""
    p = make_problem(MODELS["deepseek-v3-tp8"], Path.A8W4, 4, seed=1, device="cuda")
    q = make_problem(MODELS["deepseek-v3-tp8"], Path.A8W4, 4, seed=2, device="cuda")
    hidden, ids, w = p.hidden.clone(), p.topk_ids.clone(), p.topk_weights.clone()
    fn = lambda: moe(hidden, p.weights, ids, w, Path.A8W4, validate=False)
    fn()
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        out = fn()
    hidden.copy_(q.hidden)
    ids.copy_(q.topk_ids)
    w.copy_(q.topk_weights)
    g.replay()
    from mxmoe.reference import moe_reference_from_weights

    ref = moe_reference_from_weights(q.hidden, p.weights, q.topk_ids, q.topk_weights, Path.A8W4)
    assert_close(out.float(), ref, path=Path.A8W4, stage="layer")


def test_cpu_tensor_without_interpreter_gets_clear_error(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    p = make_problem(MODELS["tiny"], Path.A16W4, 3)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        moe(p.hidden, p.weights, p.topk_ids, p.topk_weights)


@pytest.mark.parametrize("split_k", [2, 4, 8])
@pytest.mark.parametrize("mma", [Mma.WGMMA, Mma.DOT_SCALED, Mma.UPCAST], ids=lambda m: m.value)
@pytest.mark.parametrize("model,tokens", [("deepseek-v3", 1), ("deepseek-v3", 128), ("gpt-oss-20b", 1)])
def test_stage2_split_k_gpu(problems, model, tokens, mma, split_k):
    """Stage-2 split-K: each split takes whole K blocks and the partial sums meet in the fp32 atomics. The split
    that started at pid_k * (I // SPLIT_K) returned sums off by max_rel 1.4 with dot_scaled at split 4 on the
    H100 (2026-11-25), where Triton no longer staged the e2m1 weights; the block-range split keeps k0 a multiple
    of BLOCK_K and the weights staged, and this pins that it computes right. gpt-oss-20b (inter 2880 = 45 x 64,
    the tail block masked) is a K the old split could not take."""
    p = problems(model, Path.A16W4, tokens)
    base = default_config(p.shape, Path.A16W4, tokens, kernels="v2" if mma.v2 else "v1")
    cfg = MoEConfig(base.stage1, base.stage2.replace(mma=mma, split_k=split_k, combine=Combine.ATOMIC))
    out = moe(p.hidden, p.weights, p.topk_ids, p.topk_weights, Path.A16W4, cfg)
    assert_close(out.float(), p.reference(), path=Path.A16W4, stage="layer",
                 name=f"{model}/T={tokens}/sk{split_k}/{mma.value}")


@pytest.mark.parametrize("path", list(Path), ids=lambda p: p.value)
@pytest.mark.parametrize("tokens", [1, 16])
def test_stage1_split_k_gpu(problems, tokens, path):
    """Stage-1 split-K on gpt-oss-20b (hidden 2880: 12 K blocks of the heuristic's 256, the last one masked;
    split_k=8 hands out 2 each and leaves two splits empty), both kernel generations, every path: the partial sums
    meet in the fp32 scratch, the epilogue kernel quantizes the full sums."""
    p = problems("gpt-oss-20b", path, tokens)
    ref = p.reference()
    for kernels, split_k in ((k, s) for k in ("v2", "v1") for s in (2, 4, 8)):
        base = default_config(p.shape, path, tokens, kernels=kernels)
        cfg = MoEConfig(base.stage1.replace(split_k=split_k), base.stage2)
        out = moe(p.hidden, p.weights, p.topk_ids, p.topk_weights, path, cfg, poison=True)
        assert_close(out.float(), ref, path=path, stage="layer", name=f"sk{split_k}/T={tokens}")
