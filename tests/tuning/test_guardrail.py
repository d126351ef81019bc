"""The e2e guardrail on tiny GPT-OSS / DeepSeek-V3 graphs (2 layers, 4 experts, Triton interpreter).

Oracle: the same transformers graph with its experts on mxmoe.reference at the candidate's path, and the plain
transformers model for fidelity. Limits: spec.E2E_LOGITS_DIFF_MAX (0.01) on logits_diff, guardrail.FIDELITY.
Invariants first (the metric's definition), then passing runs, then every failure class, then the ledger.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

pytest.importorskip("transformers", reason="transformers 5.x is the optional 'guardrail' extra")

import typer  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

import mxmoe.integrations.transformers as integ  # noqa: E402
import mxmoe.tuning.guardrail.model as gm  # noqa: E402
from mxmoe.cli.commands.guardrail import register  # noqa: E402
from mxmoe.config import Mma, MoEConfig, TileConfig  # noqa: E402
from mxmoe.dispatch import choose_config  # noqa: E402
from mxmoe.shapes import MODELS, Path  # noqa: E402
from mxmoe.spec import E2E_LOGITS_DIFF_MAX  # noqa: E402
from mxmoe.tuning.guardrail import run as g  # noqa: E402
from mxmoe.tuning.ledger.records import Attempt, Status  # noqa: E402
from mxmoe.tuning.ledger.store import Ledger  # noqa: E402
from mxmoe.tuning.timing.value import Timing  # noqa: E402

CFG = MoEConfig(TileConfig(block_m=16, block_n=32, block_k=64, mma=Mma.UPCAST),
                TileConfig(block_m=16, block_n=64, block_k=64, mma=Mma.UPCAST))
OTHER = MoEConfig(CFG.stage1.replace(block_k=128), CFG.stage2)
H100 = "NVIDIA H100 80GB HBM3"


# ---- the metric ------------------------------------------------------------------------------------------------


def test_logits_diff_is_shift_invariant_and_exact():
    ref = torch.randn(2, 3, 11, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert g.logits_diff(ref, ref + 5.0) < 1e-14  # a constant logit shift per position changes nothing
    bumped = ref.clone()
    bumped[1, 2, 4] += 0.5
    want = (ref.log_softmax(-1) - bumped.log_softmax(-1)).abs().max().item()
    assert g.logits_diff(ref, bumped) == pytest.approx(want, rel=1e-12)
    assert g.logits_diff(ref, torch.full_like(ref, math.nan)) == math.inf


def test_agreement_counts_near_ties_apart():
    ref = torch.tensor([[3.0, 1.0, 0.0], [2.0, 1.995, 0.0], [0.0, 1.0, 4.0]])
    act = torch.tensor([[3.0, 1.0, 0.0], [1.995, 2.0, 0.0], [0.0, 1.0, 4.0]])  # the tie flips
    agree, decisive, ties = g.agreement(ref, act)
    assert (agree, decisive, ties) == (pytest.approx(2 / 3), 1.0, 1)
    act[0] = torch.tensor([0.0, 1.0, 3.0])
    assert g.agreement(ref, act)[1] == 0.5


# ---- passing runs ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["gpt-oss", "deepseek-v3"])
@pytest.mark.parametrize("path", list(Path), ids=lambda p: p.value)
def test_correct_kernels_pass_on_both_families_and_paths(family, path):
    r = g.run_guardrail(family, path, device="cpu")
    assert r.outcome is g.Outcome.PASSED, r.detail
    assert r.logits_diff <= E2E_LOGITS_DIFF_MAX and r.decisive_agreement == 1.0
    assert r.model == g.SMALL_SHAPES[family] and r.interpreter
    assert r.config_keys == (choose_config(MODELS[r.model], path, g.BATCH * g.SEQ).key(),)
    assert [e.layer for e in r.layers] == [0, 1]  # per-layer errors localise a failure
    assert all(e.rms_rel <= 1e-2 and e.moe_rms_rel <= 1e-2 for e in r.layers)
    assert r.fidelity <= g.FIDELITY.rms_rel
    # the accuracy cost of the path vs the plain fp32 model grows as activations narrow
    assert r.logits_diff_vs_plain >= r.logits_diff
    # the interpreter reproduces the oracle: no routing flips to replay away, free and replayed runs agree
    assert r.routing_flips == (0, 0) and r.logits_diff_free == r.logits_diff
    assert r.model_config["num_local_experts"] == 4 and r.model_config["num_hidden_layers"] == 2


def test_forced_config_is_the_one_recorded():
    r = g.run_guardrail("gpt-oss", "a16w4", config=CFG, layers=1)
    assert r.passed and r.config_keys == (CFG.key(),)


@pytest.mark.parametrize("family", ["gpt-oss", "deepseek-v3"])
def test_e4m3_forced_runs_both_stages_on_e4m3_and_passes(family):
    """Issue 23's guardrail with the e4m3 path forced: both stages of a8w4 on e4m3 wgmma (the patched weights
    built with their e4m3 layout), judged against the a8w4 oracle under the same limits as every path."""
    r = g.run_guardrail(family, "a8w4", device="cpu", e4m3=True)
    assert r.outcome is g.Outcome.PASSED, r.detail
    shape = MODELS[r.model]
    forced = g.e4m3_forced(shape, choose_config(shape, Path.A8W4, g.BATCH * g.SEQ))
    assert forced.stage1.mma is forced.stage2.mma is Mma.WGMMA_E4M3
    assert r.config_keys == (forced.key(),)  # what every layer launched (a missing e4m3 layout would have raised)
    assert all(e.rms_rel <= 1e-2 and e.moe_rms_rel <= 1e-2 for e in r.layers)


def test_e4m3_forcing_is_a8w4_only():
    with pytest.raises(ValueError, match="a8w4 only"):
        g.run_guardrail("gpt-oss", "a16w4", device="cpu", e4m3=True)


def test_e4m3_forcing_one_stage_leaves_the_other_on_bf16_carriers():
    """e4m3_stages (CLI --e4m3-stage) tells the stages' errors apart: stage 1 alone, stage 2 alone, then the run of
    stage 2 alone launches exactly that config."""
    shape = MODELS["tiny"]
    base = choose_config(shape, Path.A8W4, g.BATCH * g.SEQ)
    one, two = g.e4m3_forced(shape, base, (1,)), g.e4m3_forced(shape, base, (2,))
    assert one.stage1.mma is Mma.WGMMA_E4M3 and one.stage2 == base.stage2
    assert two.stage2.mma is Mma.WGMMA_E4M3 and two.stage1 == base.stage1
    r = g.run_guardrail("deepseek-v3", "a8w4", device="cpu", e4m3=True, e4m3_stages=(2,))
    assert r.outcome is g.Outcome.PASSED and r.config_keys == (two.key(),), r.detail
    with pytest.raises(ValueError, match="e4m3_stages"):
        g.run_guardrail("deepseek-v3", "a8w4", device="cpu", e4m3=True, e4m3_stages=(3,))


def test_config_dir_forces_the_tables_entry_for_the_shape(tmp_path):
    from mxmoe import dispatch

    triton_version, kernel_hash = dispatch.running_versions()
    meta = {"schema": dispatch.TABLE_SCHEMA_VERSION, "triton_version": triton_version,
            "kernel_source_hash": kernel_hash}
    name = dispatch.table_filename(MODELS["tiny"], "a16w4", dispatch.INTERPRETER_DEVICE)
    (tmp_path / name).write_text(json.dumps({dispatch.METADATA_KEY: meta, "1": CFG.to_dict(),
                                             "64": OTHER.to_dict()}))
    r = g.run_guardrail("deepseek-v3", "a16w4", config=tmp_path, layers=1)
    assert r.passed and r.config_keys == (OTHER.key(),)  # T = 32 takes the next grid point up


# ---- failures -------------------------------------------------------------------------------------------------


def _broken_moe(monkeypatch, breakage):
    real = integ.moe
    monkeypatch.setattr(integ, "moe", lambda x, w, ids, tw, *a, **k: real(x, *breakage(w, ids, tw), *a, **k))


def _swap_gate_up(w):
    i = w.inter
    perm = torch.cat([torch.arange(i, 2 * i), torch.arange(i)])
    mx = w.w13
    w13 = type(mx)(mx.data[:, perm], mx.scales[:, perm], mx.fmt, mx.axis, mx.shape)
    b13 = None if w.b13 is None else w.b13[:, perm]
    return type(w)(w13, w.w2, b13, w.b2, w.activation)


@pytest.mark.parametrize(("family", "breakage"), [
    ("deepseek-v3", lambda w, ids, tw: (w, ids, tw.flip(-1))),  # routing weights reversed per token
    ("gpt-oss", lambda w, ids, tw: (_swap_gate_up(w), ids, tw)),  # gate and up swapped in the kernel's weights
], ids=["reversed-routing-weights", "swapped-gate-up"])
def test_broken_kernel_fails_with_correctness(monkeypatch, family, breakage):
    _broken_moe(monkeypatch, breakage)
    r = g.run_guardrail(family, "a16w4", layers=1)
    assert r.outcome is g.Outcome.CORRECTNESS and not r.passed
    assert r.logits_diff > E2E_LOGITS_DIFF_MAX and "logits_diff" in r.detail
    assert r.layers[0].moe_rms_rel > 0.1  # the per-layer errors point at the broken block


def test_broken_weight_mapping_is_caught_by_fidelity(monkeypatch):
    """Kernels and oracle share the mapping, so only the plain model can catch a wrong one."""
    real = integ._float_weights
    monkeypatch.setattr(integ, "_float_weights", lambda m, f: (real(m, f)[0].flip(1), *real(m, f)[1:]))
    r = g.run_guardrail("gpt-oss", "a8w4", layers=1)
    assert r.outcome is g.Outcome.REFERENCE_INVALID and "does not reproduce the model" in r.detail
    assert r.fidelity > g.FIDELITY.rms_rel and r.logits_diff is None


def test_config_other_than_the_candidates_is_a_runtime_failure(monkeypatch):
    real = integ.patch_model
    monkeypatch.setattr(integ, "patch_model", lambda model, path, config: real(model, path, OTHER))
    r = g.run_guardrail("deepseek-v3", "a16w4", config=CFG, layers=1)
    assert r.outcome is g.Outcome.RUNTIME and "did not run the candidate's tiles" in r.detail
    assert r.config_keys == (CFG.key(), OTHER.key())


def test_kernel_error_is_runtime_and_oom_is_out_of_memory(monkeypatch):
    gpu_only = MoEConfig(CFG.stage1.replace(mma=Mma.DOT_SCALED), CFG.stage2)
    r = g.run_guardrail("deepseek-v3", "a16w4", config=gpu_only, layers=1)
    assert r.outcome is g.Outcome.RUNTIME and "dot_scaled" in r.detail and r.config_keys == (gpu_only.key(),)

    def oom(*_a, **_k):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(integ, "patch_model", oom)
    r = g.run_guardrail("deepseek-v3", "a16w4", layers=1)
    assert r.outcome is g.Outcome.OUT_OF_MEMORY and "patch_model" in r.detail


def test_nan_reference_is_reference_invalid(monkeypatch):
    real = gm._init_weights

    def poisoned(model, *a):
        real(model, *a)
        model.lm_head.weight.data[3, 0] = math.nan

    monkeypatch.setattr(gm, "_init_weights", poisoned)
    r = g.run_guardrail("gpt-oss", "a16w4", layers=1)
    assert r.outcome is g.Outcome.REFERENCE_INVALID and "non-finite logits" in r.detail


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="supports"):
        g.run_guardrail("llama", "a16w4")
    with pytest.raises(ValueError, match="computes silu"):
        g.run_guardrail("gpt-oss", "a16w4", shape="tiny")
    with pytest.raises(ValueError, match="tuned-table directory"):
        g.run_guardrail("gpt-oss", "a16w4", config="/no/such/dir")


# ---- the ledger and the campaign ------------------------------------------------------------------------------


def layer_row(campaign, model, tokens, median, cfg, claimable=True):
    shape = MODELS[model]
    return Attempt.make(
        campaign=campaign, status=Status.MEASURED, model=model, shape=shape.to_dict(), path="a16w4", stage="layer",
        tokens=tokens, config=cfg.to_dict(), config_key=cfg.key(), kernel_hash="kh", device=H100,
        timing=Timing(median_us=median, p95_us=median, ci_lo_us=median * 0.99, ci_hi_us=median * 1.01,
                      samples_us=(median,)),
        claimable=claimable, nonclaimable_reasons=() if claimable else ("dirty",),
        created_at="2025-01-01T00:00:00+00:00")


def test_report_lands_in_the_ledger(tmp_path):
    r = g.run_guardrail("gpt-oss", "a16w4", config=CFG, layers=1)
    with Ledger.open(tmp_path / "l.sqlite") as led:
        led.add_campaign("cand")
        res = g.record(led, "cand", r)
        (stored,) = led.guardrails("cand")
    assert stored == res and stored.passed and stored.model == "tiny-oai" and stored.config_keys == (CFG.key(),)
    assert stored.provenance["layers"][0]["layer"] == 0 and stored.provenance["outcome"] == "passed"


@pytest.fixture
def campaign_ledger(tmp_path):
    """tiny-oai: CFG wins T=1, OTHER wins T=16 (a faster non-claimable row there is ignored); a DeepSeek row."""
    path = tmp_path / "c.sqlite"
    with Ledger.open(path) as led:
        led.add_campaign("cand")
        for row in (layer_row("cand", "tiny-oai", 1, 10.0, CFG), layer_row("cand", "tiny-oai", 1, 12.0, OTHER),
                    layer_row("cand", "tiny-oai", 16, 9.0, OTHER), layer_row("cand", "tiny-oai", 16, 11.0, CFG),
                    layer_row("cand", "tiny-oai", 16, 1.0, CFG, claimable=False),
                    layer_row("cand", "tiny", 1, 5.0, CFG)):
            led.record(row)
    return path


def test_campaign_winners_follow_the_gates_choice(campaign_ledger):
    with Ledger.open(campaign_ledger) as led:
        winners = g.campaign_winners(led, "cand", "gpt-oss", "a16w4")
        assert [(w.model, w.config_key, w.tokens) for w in winners] == sorted(
            [("tiny-oai", CFG.key(), (1,)), ("tiny-oai", OTHER.key(), (16,))])
        assert [w.model for w in g.campaign_winners(led, "cand", "deepseek-v3", "a16w4")] == ["tiny"]
        assert g.campaign_winners(led, "cand", "gpt-oss", "a8w4") == []


def test_cli_guards_a_campaign_and_records_each_config(campaign_ledger):
    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)  # a second command keeps typer's subcommand layout
    run = CliRunner().invoke(app, ["guardrail", "--model", "gpt-oss", "--campaign", "cand", "--ledger",
                                   str(campaign_ledger), "--layers", "1", "--json"])
    assert run.exit_code == 0, run.output
    rows = json.loads(run.output)
    assert {tuple(r["config_keys"]) for r in rows} == {(CFG.key(),), (OTHER.key(),)}
    with Ledger.open(campaign_ledger) as led:
        stored = led.guardrails("cand")
    assert {(s.model, s.config_keys, s.passed) for s in stored} == {("tiny-oai", (CFG.key(),), True),
                                                                    ("tiny-oai", (OTHER.key(),), True)}
    bad = CliRunner().invoke(app, ["guardrail", "--model", "gpt-oss", "--campaign", "cand", "--config-dir", "."])
    assert bad.exit_code == 2 and "exclude each other" in bad.output
    empty = CliRunner().invoke(app, ["guardrail", "--model", "gpt-oss", "--path", "a4w4", "--campaign", "cand",
                                     "--ledger", str(campaign_ledger)])
    assert empty.exit_code == 1 and "no claimable measured layer row" in empty.output


def test_winners_that_are_the_baselines_own_config_are_not_guarded(campaign_ledger):
    """CFG won T=1 where the baseline ran CFG too (a tie, no win): only OTHER, which won T=16 over it, is guarded."""
    with Ledger.open(campaign_ledger) as led:
        led.add_campaign("base")
        for t in (1, 16):
            led.record(layer_row("base", "tiny-oai", t, 11.0, CFG))
        done = g.guard_campaign(led, "cand", "gpt-oss", "a16w4", baseline="base", layers=1)
        assert [w.config_key for w, _ in done] == [OTHER.key()]
        assert [s.config_keys for s in led.guardrails("cand")] == [(OTHER.key(),)]
    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)
    run = CliRunner().invoke(app, ["guardrail", "--model", "gpt-oss", "--campaign", "cand", "--baseline", "nope",
                                   "--ledger", str(campaign_ledger)])
    assert run.exit_code == 2 and "'nope' is not in" in run.output


def test_cli_exits_non_zero_on_failure(monkeypatch):
    _broken_moe(monkeypatch, lambda w, ids, tw: (w, ids, tw.flip(-1)))
    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)
    run = CliRunner().invoke(app, ["guardrail", "--model", "deepseek-v3", "--layers", "1"])
    assert run.exit_code == 1 and "correctness" in run.output


def test_cli_e4m3_needs_a8w4_and_no_campaign():
    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)
    for args in (["--e4m3"], ["--e4m3", "--path", "a8w4", "--campaign", "c"], ["--path", "a8w4", "--e4m3-stage", "1"],
                 ["--path", "a8w4", "--e4m3", "--e4m3-stage", "3"]):
        run = CliRunner().invoke(app, ["guardrail", "--model", "gpt-oss", *args])
        assert run.exit_code == 2 and "--e4m3" in run.output, run.output
