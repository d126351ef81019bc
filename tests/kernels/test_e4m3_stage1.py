"""a8w4 on e4m3 wgmma (Mma.WGMMA_E4M3, issue 23) on the interpreter: stage 1, stage 2, and the quantizer.

Oracles: `fp8_rebase.rebase_mxfp8(mx.quantize_mxfp8(x))` for the quantizer (bit for bit: QUANT_TOL 0, the same
rounding rule, docs/fp8.md section 2), and the fp32 reference for the layer at a8w4's layer tolerance
(tolerance.py). With quantizer-made weights and inputs every rebased value is exact, so the e4m3 layer must also
equal the bf16-carrier layer bit for bit here (products are exact in f32 and the sums differ only by powers of two).
Stage 2's input h is rebased per pair, which rounds elements that fall under e4m3's 2**-9 step (docs/fp8.md
section 2): that layer is held to the tolerance only.
"""

from __future__ import annotations

import pytest
import torch

from mxmoe import fp8_rebase as fr
from mxmoe import mx
from mxmoe.config import Mma, MoEConfig, TileConfig
from mxmoe.kernels.quant import quantize_token_e4m3
from mxmoe.legality import H100, Reason, check
from mxmoe.moe import moe
from mxmoe.problem import make_problem
from mxmoe.shapes import MODELS, Activation, MoEShape, Path
from mxmoe.tolerance import assert_close

QUANT_TOL = 0  # bytes and scales equal: see the module docstring


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
@pytest.mark.parametrize("spread", [0, 8, 40], ids=lambda s: f"spread{s}")
def test_token_quantizer_is_the_rebase_twin(spread, device):
    """Rows whose group scales span `spread` binades (rebased groups far below the top round to e4m3 subnormals
    or zero), a zero row, a row of zero groups, and non-finite elements (e4m3 NaN, sign kept)."""
    g = torch.Generator().manual_seed(spread)
    x = torch.randn(21, 320, generator=g)
    x *= torch.pow(2.0, torch.randint(-spread, 1, (21, 10), generator=g).float()).repeat_interleave(32, dim=1)
    x[3] = 0
    x[4, :96] = 0
    x[5, 7] = float("inf")
    x[6, 40] = float("-nan")
    x = x.to(torch.bfloat16)
    q, s = (v.cpu() for v in quantize_token_e4m3(x.to(device)))
    fin = torch.isfinite(x.float()).all(dim=1)
    want = fr.rebase_mxfp8(mx.quantize_mxfp8(x.float()[fin]))
    assert (q[fin].int() - want.data.int()).abs().max().item() <= QUANT_TOL
    assert torch.equal(s[fin], fr.pow2(want.base - 127).float())
    assert q[5, 7].item() == 0x7F and q[6, 40].item() & 0x7F == 0x7F


@pytest.mark.parametrize("shape", [MODELS["tiny"], MODELS["tiny-oai"],
                                   MoEShape("k-tail", 4, 2, 192, 128, Activation.SWIGLU_OAI, bias=True)],
                         ids=lambda s: s.name)
@pytest.mark.parametrize("tokens,split_k,block_m", [(1, 1, 16), (3, 2, 16), (17, 1, 32)])
def test_e4m3_stage1_matches_reference_and_bf16_carriers(shape, tokens, split_k, block_m):
    p = make_problem(shape, Path.A8W4, tokens, seed=tokens)
    w = p.weights.with_e4m3()
    s1 = TileConfig(block_m=block_m, block_n=64, block_k=128, mma=Mma.WGMMA_E4M3, split_k=split_k)
    s2 = TileConfig(block_m=block_m, block_n=64, block_k=64, mma=Mma.WGMMA)
    out = moe(p.hidden, w, p.topk_ids, p.topk_weights, Path.A8W4, MoEConfig(s1, s2))
    assert_close(out.float(), p.reference(), path=Path.A8W4, stage="layer", name=f"{shape.name}/T={tokens}")
    bf16 = moe(p.hidden, w, p.topk_ids, p.topk_weights, Path.A8W4, MoEConfig(s1.replace(mma=Mma.WGMMA), s2))
    assert torch.equal(out, bf16)


@pytest.mark.parametrize("split_k", [1, 2, 3, 4])
def test_e4m3_chains_take_every_k_step_once(split_k):
    """The e4m3 stages sum even and odd K steps in two chains, two steps a loop iteration: an odd step count (K 576
    = 9 x 64 in stage 1, 320 = 5 x 64 in stage 2) and splits whose second step passes their range (masked, not
    the next split's) must still take each step once; one step lost or doubled moves the sums by about 1/9 of
    their size, far past the layer tolerance. split_k 4 leaves an empty last split in both stages (k_len 0 in
    stage 1, -64 in stage 2), which takes one forced trip of masked zeros (common.k_loop_end)."""
    shape = MoEShape("k-odd", 4, 2, 576, 320, Activation.SILU)
    p = make_problem(shape, Path.A8W4, 9, seed=split_k)
    s1 = TileConfig(block_m=16, block_n=64, block_k=64, mma=Mma.WGMMA_E4M3, split_k=split_k)
    out = moe(p.hidden, p.weights.with_e4m3(), p.topk_ids, p.topk_weights, Path.A8W4, MoEConfig(s1, s1))
    assert_close(out.float(), p.reference(), path=Path.A8W4, stage="layer", name=f"split_k={split_k}")


@pytest.mark.parametrize("split_k", [2, 4])
def test_e4m3_promoted_chunks_take_every_k_step_once(split_k, monkeypatch):
    """rules.E4M3_PROMOTE_STEPS > 0: one chain per chunk of that many K steps, added into f32 totals. Chunks of 4
    that do not divide a split's steps (9 and 5 steps of 64 over 2 splits; over 4, an empty last split) must take
    each step once: the layer meets the oracle (one step lost or doubled moves the sums by about 1/9 of their size,
    far past the tolerance)."""
    promote = 4
    from mxmoe.kernels import rules

    shape = MoEShape("k-odd", 4, 2, 576, 320, Activation.SILU)
    p = make_problem(shape, Path.A8W4, 9, seed=split_k)
    s1 = TileConfig(block_m=16, block_n=64, block_k=64, mma=Mma.WGMMA_E4M3, split_k=split_k)
    monkeypatch.setattr(rules, "E4M3_PROMOTE_STEPS", promote)
    out = moe(p.hidden, p.weights.with_e4m3(), p.topk_ids, p.topk_weights, Path.A8W4, MoEConfig(s1, s1)).float()
    assert_close(out, p.reference(), path=Path.A8W4, stage="layer", name=f"promote={promote}/split_k={split_k}")


def test_e4m3_needs_its_weights_path_and_stage():
    p = make_problem(MODELS["tiny"], Path.A8W4, 3, seed=1)
    s1 = TileConfig(block_m=16, block_n=64, block_k=64, mma=Mma.WGMMA_E4M3)
    s2 = TileConfig(block_m=16, block_n=64, block_k=64, mma=Mma.WGMMA)
    with pytest.raises(ValueError, match="e4m3=True"):
        moe(p.hidden, p.weights, p.topk_ids, p.topk_weights, Path.A8W4, MoEConfig(s1, s2))
    assert check(p.shape, Path.A16W4, 1, s1, H100).reason is Reason.PATH_UNSUPPORTED
    assert check(p.shape, Path.A4W4, 2, s1, H100).reason is Reason.PATH_UNSUPPORTED
    assert check(p.shape, Path.A8W4, 1, s1, H100).legal and check(p.shape, Path.A8W4, 2, s1, H100).legal


@pytest.mark.parametrize("stage", [1, 2])
def test_a8w4_space_takes_every_tile_on_e4m3_too(stage):
    from mxmoe.space import candidate_space

    bf16 = candidate_space(stage, Path.A16W4)
    a8 = candidate_space(stage, Path.A8W4)
    assert len(a8) == 2 * len(bf16) and sum(c.mma.e4m3 for c in a8) == len(bf16)
    assert not any(c.mma.e4m3 for c in candidate_space(stage, Path.A4W4))


@pytest.mark.parametrize("shape", [MODELS["tiny"], MODELS["tiny-oai"]], ids=lambda s: s.name)
@pytest.mark.parametrize("tokens,block_m,both", [(1, 16, True), (17, 32, False), (40, 64, True)])
def test_e4m3_stage2_matches_reference(shape, tokens, block_m, both):
    """Stage 2 on e4m3 (h rebased per pair), with stage 1 on e4m3 too or on bf16 carriers; BLOCK_M 64 takes
    stage 1's deferred rounding before the rebase."""
    p = make_problem(shape, Path.A8W4, tokens, seed=tokens + 1)
    s1 = TileConfig(block_m=block_m, block_n=64, block_k=64, mma=Mma.WGMMA_E4M3 if both else Mma.WGMMA)
    s2 = s1.replace(mma=Mma.WGMMA_E4M3)
    out = moe(p.hidden, p.weights.with_e4m3(), p.topk_ids, p.topk_weights, Path.A8W4, MoEConfig(s1, s2))
    assert_close(out.float(), p.reference(), path=Path.A8W4, stage="layer", name=f"{shape.name}/T={tokens}")


def test_dispatched_e4m3_tile_runs_on_bf16_carriers_without_the_e4m3_layout(monkeypatch):
    """A tuned table may name an e4m3 stage 1; weights built without the e4m3 layout run the same tile on bf16
    carriers, with a warning, instead of failing the call."""
    import sys

    moe_mod = sys.modules["mxmoe.moe"]  # the module (the package exports the function under the same name)
    p = make_problem(MODELS["tiny"], Path.A8W4, 5, seed=2)
    s1 = TileConfig(block_m=16, block_n=64, block_k=64, mma=Mma.WGMMA_E4M3)
    cfg = MoEConfig(s1, s1.replace(mma=Mma.WGMMA))
    monkeypatch.setattr(moe_mod, "choose_config", lambda *a, **kw: cfg)
    with pytest.warns(UserWarning, match="no e4m3 layout"):
        out = moe(p.hidden, p.weights, p.topk_ids, p.topk_weights, Path.A8W4)
    assert_close(out.float(), p.reference(), path=Path.A8W4, stage="layer")
    assert torch.equal(out, moe(p.hidden, p.weights.with_e4m3(), p.topk_ids, p.topk_weights, Path.A8W4))


@pytest.mark.parametrize("model,bn,warps,compiled",
                         [("deepseek-v3", 128, 8, 180224), ("deepseek-v3-tp8", 64, 4, 139264)])
def test_e4m3_shared_memory_model_is_the_compile(model, bn, warps, compiled):
    """Stage 1 M128 K128 s3 on e4m3: Triton 3.6's sm_90 compile (metadata.shared, CPU, 2026-12-06) took `compiled`
    bytes: one byte per staged activation value where the bf16 carriers take two (139264 / 118784), for the two K
    steps a loop iteration takes (the two accumulator chains; one step a iteration compiled to 90112 / 69632)."""
    from mxmoe.resources import smem_breakdown

    cfg = TileConfig(block_m=128, block_n=bn, block_k=128, num_warps=warps, num_stages=3, group_m=8,
                     mma=Mma.WGMMA_E4M3)
    assert smem_breakdown(MODELS[model], Path.A8W4, 1, cfg)["total"] == compiled


def test_e4m3_decode_takes_the_sorted_layer():
    """The direct decode layer has no e4m3 variant: a config with either stage on e4m3 runs the sorted layer."""
    from mxmoe.kernels.rules import runs_direct

    s = TileConfig(block_m=16, block_n=64, block_k=64, mma=Mma.WGMMA, combine="slots")
    assert runs_direct(MoEConfig(s, s), 1, 8, 256)
    for cfg in (MoEConfig(s.replace(mma=Mma.WGMMA_E4M3), s), MoEConfig(s, s.replace(mma=Mma.WGMMA_E4M3))):
        assert not runs_direct(cfg, 1, 8, 256)
    p = make_problem(MODELS["tiny"], Path.A8W4, 2, seed=4)
    out = moe(p.hidden, p.weights.with_e4m3(), p.topk_ids, p.topk_weights, Path.A8W4,
              MoEConfig(s.replace(combine="atomic"), s.replace(mma=Mma.WGMMA_E4M3)))
    assert_close(out.float(), p.reference(), path=Path.A8W4, stage="layer")


_ASYNC_TASK = r"""
import json, re, sys
from mxmoe.config import TileConfig
from mxmoe.shapes import Activation, MoEShape, Path
from mxmoe.tuning.sweep.compile_check.cpu import _prepare
from mxmoe.tuning.sweep.compile_check.sm90 import compile_sm90, resource_usage, sass as listing

stage, cfg = int(sys.argv[1]), TileConfig.from_json(sys.argv[2])
kernel, args, meta, ok = _prepare(MoEShape("e4m3-async", 8, 2, 1024, 256, Activation.SILU), Path.A8W4, stage, cfg,
                                  {}, [])
c = compile_sm90(kernel, args, meta)
sass = listing(c.asm["cubin"])
waits = re.findall(r"WARPGROUP\.DEPBAR\.LE gsb0, (0x[0-9a-f]+)", sass)
print(json.dumps(dict(resource_usage(c.asm["cubin"]), ok=ok, qgmma=sass.count("QGMMA"), waits=waits)))
"""


@pytest.mark.parametrize("stage", [1, 2])
def test_e4m3_stages_keep_wgmma_asynchronous(stage):
    """The sm_90 code of a prefill e4m3 stage (CPU compile in a fresh interpreter without TRITON_INTERPRET): its
    wgmmas wait for completion once, after the loop (SASS `WARPGROUP.DEPBAR.LE gsb0, 0x0`), and otherwise leave
    groups in flight. Both regressions it guards made every wgmma wait (docs/fp8.md section 6): an activation
    tile loaded as uint8 and bitcast (copied into a single shared buffer each step: four waits, none in flight)
    and a per-step f32 promotion."""
    from fresh_interpreter import last_json, run_without_interpreter

    cfg = TileConfig(block_m=64, block_n=128, block_k=128, num_warps=8, num_stages=3, group_m=8,
                     mma=Mma.WGMMA_E4M3)
    got = last_json(run_without_interpreter("-c", _ASYNC_TASK, str(stage), cfg.to_json()))
    assert got["ok"] and got["qgmma"] > 0 and got["stack"] == 0, got
    assert got["waits"].count("0x0") == 1 and any(w != "0x0" for w in got["waits"]), got

