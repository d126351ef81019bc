"""The public moe() surface (issue 24): an explicit config gets the tables' legality check, a dict a clear
TypeError, `mxmoe.moe` stays the function; and the transformers patch syncs the host for ids once, not per call.

Oracle: the legality reason codes of `mxmoe.legality` and the heuristic's own (legal) configs.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import mxmoe
from mxmoe import dispatch
from mxmoe.config import MoEConfig, TileConfig
from mxmoe.heuristic import default_config
from mxmoe.moe import moe, shape_of
from mxmoe.shapes import MODELS, Activation, Path
from mxmoe.weights import MoEWeights

TINY = MODELS["tiny"]
T = 3


@pytest.fixture(scope="module")
def problem():
    torch.manual_seed(0)
    w = MoEWeights.from_float(torch.randn(TINY.experts, 2 * TINY.inter, TINY.hidden),
                              torch.randn(TINY.experts, TINY.hidden, TINY.inter))
    x = torch.randn(T, TINY.hidden, dtype=torch.bfloat16)
    tw, ids = torch.topk(torch.rand(T, TINY.experts), TINY.topk)
    return x, w, ids, tw


@pytest.fixture
def no_launch(monkeypatch):
    """Every kernel launch of moe() fails the test: a refusal must come before any launch."""
    module = sys.modules["mxmoe.layer_plan"]  # moe() launches through its layer plan

    def launched(*args, **kwargs):
        raise AssertionError("a kernel was launched")

    for name in ("quantize_input", "align", "stage1", "stage2"):
        monkeypatch.setattr(module, name, launched)


def legal() -> MoEConfig:
    return default_config(TINY, Path.A16W4, T)


@pytest.mark.parametrize(("stage", "change", "code"), [
    (1, {"block_m": 24}, "tile_too_large"),
    (2, {"num_warps": 3}, "warp_layout"),
    (1, {"num_warps": 2}, "warp_layout"),  # mma=wgmma needs a warpgroup
    (2, {"block_k": 96}, "divisibility"),
    (1, {"block_n": 8}, "mx_floor"),
])
def test_an_illegal_explicit_config_is_refused_with_its_reason_code(problem, no_launch, stage, change, code):
    x, w, ids, tw = problem
    cfg = legal()
    cfg = MoEConfig(cfg.stage1.replace(**change), cfg.stage2) if stage == 1 else MoEConfig(
        cfg.stage1, cfg.stage2.replace(**change))
    with pytest.raises(ValueError, match=rf"moe\(config=\.\.\.\): stage {stage} .*illegal: {code} "):
        moe(x, w, ids, tw, config=cfg)


def test_the_explicit_check_is_the_tables_check(problem, no_launch):
    """Same function, same verdict: dispatch.launchable refuses exactly what moe(config=...) refuses."""
    x, w, ids, tw = problem
    bad = MoEConfig(legal().stage1.replace(block_m=24), legal().stage2)
    stage, verdict = dispatch.launchable(shape_of(w, TINY.topk), Path.A16W4, bad, dispatch.device_limits("interpreter"))
    with pytest.raises(ValueError) as err:
        moe(x, w, ids, tw, config=bad)
    assert f"stage {stage}" in str(err.value) and verdict.reason.value in str(err.value)


def test_a_dict_config_is_a_type_error_that_names_the_fix(problem, no_launch):
    x, w, ids, tw = problem
    with pytest.raises(TypeError, match=r"MoEConfig\.from_dict"):
        moe(x, w, ids, tw, config=legal().to_dict())
    with pytest.raises(TypeError, match="MoEConfig or None"):
        moe(x, w, ids, tw, config="M16N64")


def test_a_legal_explicit_config_runs_and_matches_dispatch(problem):
    x, w, ids, tw = problem
    cfg = legal()
    with dispatch.override(cfg):
        chosen = moe(x, w, ids, tw)
    assert torch.equal(moe(x, w, ids, tw, config=cfg), chosen)
    assert torch.equal(moe(x, w, ids, tw, config=MoEConfig.from_dict(cfg.to_dict())), chosen)


def test_a_degenerate_but_launchable_config_is_accepted(problem):
    """DEGENERATE (legal, only wasteful) is no refusal, for explicit configs as for tables."""
    x, w, ids, tw = problem
    wide = TileConfig(block_m=128, block_n=64, block_k=64, num_warps=4, mma="wgmma")
    out = moe(x, w, ids, tw, config=MoEConfig(wide, wide))
    assert out.shape == (T, TINY.hidden) and bool(out.isfinite().all())


def test_mxmoe_moe_stays_the_function_whatever_is_imported_first():
    code = (
        "import pydoc, sys, mxmoe\n"
        "from mxmoe.moe import MoELayer\n"
        "import mxmoe.moe\n"
        "assert callable(mxmoe.moe) and mxmoe.moe is sys.modules['mxmoe.moe'].moe, mxmoe.moe\n"
        "assert mxmoe.MoELayer is MoELayer\n"
        "doc = pydoc.render_doc(mxmoe.moe)\n"
        "assert 'function moe' in doc and 'Fused MXFP4 MoE' in doc, doc[:300]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert mxmoe.moe is moe and mxmoe.moe.__doc__.startswith("Fused MXFP4 MoE")


def test_the_transformers_patch_checks_ids_once_then_only_under_debug(problem, monkeypatch):
    from mxmoe.integrations import transformers as tf

    x, w, ids, tw = problem
    block = tf.ExpertsBlock(layer=0, name="model.layers.0.mlp.experts", module_type="DeepseekV3Experts",
                            experts=TINY.experts, hidden=TINY.hidden, inter=TINY.inter, activation=Activation.SILU,
                            bias=False)
    experts = tf.MXFP4Experts(w, path=Path.A16W4, config=None, block=block)
    seen = []

    def fake_moe(*args, validate=True, **kwargs):
        seen.append(validate)
        return torch.zeros(T, TINY.hidden, dtype=torch.bfloat16)

    monkeypatch.setattr(tf, "moe", fake_moe)
    monkeypatch.delenv(tf.DEBUG_ENV, raising=False)
    for _ in range(3):
        experts(x, ids, tw)
    assert seen == [True, False, False]
    monkeypatch.setenv(tf.DEBUG_ENV, "1")
    experts(x, ids, tw)
    assert seen[-1] is True


def test_a_repeated_call_plans_once_and_sees_override_and_clear_cache(problem, monkeypatch):
    """moe() keeps its layer plan per call key (issue 22's host budget): a second config=None call asks dispatch
    nothing, an override block is honoured (and not kept), clear_cache() makes the next call plan afresh, and an
    explicit config is checked once."""
    from mxmoe import moe as _  # noqa: F401
    moe_module = sys.modules["mxmoe.moe"]
    x, w, ids, tw = problem
    plans = []
    monkeypatch.setattr(moe_module.LayerPlan, "run", lambda self, *a, **k: plans.append(self.config) or x)
    asked = []
    real_choose = moe_module.choose_config
    monkeypatch.setattr(moe_module, "choose_config", lambda *a, **k: asked.append(a) or real_choose(*a, **k))
    dispatch.clear_cache()
    moe(x, w, ids, tw)
    n = len(asked)
    moe(x, w, ids, tw)
    assert n >= 1 and len(asked) == n and plans[0] == plans[1] == legal()  # the second call asked nothing
    other = MoEConfig(legal().stage1.replace(num_stages=2), legal().stage2)
    with dispatch.override(other):
        moe(x, w, ids, tw)
    moe(x, w, ids, tw)
    assert plans[2:] == [other, legal()]  # the override block's config, then the kept plan again
    dispatch.clear_cache()
    moe(x, w, ids, tw)
    assert len(asked) > n + 1 and plans[-1] == legal()  # planned afresh after clear_cache
    checked = []
    real_check = moe_module.check_explicit
    monkeypatch.setattr(moe_module, "check_explicit", lambda *a: checked.append(a) or real_check(*a))
    moe(x, w, ids, tw, config=other)
    moe(x, w, ids, tw, config=other)
    assert len(checked) == 1 and plans[-2:] == [other, other]  # an explicit config is checked once
