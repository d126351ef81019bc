"""The report, built from a hand-made ledger on CPU. Oracles: gate.claimable_win (the verdicts the page
must show), spec.py's floor formulas, and geometric means computed by hand from the synthetic medians
(exact to the 3 decimals the headline prints)."""

from __future__ import annotations

import base64
import re

import pytest
import typer
from test_gate import BASE_CFG, BASE_US, FAST_CFG, GRID
from test_gate import row as gate_row
from typer.testing import CliRunner

from mxmoe.config import MoEConfig, TileConfig
from mxmoe.shapes import MODELS, Path
from mxmoe.spec import Profile, compute_floor_us, expected_experts_hit, flops, layer_bytes, memory_floor_us
from mxmoe.tuning.bench import NOMINAL_BANDWIDTH, NOMINAL_RATE
from mxmoe.tuning.commands import report as cli_report
from mxmoe.tuning.gate import claimable_win
from mxmoe.tuning.ledger import Ledger
from mxmoe.tuning.records import Attempt, GuardrailResult, Status
from mxmoe.tuning.report import (
    INTERPRETER_BANNER,
    SECTIONS,
    best_layer_rows,
    best_point,
    build_report,
    headline_markdown,
    row_floors,
    status_counts,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SLOW_CFG = MoEConfig(TileConfig(block_m=32), TileConfig(block_m=32))
BAD_CFG = {reason: MoEConfig(TileConfig(num_warps=w), TileConfig(num_warps=w))
           for reason, w in (("SMEM", 2), ("REGISTERS", 8), (None, 16))}  # one config per failure: distinct probes
MODELS_UNDER_TEST = ("gpt-oss-20b", "deepseek-v3")
# baseline / candidate median per point: (win, neutral, regression) and (win, neutral, win)
SPEEDUPS = {"gpt-oss-20b": {1: 1.25, 16: 1.0, 4096: 0.8}, "deepseek-v3": {1: 2.0, 16: 1.0, 4096: 2.0}}
GEOMEAN = {"gpt-oss-20b": 1.0, "deepseek-v3": 4 ** (1 / 3)}  # (1.25 * 1 * 0.8)^(1/3), (2 * 1 * 2)^(1/3)


REPORT_PROVENANCE = {"git_commit": "abc123def4567890", "git_dirty": False, "mode": "graph", "l2": "flush",
                     "triton_version": "3.6.0", "torch_version": "2.9.0"}


def row(campaign: str, model: str, tokens: int, median: float | None, cfg: MoEConfig = BASE_CFG, **kw) -> Attempt:
    """test_gate's row for `model` with a +-0.5% CI and graph-mode provenance (override any field through kw)."""
    return gate_row(campaign, tokens, median, cfg, model=model, **{"provenance": REPORT_PROVENANCE, **kw})


def failed(campaign: str, model: str, tokens: int, status: Status, reason: str | None = None) -> Attempt:
    return row(campaign, model, tokens, None, BAD_CFG[reason], status=status, reason=reason)


def fill(led: Ledger, *, interpreter: bool) -> None:
    """Baseline and candidate over 2 models x 3 T x a16w4, plus slower, failed and (optionally)
    faster-but-non-claimable interpreter candidate rows that must never be picked as best."""
    led.add_campaign("base")
    led.add_campaign("cand", baseline="base")
    for model in MODELS_UNDER_TEST:
        for t in GRID:
            led.record(row("base", model, t, BASE_US[t]))
            led.record(row("cand", model, t, BASE_US[t] / SPEEDUPS[model][t], FAST_CFG))
            led.record(row("cand", model, t, BASE_US[t] * 1.5, SLOW_CFG))
            if interpreter:
                led.record(row("cand", model, t, 1.0, FAST_CFG, device="interpreter", claimable=False,
                               nonclaimable_reasons=("interpreter", "fake_clock")))
        led.record(failed("cand", model, 16, Status.ILLEGAL, "SMEM"))
        led.record(failed("cand", model, 1, Status.INCORRECT))
    led.record(failed("cand", "gpt-oss-20b", 4096, Status.ILLEGAL, "REGISTERS"))
    for model in MODELS_UNDER_TEST:
        led.record_guardrail(GuardrailResult(campaign="cand", model=model, path="a16w4", config_keys=(FAST_CFG.key(),),
                                             logits_diff=0.002, agreement=0.999, passed=True))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One report (with interpreter rows) shared by the page tests: plotting is the slow part."""
    tmp = tmp_path_factory.mktemp("report")
    with Ledger.open(tmp / "l.sqlite") as led:
        fill(led, interpreter=True)
        index = build_report(led, "cand", "base", tmp / "out")
        verdicts = {p: claimable_win(led, "cand", "base", p) for p in Profile}
        markdown = headline_markdown(led, "cand", "base")
    return index, index.read_text(encoding="utf-8"), verdicts, markdown


def test_page_is_self_contained_with_inline_pngs(built):
    index, page, _, _ = built
    assert index.name == "index.html" and index.is_file()
    assert "http://" not in page and "https://" not in page
    assert not re.search(r"""(src|href)=["'](?!data:|#)[^"']*//""", page)  # no external reference of any scheme
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 4  # latency, roofline, speedup, rejections
    assert all(base64.b64decode(b).startswith(PNG_MAGIC) for b in images)
    for name in ("latency.png", "roofline.png", "speedup.png", "rejections.png"):
        assert (index.parent / name).read_bytes().startswith(PNG_MAGIC)


def test_page_has_every_section_both_verdicts_and_the_banner(built):
    _, page, verdicts, _ = built
    for title in SECTIONS:
        assert f"<h2>{title}</h2>" in page
    for profile, verdict in verdicts.items():
        assert f"claimable_win, {profile.value} profile: " in page
        assert not verdict.claimable  # gpt-oss-20b regresses at T=4096 under both profiles
        for reason in verdict.reasons:
            assert reason in page
    # 6 interpreter rows (2 models x 3 T) of 29: 6 baseline + 18 measured and 5 failed candidate rows
    assert INTERPRETER_BANNER in page and "(6 of 29 rows ran on" in page
    assert "illegal:SMEM" in page and "illegal:REGISTERS" in page and "incorrect" in page
    assert "abc123def456 (clean)" in page and "graph / l2=flush" in page
    # the synthetic medians beat the nominal floors at several points: the page must say so
    assert "above the roofline" in page and "gpt-oss-20b/a16w4/T=16" in page


def test_headline_markdown_rows_and_geomeans(built):
    _, page, _, markdown = built
    rows = [line for line in markdown.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(rows) == len(MODELS_UNDER_TEST)  # one per (model, path)
    by_model = {r.split("|")[1].strip(): [c.strip() for c in r.strip("|").split("|")] for r in rows}
    # columns: model, path, points, geomean, min, max, wins, regressions, missing
    assert by_model["gpt-oss-20b"] == ["gpt-oss-20b", "a16w4", "3", f"{GEOMEAN['gpt-oss-20b']:.3f}x", "0.800x",
                                       "1.250x", "1", "1", "0"]
    assert by_model["deepseek-v3"] == ["deepseek-v3", "a16w4", "3", f"{GEOMEAN['deepseek-v3']:.3f}x", "1.000x",
                                       "2.000x", "2", "0", "0"]
    assert "1.587x" in page  # the headline is on the page too


def test_best_point_prefers_claimable_rows_and_uses_spec_floors():
    rows = [row("cand", "gpt-oss-20b", 16, 24.0, FAST_CFG), row("cand", "gpt-oss-20b", 16, 30.0, SLOW_CFG),
            row("cand", "gpt-oss-20b", 16, 1.0, FAST_CFG, device="interpreter", claimable=False,
                nonclaimable_reasons=("interpreter",))]
    [[best]] = best_layer_rows(rows).values()
    assert (best.median_us, best.claimable, best.floors_source) == (24.0, True, "nominal")
    shape = MODELS["gpt-oss-20b"]
    hit = expected_experts_hit(shape, 16)
    assert best.memory_floor_us == pytest.approx(memory_floor_us(layer_bytes(shape, Path.A16W4, 16, hit),
                                                                 NOMINAL_BANDWIDTH))
    assert best.compute_floor_us == pytest.approx(compute_floor_us(flops(shape, 16), NOMINAL_RATE))
    assert best.roofline_fraction == pytest.approx(max(best.memory_floor_us, best.compute_floor_us) / 24.0)
    # only non-claimable rows: the fastest of them, marked
    [[only]] = best_layer_rows(rows[2:]).values()
    assert (only.median_us, only.claimable) == (1.0, False)


def test_floors_and_experts_hit_from_provenance_then_args_then_nominal():
    flat = row("c", "deepseek-v3", 1, 50.0, provenance={"bandwidth_Bps": 2.0e12, "bf16_rate_flops": 5e14,
                                                       "experts_hit": 8})
    nested = row("c", "deepseek-v3", 1, 50.0, provenance={"floors": {"bandwidth": 3.1e12, "rate": 7e14,
                                                                     "source": "measured"}})
    bare = row("c", "deepseek-v3", 1, 50.0, provenance={})
    assert row_floors(flat, 1.0, 1.0) == (2.0e12, 5e14, "measured")
    assert row_floors(nested) == (3.1e12, 7e14, "measured")
    assert row_floors(bare, 1e12, 2e14) == (1e12, 2e14, "given")
    assert row_floors(bare) == (NOMINAL_BANDWIDTH, NOMINAL_RATE, "nominal")
    p = best_point(flat)
    assert (p.floors_source, p.hits_source, best_point(bare).hits_source) == ("measured", "routed", "expected")
    shape = MODELS["deepseek-v3"]
    assert p.memory_floor_us == pytest.approx(layer_bytes(shape, Path.A16W4, 1, 8) / 2.0e12 * 1e6)
    assert best_point(row("c", "deepseek-v3", 1, 50.0, roofline_fraction=0.42)).roofline_fraction == 0.42
    with pytest.raises(ValueError, match="bandwidth"):
        build_report(None, "c", None, "/nonexistent", bandwidth=-1.0)  # type: ignore[arg-type]


def test_status_counts_use_active_rows():
    lost = failed("cand", "tiny", 1, Status.WORKER_LOST)
    retry = row("cand", "tiny", 1, None, BAD_CFG[None], status=Status.ILLEGAL, reason="SMEM", supersedes=lost.key)
    assert status_counts([lost, retry, row("cand", "tiny", 1, 5.0)]) == {"illegal:SMEM": 1, "measured": 1}


def test_clean_ledger_no_banner_and_no_baseline(tmp_path):
    with Ledger.open(tmp_path / "l.sqlite") as led:
        fill(led, interpreter=False)
        page = build_report(led, "cand", "base", tmp_path / "a").read_text()
        assert INTERPRETER_BANNER not in page and "claimable_win, seed708 profile: " in page
        alone = build_report(led, "cand", None, tmp_path / "b").read_text()
        assert "No baseline campaign given" in alone and "speedup.png" not in alone
        assert INTERPRETER_BANNER not in alone
        with pytest.raises(ValueError, match="nope"):
            build_report(led, "cand", "nope", tmp_path / "c")
        led.add_campaign("empty")  # nothing measured: every baseline point is missing, plots still draw
        empty = build_report(led, "empty", "base", tmp_path / "d").read_text()
        assert "missing:gpt-oss-20b/a16w4/T=4096" in empty and "no_win" in empty


def test_cli_report_defaults_to_the_recorded_baseline(tmp_path):
    with Ledger.open(tmp_path / "l.sqlite") as led:
        fill(led, interpreter=False)
    app = typer.Typer()
    app.callback()(lambda: None)
    cli_report.register(app)
    out = tmp_path / "rep"
    res = CliRunner().invoke(app, ["report", "cand", "--ledger", str(tmp_path / "l.sqlite"), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert str(out / "index.html") in res.output
    assert f"{GEOMEAN['deepseek-v3']:.3f}x" in res.output and "| gpt-oss-20b | a16w4 |" in res.output
    assert "claimable_win, mxmoe profile" in (out / "index.html").read_text()
