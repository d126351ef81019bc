"""The gate: one `claimable_win` over full coverage. Oracle: spec.is_win / is_regression (the locked
spec) applied to hand-built ledgers; each negative case names the reason it must produce."""

from __future__ import annotations

import json

import pytest

from mxmoe.config import MoEConfig, TileConfig
from mxmoe.shapes import MODELS
from mxmoe.spec import Profile
from mxmoe.tuning.judge.gate import Outcome, claimable_win, claimable_wins, compare, pareto_fronts
from mxmoe.tuning.ledger.records import Attempt, GuardrailResult, Status
from mxmoe.tuning.ledger.store import Ledger
from mxmoe.tuning.timing.value import Timing

BASE_CFG = MoEConfig(TileConfig(), TileConfig())
FAST_CFG = MoEConfig(TileConfig(block_n=128), TileConfig(block_n=128))
OTHER_CFG = MoEConfig(TileConfig(block_m=32), TileConfig(block_m=32))
H100 = "NVIDIA H100 80GB HBM3"
GRID = (1, 16, 4096)
BASE_US = {1: 20.0, 16: 30.0, 4096: 400.0}


def row(campaign: str, tokens: int, median: float | None, cfg: MoEConfig = BASE_CFG, spread: float = 0.005,
        model: str = "tiny", **kw) -> Attempt:
    """A claimable measured a16w4 layer row of `model` with a CI of +-spread around the median (median None: a
    row without timings, not claimable). Any field can be overridden through kw."""
    measured = median is not None
    fields = dict(
        campaign=campaign,
        status=Status.MEASURED,
        model=model,
        shape=MODELS[model].to_dict(),
        path="a16w4",
        stage="layer",
        tokens=tokens,
        config=cfg.to_dict(),
        config_key=cfg.key(),
        kernel_hash="kh1",
        device=H100,
        timing=Timing(median_us=median, ci_lo_us=median * (1 - spread), ci_hi_us=median * (1 + spread),
                      p95_us=median * 1.05, samples_us=(median,)) if measured else None,
        claimable=measured,
        argv=("mxmoe", "sweep"),
        provenance={"git_commit": "abc123", "mode": "eager", "l2": "flush"},
        created_at="2025-01-01T00:00:00+00:00",
    )
    fields.update(kw)
    return Attempt.make(**fields)


def guardrail(campaign: str = "cand", cfg: MoEConfig = FAST_CFG, diff: float = 0.002) -> GuardrailResult:
    return GuardrailResult(
        campaign=campaign,
        model="tiny",
        path="a16w4",
        config_keys=(cfg.key(),),
        logits_diff=diff,
        agreement=0.999,
        passed=diff <= 0.01,
    )


@pytest.fixture
def ledger(tmp_path):
    """A baseline campaign measured at every grid point, and an empty candidate campaign."""
    with Ledger.open(tmp_path / "g.sqlite") as led:
        led.add_campaign("base")
        led.add_campaign("cand", baseline="base")
        for t in GRID:
            led.record(row("base", t, BASE_US[t]))
        yield led


def record_candidate(led: Ledger, speedups: dict[int, float], cfg: MoEConfig = FAST_CFG, **kw) -> None:
    for t in GRID:
        if t in speedups:
            led.record(row("cand", t, BASE_US[t] / speedups[t], cfg, **kw))


def test_clean_win_with_guardrail_is_claimable(ledger):
    record_candidate(ledger, {1: 1.0, 16: 1.25, 4096: 1.0})
    ledger.record_guardrail(guardrail())
    verdict = claimable_win(ledger, "cand", "base")
    assert verdict.reasons == () and verdict.claimable
    [win] = verdict.comparison.wins
    assert (win.tokens, win.cand_config_key, win.outcome) == (16, FAST_CFG.key(), Outcome.WIN)
    assert win.speedup == pytest.approx(1.25)
    lo, hi = win.speedup_ci
    assert lo == pytest.approx(30.0 * 0.995 / (24.0 * 1.005)) and hi == pytest.approx(30.0 * 1.005 / (24.0 * 0.995))


def test_win_without_guardrail_is_not_claimable(ledger):
    record_candidate(ledger, {1: 1.0, 16: 1.25, 4096: 1.0})
    ledger.record_guardrail(guardrail(cfg=OTHER_CFG))  # a guardrail of another config proves nothing
    verdict = claimable_win(ledger, "cand", "base")
    assert verdict.reasons == (f"no_guardrail:{FAST_CFG.key()}",)


def test_failing_guardrail_blocks_even_beside_a_passing_one(ledger):
    record_candidate(ledger, {1: 1.0, 16: 1.25, 4096: 1.0})
    ledger.record_guardrail(guardrail())
    ledger.record_guardrail(guardrail(diff=0.05))
    assert claimable_win(ledger, "cand", "base").reasons == (f"guardrail_failed:{FAST_CFG.key()}",)


def test_incomplete_coverage_blocks(ledger):
    record_candidate(ledger, {1: 1.0, 16: 1.25})
    ledger.record_guardrail(guardrail())
    verdict = claimable_win(ledger, "cand", "base")
    assert verdict.reasons == ("missing:tiny/a16w4/T=4096",)
    assert not verdict.claimable


def test_nonmeasured_candidate_row_counts_as_missing(ledger):
    record_candidate(ledger, {1: 1.0, 16: 1.25})
    ledger.record(
        row("cand", 4096, 1.0, status=Status.TIMEOUT, claimable=False, timing=None)
    )
    ledger.record_guardrail(guardrail())
    assert claimable_win(ledger, "cand", "base").reasons == ("missing:tiny/a16w4/T=4096",)


def test_one_regression_blocks(ledger):
    record_candidate(ledger, {1: 1.0, 16: 1.25, 4096: 0.95})
    ledger.record_guardrail(guardrail())
    verdict = claimable_win(ledger, "cand", "base")
    assert len(verdict.reasons) == 1 and verdict.reasons[0].startswith("regression:tiny/a16w4/T=4096:0.95")


def test_a_a_is_never_claimable(ledger):
    """The same config with the same samples on both sides: nothing may win."""
    for t in GRID:
        ledger.record(row("cand", t, BASE_US[t]))
    ledger.record_guardrail(guardrail(cfg=BASE_CFG))
    for profile in Profile:
        verdict = claimable_win(ledger, "cand", "base", profile)
        assert verdict.reasons == ("no_win",)
        assert {p.outcome for p in verdict.comparison.points} == {Outcome.NEUTRAL}


def test_a_a_within_noise_is_never_claimable(ledger):
    """A/A with medians 1% apart and overlapping CIs (noise): neither a win nor a regression."""
    for t in GRID:
        ledger.record(row("cand", t, BASE_US[t] * 0.99, spread=0.02))
    ledger.record_guardrail(guardrail(cfg=BASE_CFG))
    assert claimable_win(ledger, "cand", "base").reasons == ("no_win",)


def test_a_a_drift_beyond_the_band_is_neither_a_win_nor_a_regression(ledger):
    """The baseline's own config re-measured 10% faster at T=16 and 2% slower at T=4096 with tight CIs: two runs
    of one kernel drifting apart (power cap, temperature), not a change the tuned table makes, so neutral both
    ways (H100: 1-2% at T >= 8192 and T=128, session 5). A different config at the same medians still counts."""
    ledger.record(row("cand", 1, BASE_US[1]))
    ledger.record(row("cand", 16, BASE_US[16] / 1.10, spread=0.001))
    ledger.record(row("cand", 4096, BASE_US[4096] * 1.02, spread=0.001))
    verdict = claimable_win(ledger, "cand", "base")
    assert verdict.reasons == ("no_win",)
    assert {p.outcome for p in verdict.comparison.points} == {Outcome.NEUTRAL}
    assert verdict.comparison.points[1].speedup == pytest.approx(1.10)  # still reported
    ledger.record(row("cand", 4096, BASE_US[4096] * 1.019, OTHER_CFG, spread=0.001))  # another config, 1.9% slower
    assert claimable_win(ledger, "cand", "base").reasons[0].startswith("regression:tiny/a16w4/T=4096")


def test_nonclaimable_provenance_blocks(ledger):
    record_candidate(ledger, {1: 1.0, 4096: 1.0})
    ledger.record(
        row("cand", 16, 24.0, FAST_CFG, device="interpreter", claimable=False, nonclaimable_reasons=("interpreter",))
    )
    ledger.record_guardrail(guardrail())
    reasons = claimable_win(ledger, "cand", "base").reasons
    assert any(r.startswith("nonclaimable:") and r.endswith(":interpreter") for r in reasons)
    assert any(r.startswith("protocol:tiny/a16w4/T=16:device:interpreter!=") for r in reasons)


def test_nonclaimable_baseline_row_blocks(tmp_path):
    with Ledger.open(tmp_path / "b.sqlite") as led:
        led.add_campaign("base")
        led.add_campaign("cand")
        led.record(row("base", 16, 30.0, claimable=False, nonclaimable_reasons=("dirty_tree",)))
        led.record(row("cand", 16, 24.0, FAST_CFG))
        led.record_guardrail(guardrail())
        [reason] = claimable_win(led, "cand", "base").reasons
        assert reason.startswith("nonclaimable:") and reason.endswith(":dirty_tree")


def test_protocol_mismatch_blocks(ledger):
    record_candidate(ledger, {1: 1.0, 4096: 1.0})
    prov = {"git_commit": "abc123", "mode": "eager", "l2": "rotate"}
    ledger.record(row("cand", 16, 24.0, FAST_CFG, provenance=prov))
    ledger.record_guardrail(guardrail())
    assert claimable_win(ledger, "cand", "base").reasons == ("protocol:tiny/a16w4/T=16:l2:rotate!=flush",)


def test_seed708_profile_through_the_same_gate(ledger):
    # 5% faster at T=16 with tight CIs: a win under mxmoe (3% margin), not under seed708 (10% and 2 us)
    record_candidate(ledger, {1: 1.0, 16: 1.05, 4096: 1.0})
    ledger.record_guardrail(guardrail())
    assert claimable_win(ledger, "cand", "base", Profile.MXMOE).claimable
    assert claimable_win(ledger, "cand", "base", Profile.SEED708).reasons == ("no_win",)


def test_seed708_claimable_win(tmp_path):
    with Ledger.open(tmp_path / "s.sqlite") as led:
        led.add_campaign("base")
        led.add_campaign("cand")
        for t, b, c in ((16, 100.0, 85.0), (32768, 5000.0, 4400.0), (1024, 800.0, 810.0)):
            led.record(row("base", t, b))
            led.record(row("cand", t, c, FAST_CFG))
        led.record_guardrail(guardrail())
        verdict = claimable_win(led, "cand", "base", "seed708")
        assert verdict.claimable, verdict.reasons
        assert {p.tokens for p in verdict.comparison.wins} == {16, 32768}


def test_incorrect_winning_config_blocks(ledger):
    record_candidate(ledger, {1: 1.0, 16: 1.25, 4096: 1.0})
    bad = row(
        "cand",
        4096,
        1.0,
        FAST_CFG,
        routing="skewed",
        status=Status.INCORRECT,
        claimable=False,
        timing=None,
    )
    ledger.record(bad)
    ledger.record_guardrail(guardrail())
    assert claimable_win(ledger, "cand", "base").reasons == (f"incorrect:{FAST_CFG.key()}:{bad.key}",)


def test_conflict_in_either_campaign_blocks(ledger):
    record_candidate(ledger, {1: 1.0, 16: 1.25, 4096: 1.0})
    ledger.record_guardrail(guardrail())
    first = ledger.attempts("base", tokens=1)[0]
    ledger.record(Attempt.from_dict(first.to_dict() | {"median_us": 20.01}))
    [reason] = claimable_win(ledger, "cand", "base").reasons
    assert reason.startswith(f"scan:conflict:{first.key}")


def test_superseded_rows_are_not_used(ledger):
    record_candidate(ledger, {1: 1.0, 4096: 1.0})
    fast = row("cand", 16, 24.0, FAST_CFG)
    ledger.record(fast)
    ledger.record(row("cand", 16, 30.0, FAST_CFG, kernel_hash="kh2", supersedes=fast.key))  # re-measured
    ledger.record_guardrail(guardrail())
    verdict = claimable_win(ledger, "cand", "base")
    assert verdict.reasons == ("no_win",)


def test_best_candidate_config_per_point_and_empty_baseline(ledger):
    record_candidate(ledger, {1: 1.0, 16: 1.25, 4096: 1.0})
    record_candidate(ledger, {1: 0.9, 16: 1.5, 4096: 0.9}, cfg=OTHER_CFG)
    cmp = compare(ledger.attempts("cand"), ledger.attempts("base"))
    assert [p.cand_config_key for p in cmp.points] == [FAST_CFG.key(), OTHER_CFG.key(), FAST_CFG.key()]
    assert claimable_win(ledger, "cand", "nothing").reasons == ("no_coverage:nothing",)


def test_stage_rows_are_not_coverage(ledger):
    ledger.record(row("base", 64, 50.0, stage="1"))
    record_candidate(ledger, {1: 1.0, 16: 1.25, 4096: 1.0})
    ledger.record_guardrail(guardrail())
    assert [p.tokens for p in compare(ledger.attempts("cand"), ledger.attempts("base")).points] == list(GRID)
    assert claimable_win(ledger, "cand", "base").claimable


def test_pareto_front():
    rows = [
        row("cand", 1, 10.0, FAST_CFG),
        row("cand", 16, 20.0, FAST_CFG),
        row("cand", 1, 11.0, OTHER_CFG),
        row("cand", 16, 20.0, OTHER_CFG),  # dominated by FAST
        row("cand", 1, 12.0, BASE_CFG),
        row("cand", 16, 15.0, BASE_CFG),
    ]  # a trade-off: kept
    [front] = pareto_fronts(rows)
    assert (front.model, front.path) == ("tiny", "a16w4")
    assert set(front.config_keys) == {FAST_CFG.key(), BASE_CFG.key()}
    # a config measured at fewer points is dominated only by one measured wherever it was
    [front] = pareto_fronts(
        [row("cand", 1, 10.0, FAST_CFG), row("cand", 1, 9.0, OTHER_CFG), row("cand", 16, 20.0, OTHER_CFG)]
    )
    assert front.config_keys == (OTHER_CFG.key(),)


def test_a_claim_scoped_to_one_model_ignores_another_models_gaps(ledger):
    """One table ships per (shape, path): its claim rests on its own rows, not on an unfinished neighbour."""
    record_candidate(ledger, {1: 1.0, 16: 1.25, 4096: 1.0})
    ledger.record_guardrail(guardrail())
    ledger.record(row("base", 1, 20.0, model="tiny-oai"))  # the other model's candidate never ran
    assert claimable_win(ledger, "cand", "base").reasons == ("missing:tiny-oai/a16w4/T=1",)
    assert claimable_win(ledger, "cand", "base", model="tiny").claimable
    assert claimable_win(ledger, "cand", "base", model="tiny", path="a16w4").claimable
    scoped = claimable_win(ledger, "cand", "base", model="tiny-oai")
    assert scoped.reasons == ("missing:tiny-oai/a16w4/T=1", "no_win")
    assert claimable_win(ledger, "cand", "base", path="a8w4").reasons == ("no_coverage:base",)


def test_claimable_wins_reads_once_and_judges_each_scope_as_claimable_win(ledger, monkeypatch):
    """`claim --each`: one verdict per (model, path), identical to the scoped claimable_win, from one read."""
    record_candidate(ledger, {1: 1.0, 16: 1.25, 4096: 1.0})
    ledger.record_guardrail(guardrail())
    ledger.record(row("base", 1, 20.0, model="tiny-oai"))
    scopes = [("tiny", "a16w4"), ("tiny-oai", "a16w4"), (None, None)]
    singles = [claimable_win(ledger, "cand", "base", model=m, path=p) for m, p in scopes]
    reads = []
    real = Ledger.attempts
    monkeypatch.setattr(Ledger, "attempts", lambda self, *a, **k: reads.append(a) or real(self, *a, **k))
    together = claimable_wins(ledger, "cand", "base", scopes=scopes)
    assert [(v.claimable, v.reasons) for v in together] == [(v.claimable, v.reasons) for v in singles]
    assert [v.claimable for v in together] == [True, False, False]
    assert sorted(reads) == [("base",), ("cand",)]  # each campaign read once, the scan included
    reads.clear()
    rows = (real(ledger, "cand"), real(ledger, "base"))
    again = claimable_wins(ledger, "cand", "base", scopes=scopes, rows=rows)
    assert [(v.claimable, v.reasons) for v in again] == [(v.claimable, v.reasons) for v in singles]
    assert reads == []  # rows the caller read are not read again


def test_cli_claim_each(ledger):
    from typer.testing import CliRunner

    from mxmoe.cli import app

    record_candidate(ledger, {1: 1.0, 16: 1.25, 4096: 1.0})
    ledger.record_guardrail(guardrail())
    ledger.record(row("base", 1, 20.0, model="tiny-oai"))
    db = str(ledger.path)
    run = CliRunner().invoke
    res = run(app, ["claim", "cand", "--baseline", "base", "--ledger", db, "--each", "--json"])
    assert res.exit_code == 1, res.output
    out = json.loads(res.output)
    assert [(o["scope"], o["claimable"]) for o in out] == [("tiny:a16w4", True), ("tiny-oai:a16w4", False)]
    assert run(app, ["claim", "cand", "--baseline", "base", "--ledger", db, "--model", "tiny"]).exit_code == 0
    bad = run(app, ["claim", "cand", "--baseline", "base", "--ledger", db, "--each", "--model", "tiny"])
    assert bad.exit_code != 0 and "--each" in bad.output
