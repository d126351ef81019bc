"""The direct decode layer (kernels/decode.py): two kernels, no alignment, on the Triton interpreter (and on the GPU).

Oracles: the sorted v2 layer, bit for bit (the direct layer computes the same per-pair sums in the same order: split
partials summed in split order onto split 0 plus the bias, the same epilogue and rounding, the same slots combine),
and the fp32 reference with the path's layer tolerance (mxmoe.tolerance.TOLERANCES[(path, "layer")], justified
there).
"""

from __future__ import annotations

import pytest
import torch

from mxmoe.config import Combine, Mma, MoEConfig, TileConfig
from mxmoe.heuristic import default_config
from mxmoe.kernels import rules
from mxmoe.layer_plan import clear_plans, layer_plan
from mxmoe.moe import moe
from mxmoe.problem import make_problem, make_routing
from mxmoe.shapes import MODELS, Activation, MoEShape, Path
from mxmoe.tolerance import assert_close

# I = 320 with BLOCK_K 64: five stage-2 K steps, so the preloaded tiles (at most 3) and the loop after them both run;
# split 2 gives a split of 3 steps and one of 2 (its third preloaded tile lies past its range and is skipped).
LONG_K = MoEShape("long-k", 6, 2, 96, 320, Activation.SWIGLU_OAI, bias=True)


@pytest.fixture
def direct_on(monkeypatch):
    """The direct layer at its built size, at any inter (the shipped rule also caps inter: rules.DIRECT_MAX_INTER)."""
    monkeypatch.setattr(rules, "DIRECT_MAX_PAIRS", 16)
    monkeypatch.setattr(rules, "DIRECT_MAX_INTER", 1 << 20)
    clear_plans()
    yield
    monkeypatch.undo()
    clear_plans()


def _cfg(split1: int, split2: int, block_k: int = 64) -> MoEConfig:
    s1 = TileConfig(block_m=16, block_n=64, block_k=block_k, mma=Mma.WGMMA, split_k=split1)
    return MoEConfig(s1, s1.replace(split_k=split2, combine=Combine.SLOTS))


def _both(p, path, cfg, monkeypatch, *, poison=False):
    """(sorted layer, direct layer) outputs of one problem and config."""
    outs = []
    monkeypatch.setattr(rules, "DIRECT_MAX_INTER", 1 << 20)
    for limit in (0, 1 << 20):
        monkeypatch.setattr(rules, "DIRECT_MAX_PAIRS", limit)
        clear_plans()
        assert layer_plan(p.shape, path, cfg, p.hidden.shape[0]).direct == (limit > 0)
        outs.append(moe(p.hidden, p.weights, p.topk_ids, p.topk_weights, path, cfg, poison=poison))
    clear_plans()
    return outs


@pytest.mark.parametrize("path", list(Path), ids=lambda p: p.value)
@pytest.mark.parametrize("shape,tokens,split1,split2", [
    (MODELS["tiny"], 1, 1, 1), (MODELS["tiny-oai"], 2, 3, 1), (LONG_K, 3, 2, 2), (LONG_K, 1, 1, 1),
], ids=["tiny-T1", "oai-T2-sk3", "longk-T3-sk2x2", "longk-T1"])
def test_direct_layer_is_the_sorted_layer(shape, tokens, split1, split2, path, monkeypatch):
    """Poisoned scratch (NaN partial sums, slot rows and result) never shows: every pair's rows are written."""
    p = make_problem(shape, path, tokens, seed=tokens + split1)
    sorted_out, direct_out = _both(p, path, _cfg(split1, split2), monkeypatch, poison=True)
    assert torch.equal(sorted_out, direct_out)
    assert_close(direct_out.float(), p.reference(), path=path, stage="layer", name=f"{shape.name}/{path.value}")


@pytest.mark.parametrize("path", [Path.A16W4, Path.A8W4], ids=lambda p: p.value)
@pytest.mark.parametrize("shape,tokens,split1", [
    (MoEShape("h192", 4, 2, 192, 128, Activation.SILU), 1, 1),
    (MoEShape("h256-oai", 4, 2, 256, 128, Activation.SWIGLU_OAI, bias=True), 2, 3), (LONG_K, 3, 2),
], ids=["h192-T1", "oai-T2-sk3", "longk-T3-sk2"])  # H and I span 2+ K blocks: at one, both orders are the same bytes
def test_direct_stages_read_the_n_major_copies_bit_for_bit(shape, tokens, split1, path, direct_on, monkeypatch):
    """The N-major copies of W13 and W2 (MoEWeights.with_decode_layout, rules.DIRECT1_N_MAJOR / DIRECT2_N_MAJOR)
    change only where each stage finds a block: the layer is the K-major one's bit for bit, splits and LONG_K's
    half-padded K block included."""
    p = make_problem(shape, path, tokens, seed=tokens + 7)
    cfg = _cfg(split1, 1)
    w = p.weights.with_decode_layout()
    assert w.w13_dec.n_major and w.w2_dec.n_major and w.with_decode_layout() is w and p.weights.w13_dec is None
    assert w.to("cpu").w13_dec is not None and w.with_e4m3().w13_dec is w.w13_dec  # kept by both copies
    want = moe(p.hidden, p.weights, p.topk_ids, p.topk_weights, path, cfg, poison=True)
    got = moe(p.hidden, w, p.topk_ids, p.topk_weights, path, cfg, poison=True)
    assert torch.equal(got, want)
    for rule in ("DIRECT1_N_MAJOR", "DIRECT2_N_MAJOR"):  # stage 1's copy ignored, then both
        monkeypatch.setattr(rules, rule, 0)
        assert torch.equal(moe(p.hidden, w, p.topk_ids, p.topk_weights, path, cfg), want)


@pytest.mark.parametrize("pre", [1, 2, 3])
def test_direct_preloads_each_k_step_once(pre, monkeypatch):
    """Stage 2 with 1..3 of LONG_K's five K steps preloaded before its wait (rules.DIRECT_PRELOAD_STEPS), on one
    split and on two (3 + 2 steps: a split shorter than the preload skips the tiles past its range)."""
    monkeypatch.setattr(rules, "DIRECT_PRELOAD_STEPS", pre)
    p = make_problem(LONG_K, Path.A16W4, 1, seed=pre)
    for split2 in (1, 2):
        sorted_out, direct_out = _both(p, Path.A16W4, _cfg(1, split2), monkeypatch)
        assert torch.equal(sorted_out, direct_out)


def test_direct_plan_rule(monkeypatch):
    """Direct where both stages take BM 16 and stage 2 the slots combine, up to DIRECT_MAX_PAIRS pairs and an inter
    of DIRECT_MAX_INTER; the shipped constants take it at the TP8 decode points where it measured faster."""
    shape = MODELS["deepseek-v3-tp8"]
    cfg = default_config(shape, Path.A16W4, 1)
    assert rules.runs_direct(cfg, 1, 9, 256) and rules.runs_direct(cfg, 3, 9, 256)  # up to 27 pairs: faster
    assert rules.runs_direct(cfg, 1, 7, 512)  # deepseek-v4-tp8
    assert not rules.runs_direct(cfg, 1, 4, 2880)  # gpt-oss: inter 2880 lost
    monkeypatch.setattr(rules, "DIRECT_MAX_PAIRS", 16)
    monkeypatch.setattr(rules, "DIRECT_MAX_INTER", 256)
    assert rules.runs_direct(cfg, 1, 8, 256) and rules.runs_direct(cfg, 2, 8, 256)
    assert not rules.runs_direct(cfg, 3, 8, 256)  # 24 pairs
    assert not rules.runs_direct(cfg, 1, 8, 320)
    assert not rules.runs_direct(MoEConfig(cfg.stage1, cfg.stage2.replace(combine=Combine.ATOMIC)), 1, 8, 256)
    assert not rules.runs_direct(MoEConfig(cfg.stage1.replace(block_m=32), cfg.stage2), 1, 8, 256)
    assert not rules.runs_direct(default_config(shape, Path.A16W4, 1, kernels="v1"), 1, 8, 256)


def test_direct_pieces_replayed_are_what_moe_runs(direct_on):
    """The layer plan's pieces (the timing callers' route / stage 1 / stage 2) run the direct kernels: stage 2
    replayed on one stage-1 result gives moe()'s answer each time (it allocates zeroed counters when the plan
    carries none), and an MX path's input goes to stage 1 unrounded."""
    p = make_problem(MODELS["tiny"], Path.A8W4, 1, seed=9)
    cfg = default_config(p.shape, Path.A8W4, 1)
    lp = layer_plan(p.shape, Path.A8W4, cfg, 1)
    assert lp.direct
    x = lp.quantize(p.hidden)
    assert torch.equal(x.data, p.hidden.to(torch.bfloat16))
    plan1, plan2 = lp.route(p.topk_ids, counters=False)
    assert plan1.counters is None
    part = lp.stage1(x, p.weights, plan1)
    outs = [lp.stage2(part, p.weights, plan1, plan2, p.topk_weights) for _ in range(2)]
    want = moe(p.hidden, p.weights, p.topk_ids, p.topk_weights, Path.A8W4, cfg)
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], want)


def test_direct_layer_refuses_out_of_range_ids_when_validating(direct_on):
    p = make_problem(MODELS["tiny"], Path.A16W4, 1, seed=1)
    ids = p.topk_ids.clone()
    ids[0, 0] = p.shape.experts
    with pytest.raises(ValueError, match="topk_ids hold values"):
        moe(p.hidden, p.weights, ids, p.topk_weights, Path.A16W4)


def test_direct_layer_refuses_cpu_tensors_without_the_interpreter(direct_on, monkeypatch):
    """The direct layer launches no quantize or align kernel (which check their tensors in the sorted layer), so
    its plan checks: CPU tensors with TRITON_INTERPRET unset get the clear error, not Triton's own (seen on the
    H100 at 4dfdb12, where a T=3 tiny call takes the direct layer)."""
    p = make_problem(MODELS["tiny"], Path.A16W4, 1, seed=1)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        moe(p.hidden, p.weights, p.topk_ids, p.topk_weights, Path.A16W4, _cfg(1, 1))


@pytest.mark.gpu
@pytest.mark.parametrize("path", list(Path), ids=lambda p: p.value)
@pytest.mark.parametrize("model,tokens", [("deepseek-v3-tp8", 1), ("deepseek-v4-tp8", 2), ("gpt-oss-120b", 1)])
def test_direct_layer_is_the_sorted_layer_gpu(model, tokens, path, monkeypatch):
    p = make_problem(MODELS[model], path, tokens, seed=tokens, device="cuda")
    cfg = default_config(p.shape, path, tokens)
    sorted_out, direct_out = _both(p, path, cfg, monkeypatch, poison=True)
    assert torch.equal(sorted_out, direct_out)
    assert_close(direct_out.float(), p.reference(), path=path, stage="layer", name=f"{model}/{path.value}")


@pytest.mark.gpu
@pytest.mark.parametrize("path", [Path.A16W4, Path.A8W4], ids=lambda p: p.value)
@pytest.mark.parametrize("model,tokens", [("deepseek-v4-tp8", 1), ("kimi-k2-tp8", 2)])
def test_direct_stages_read_the_n_major_copies_bit_for_bit_gpu(model, tokens, path):
    """The GPU twin of the N-major test at real TP8 shapes and their default (direct) configs."""
    p = make_problem(MODELS[model], path, tokens, seed=tokens, device="cuda")
    cfg = default_config(p.shape, path, tokens)
    assert layer_plan(p.shape, path, cfg, tokens).direct
    want = moe(p.hidden, p.weights, p.topk_ids, p.topk_weights, path, cfg, poison=True)
    got = moe(p.hidden, p.weights.with_decode_layout(), p.topk_ids, p.topk_weights, path, cfg, poison=True)
    assert torch.equal(got, want)


@pytest.mark.gpu
def test_direct_layer_replays_new_inputs_in_a_cuda_graph(direct_on):
    """Captured once at T = 1, replayed on new ids, weights and hidden: the pre-wait reads of stage 2 see the new
    ids (the counters are zeroed by stage 1 on every replay)."""
    from mxmoe.reference import moe_reference_from_weights

    p = make_problem(MODELS["kimi-k2-tp8"], Path.A8W4, 1, seed=1, device="cuda")
    hidden, ids, w = p.hidden.clone(), p.topk_ids.clone(), p.topk_weights.clone()
    fn = lambda: moe(hidden, p.weights, ids, w, Path.A8W4, validate=False)  # noqa: E731
    fn()
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        out = fn()
    for seed in (2, 3):
        new_ids, new_w = make_routing(p.shape, 1, "uniform", seed=seed, device="cuda")
        hidden.normal_(generator=torch.Generator(device="cuda").manual_seed(seed))
        ids.copy_(new_ids)
        w.copy_(new_w)
        g.replay()
        ref = moe_reference_from_weights(hidden, p.weights, ids, w, Path.A8W4)
        assert_close(out.float(), ref, path=Path.A8W4, stage="layer", name=f"replay seed {seed}")



_SM90_TASK = """
import json, sys, torch
from mxmoe.heuristic import default_config
from mxmoe.kernels import decode
from mxmoe.kernels.common import KernelInput
from mxmoe.shapes import MODELS, MoEShape, Path
from mxmoe.tuning.sweep.compile_check.cpu import _cpu_weights
from mxmoe.tuning.sweep.compile_check.sm90 import compile_sm90, resource_usage

class Recorder:
    def __init__(self):
        self.calls = []
    def __getitem__(self, grid):
        return lambda *args, **meta: self.calls.append((args, meta))

path, shape = Path(sys.argv[1]), MODELS["deepseek-v3-tp8"]
cfg = default_config(shape, path, 1)
ids = torch.arange(shape.topk, dtype=torch.int32)[None]
weights = _cpu_weights(shape)
plan = decode.direct_plan(ids, shape.experts, 64)
x = KernelInput(torch.zeros(1, shape.hidden, dtype=torch.bfloat16), None, path)
kernels = (decode._direct1_kernel, decode._direct2_kernel)
recs = decode._direct1_kernel, decode._direct2_kernel = Recorder(), Recorder()
part = decode.direct_stage1(x, weights, plan, cfg.stage1)
decode.direct_stage2(part, weights, plan, torch.ones(1, shape.topk), cfg.stage2, path, 1)
out = []
for kernel, rec in zip(kernels, recs):
    args, meta = rec.calls[0]
    out.append(dict(resource_usage(compile_sm90(kernel, args, meta).asm["cubin"]), interp=meta["INTERP"]))
print(json.dumps(out))
"""


@pytest.mark.parametrize("path", [Path.A16W4, Path.A4W4], ids=lambda p: p.value)
def test_direct_kernels_compile_for_sm90_without_spills(path):
    """The tuning harness's compile check compiles the sorted stage kernels per stage; the direct ones are checked
    here: the heuristic's deepseek-v3-tp8 T=1 launch, recorded from the real wrappers, compiles for sm_90 on the
    CPU (a fresh interpreter without TRITON_INTERPRET, as a GPU would get it) with no register spills (a4w4 carries
    the most: its h rounding in registers)."""
    from fresh_interpreter import last_json, run_without_interpreter

    for usage in last_json(run_without_interpreter("-c", _SM90_TASK, path.value)):
        assert not usage["interp"] and usage["stack"] == 0 and usage["local"] == 0, usage
