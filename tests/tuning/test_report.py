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

from mxmoe.cli.commands import report as cli_report
from mxmoe.config import MoEConfig, TileConfig
from mxmoe.shapes import MODELS, Path
from mxmoe.spec import Profile, compute_floor_us, expected_experts_hit, flops, layer_bytes, memory_floor_us
from mxmoe.tuning.judge.gate import claimable_win
from mxmoe.tuning.ledger.records import Attempt, GuardrailResult, Status
from mxmoe.tuning.ledger.store import Ledger
from mxmoe.tuning.report.bars import Bar, bars_markdown, performance_bars
from mxmoe.tuning.report.build import (
    BARS_SECTION,
    INTERPRETER_BANNER,
    SECTIONS,
    WORKLOAD_SECTION,
    best_layer_rows,
    best_point,
    build_report,
    collect,
    headline_markdown,
    row_floors,
    status_counts,
)
from mxmoe.tuning.timing.bench import NOMINAL_BANDWIDTH, NOMINAL_RATE

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
        assert (f"<h2>{title}</h2>" in page) is (title != WORKLOAD_SECTION)  # no #708 shape in this campaign
    assert "latency_708" not in page and "roofline_708" not in page
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


def test_page_has_the_claim_of_each_model_and_path_under_both_profiles(built):
    """The table each shipped table rests on: gpt-oss-20b regresses at T=4096 (not claimable), deepseek-v3 wins
    at T=1 and 4096 with no regression (claimable under mxmoe), as `claimable_win(model=)` says."""
    _, page, _, _ = built
    assert "Per (model, path): the claim each table rests on" in page
    cells = re.findall(r"<tr><td>(gpt-oss-20b|deepseek-v3)</td><td>a16w4</td><td>([^<]*)</td><td>([^<]*)</td></tr>",
                       page)
    by_model = {m: (mx, seed) for m, mx, seed in cells}
    assert by_model["deepseek-v3"][0] == "claimable"
    assert by_model["gpt-oss-20b"][0].startswith("no: regression:gpt-oss-20b/a16w4/T=4096")
    assert set(by_model) == {"gpt-oss-20b", "deepseek-v3"}


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
    assert (best.timing.median_us, best.claimable, best.floors_source) == (24.0, True, "nominal")
    shape = MODELS["gpt-oss-20b"]
    hit = expected_experts_hit(shape, 16)
    assert best.memory_floor_us == pytest.approx(memory_floor_us(layer_bytes(shape, Path.A16W4, 16, hit),
                                                                 NOMINAL_BANDWIDTH))
    assert best.compute_floor_us == pytest.approx(compute_floor_us(flops(shape, 16), NOMINAL_RATE))
    assert best.roofline_fraction == pytest.approx(max(best.memory_floor_us, best.compute_floor_us) / 24.0)
    # only non-claimable rows: the fastest of them, marked
    [[only]] = best_layer_rows(rows[2:]).values()
    assert (only.timing.median_us, only.claimable) == (1.0, False)


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


# ---- performance bars and the #708 workload (report_bars.py) ----------------------------------------
# Oracle: the bar thresholds of issues 9 and 13 applied by hand to medians placed at a chosen fraction of
# the nominal floors (best_point's, checked above against spec.py).


def at_fraction(campaign: str, model: str, tokens: int, fraction: float, floor: str = "memory",
                cfg: MoEConfig = FAST_CFG, **kw) -> Attempt:
    """A row whose median is the nominal memory (or compute) floor / fraction."""
    probe = best_point(row(campaign, model, tokens, 1.0, cfg, **kw))
    us = (probe.memory_floor_us if floor == "memory" else probe.compute_floor_us) / fraction
    return row(campaign, model, tokens, us, cfg, **kw)


def record_pair(led: Ledger, cand: Attempt, speedup: float) -> None:
    """The candidate row and a baseline row `speedup` times slower at the same point."""
    led.record(cand)
    slower = cand.timing.median_us * speedup
    led.record(row("base", cand.model, cand.tokens, slower, path=cand.path, routing=cand.routing))


def issue9_ledger(led: Ledger) -> None:
    """deepseek-v3: decode 0.90 and 0.37 of the memory floor, prefill 0.65 of the bf16 rate, 1.2x everywhere;
    gpt-oss-20b: decode 0.85 / 0.90, 1.25x, and no candidate row at the baseline's T=4096."""
    led.add_campaign("base")
    led.add_campaign("cand", baseline="base")
    for t, frac, floor in ((1, 0.90, "memory"), (16, 0.37, "memory"), (4096, 0.65, "compute")):
        record_pair(led, at_fraction("cand", "deepseek-v3", t, frac, floor), 1.2)
    for t, frac in ((1, 0.85), (16, 0.90)):
        record_pair(led, at_fraction("cand", "gpt-oss-20b", t, frac), 1.25)
    led.record(row("base", "gpt-oss-20b", 4096, BASE_US[4096]))


def by_name(bars: tuple[Bar, ...]) -> dict[tuple[str, str], Bar]:
    out = {(b.name, b.panel): b for b in bars}
    assert len(out) == len(bars)  # one row per (bar, panel)
    return out


def test_issue9_bars_met_and_missed_with_shortfall(tmp_path):
    with Ledger.open(tmp_path / "l.sqlite") as led:
        issue9_ledger(led)
        bars = by_name(performance_bars(collect(led, "cand", "base")))
        markdown = bars_markdown(led, "cand", "base")
    assert {b.issue for b in bars.values()} == {9}  # no #708 shape: no issue 13 rows
    dec = bars["decode memory-floor fraction", "deepseek-v3/a16w4"]
    assert (dec.at, round(dec.value, 2), dec.met, dec.shortfall) == (16, 0.37, False, "0.37 of 0.80")
    pre = bars["prefill bf16-rate fraction", "deepseek-v3/a16w4"]
    assert (pre.at, round(pre.value, 2), pre.met, pre.shortfall) == (4096, 0.65, True, "")
    dec20 = bars["decode memory-floor fraction", "gpt-oss-20b/a16w4"]
    assert (dec20.at, round(dec20.value, 2), dec20.met) == (1, 0.85, True)  # the worst of 0.85 and 0.90
    pre20 = bars["prefill bf16-rate fraction", "gpt-oss-20b/a16w4"]
    assert (pre20.value, pre20.met, pre20.shortfall) == (None, False, "candidate misses T=4096")
    sp = bars["tuned / baseline geomean", "deepseek-v3/a16w4"]
    assert (sp.value, sp.met, sp.shortfall) == (pytest.approx(1.2), True, "")
    sp20 = bars["tuned / baseline geomean", "gpt-oss-20b/a16w4"]
    assert (sp20.value, sp20.met, sp20.shortfall) == (pytest.approx(1.25), False, "candidate misses 1 of 3 point(s)")
    assert "| 9 | decode memory-floor fraction | deepseek-v3/a16w4 | T<=16 (worst T=16) | 0.37 | >= 0.80 | NO | " \
        "0.37 of 0.80 |" in markdown
    assert "| 9 | tuned / baseline geomean | deepseek-v3/a16w4 | grid | 1.200x | >= 1.10x | yes | - |" in markdown


def test_bars_say_when_the_baseline_or_a_point_is_missing(tmp_path):
    with Ledger.open(tmp_path / "l.sqlite") as led:
        issue9_ledger(led)
        alone = by_name(performance_bars(collect(led, "cand", None)))
        led.add_campaign("other")
        led.record(row("other", "deepseek-v3", 1, 50.0))
        data = collect(led, "cand", "other")
        partial = by_name(performance_bars(data))
    for model in ("deepseek-v3", "gpt-oss-20b"):
        b = alone["tuned / baseline geomean", f"{model}/a16w4"]
        assert (b.value, b.met, b.shortfall) == (None, False, "no baseline campaign")
    # without the baseline's T=4096 nothing expects gpt-oss-20b prefill: the row says none was measured
    assert alone["prefill bf16-rate fraction", "gpt-oss-20b/a16w4"].shortfall == "no point measured at T>=4096"
    assert partial["tuned / baseline geomean", "gpt-oss-20b/a16w4"].shortfall == \
        "baseline other has no gpt-oss-20b/a16w4 point"
    # the baseline's one point (T=1) is the grid the speedup is judged over
    cand_t1 = data.cand_best["deepseek-v3", "a16w4", "uniform"][0]
    assert cand_t1.tokens == 1
    geomean = partial["tuned / baseline geomean", "deepseek-v3/a16w4"].value
    assert geomean == pytest.approx(50.0 / cand_t1.timing.median_us)


WORKLOAD_SHAPE = "deepseek-v3-tp8"
# (T=1 median us, T=4096 fraction of the bf16 rate) per routing: uniform meets both issue 13 bars, skewed neither
WORKLOAD_POINTS = {"uniform": (20.0, 0.55), "skewed": (31.2, 0.30)}


@pytest.fixture(scope="module")
def built_708(tmp_path_factory):
    """deepseek-v3-tp8 a4w4 under uniform and skewed routing, 1.2x over the baseline at every point."""
    tmp = tmp_path_factory.mktemp("report708")
    kw = {"path": "a4w4"}
    with Ledger.open(tmp / "l.sqlite") as led:
        led.add_campaign("base")
        led.add_campaign("cand", baseline="base")
        for routing, (t1_us, prefill) in WORKLOAD_POINTS.items():
            record_pair(led, row("cand", WORKLOAD_SHAPE, 1, t1_us, FAST_CFG, routing=routing, **kw), 1.2)
            record_pair(led, row("cand", WORKLOAD_SHAPE, 16, 40.0, FAST_CFG, routing=routing, **kw), 1.2)
            record_pair(led, at_fraction("cand", WORKLOAD_SHAPE, 4096, prefill, "compute", routing=routing, **kw), 1.2)
        led.record_guardrail(GuardrailResult(campaign="cand", model=WORKLOAD_SHAPE, path="a4w4",
                                             config_keys=(FAST_CFG.key(),), logits_diff=0.002, agreement=0.999,
                                             passed=True))
        led.add_campaign("fast")  # a baseline twice as fast at T=1: a regression, so no claim
        led.record(row("fast", WORKLOAD_SHAPE, 1, 10.0, **kw))
        data = collect(led, "cand", "base")
        others = {name: collect(led, "cand", name) for name in ("fast", None)}
        index = build_report(led, "cand", "base", tmp / "out")
    return data, index, index.read_text(encoding="utf-8"), others


def test_issue13_bars(built_708):
    data, _, _, others = built_708
    bars = by_name(performance_bars(data))
    assert {b.issue for b in bars.values()} == {13}  # no issue 9 model in this campaign
    t1, t1_skew = (bars["T=1 latency", f"{WORKLOAD_SHAPE}/a4w4{s}"] for s in ("", "@skewed"))
    assert (t1.value, t1.met, t1.shortfall) == (20.0, True, "")
    assert (t1_skew.value, t1_skew.met, t1_skew.shortfall) == (31.2, False, "31.2 us over 25 us")
    pre, pre_skew = (bars["prefill bf16-rate fraction", f"{WORKLOAD_SHAPE}/a4w4{s}"] for s in ("", "@skewed"))
    assert (round(pre.value, 2), pre.met) == (0.55, True)
    assert (pre_skew.met, pre_skew.shortfall) == (False, "0.30 of 0.50")
    regressed = by_name(performance_bars(others["fast"]))
    unjudged = by_name(performance_bars(others[None]))
    for profile, verdict in data.verdicts.items():
        assert verdict.claimable  # 1.2x everywhere, guardrail passed
        claim = f"claimable_win ({profile.value})", "campaign-wide"
        assert (bars[claim].value, bars[claim].met, bars[claim].shortfall) == (1.0, True, "")
        reasons = others["fast"].verdicts[profile].reasons
        assert (regressed[claim].value, regressed[claim].met) == (0.0, False)
        assert regressed[claim].shortfall.startswith(f"{len(reasons)} reason(s), 1 on #708 points: "
                                                     f"regression:{WORKLOAD_SHAPE}/a4w4/T=1:0.5000x")
        assert (unjudged[claim].value, unjudged[claim].shortfall) == (None, "no baseline campaign: no verdict")


def test_workload_708_section_has_both_routings_side_by_side(built_708):
    _, index, page, _ = built_708
    for title in SECTIONS:
        assert f"<h2>{title}</h2>" in page
    assert "http://" not in page and "https://" not in page
    assert not re.search(r"""(src|href)=["'](?!data:|#)[^"']*//""", page)
    images = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    names = [name for name, _ in images]
    assert {f"latency_708_{WORKLOAD_SHAPE}.png", "roofline_708.png", "speedup_708.png"} <= set(names)
    assert all(base64.b64decode(b).startswith(PNG_MAGIC) for _, b in images)
    assert (index.parent / f"latency_708_{WORKLOAD_SHAPE}.png").read_bytes().startswith(PNG_MAGIC)
    section = page[page.index(f"<h2>{WORKLOAD_SECTION}</h2>"):]
    section = section[:section.index("</section>")]
    # uniform before skewed in every column group of the per-shape table
    heads = re.findall(r"<th>(uniform|skewed): candidate us", section)
    assert heads == ["uniform", "skewed"]
    assert "1.200x [" in section  # speedup with its CI pair
    assert "campaign-wide" in section and "#708 points" in section
    # the scoped claim of the one #708 (model, path): claimable under both profiles (1.2x, guardrail passed)
    assert f"<tr><td>{WORKLOAD_SHAPE}</td><td>a4w4</td><td>claimable</td><td>claimable</td></tr>" in section
    bars = page[page.index(f"<h2>{BARS_SECTION}</h2>"):]
    assert "31.2 us over 25 us" in bars[:bars.index("</section>")]
