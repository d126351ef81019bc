"""Issue 24, first contact: CLI output piped at 80 columns keeps every value a user must type whole (no ellipsis, no
split inside a model name or a config string), claim reasons read as bullets, and plots of interpreter / fake-clock
rows label no point "win"."""

from __future__ import annotations

import dataclasses
import io
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from rich.console import Console
from typer.testing import CliRunner

from mxmoe.cli import app
from mxmoe.cli.common import bullet
from mxmoe.legality import H100, Illegal, summarize
from mxmoe.shapes import Path as MoEPath
from mxmoe.shapes import get_shape
from mxmoe.tuning.judge.gate import Outcome, PointVerdict
from mxmoe.tuning.ledger.store import Ledger
from mxmoe.tuning.timing.value import Timing

sys.path.insert(0, str(Path(__file__).parent))
from test_bad_input_cli import _row  # noqa: E402

CONFIG = re.compile(r"M\d+N\d+K\d+G\d+w\d+s\d+-\w+(-sk\d+)?(-slots)?")  # TileConfig.short()


def piped(*args: str, cwd: Path | None = None) -> str:
    """`mxmoe ARGS` with stdout a pipe at COLUMNS=80 (as `| less` would see it); its stdout, checked to be 80 wide."""
    env = {**os.environ, "COLUMNS": "80", "TRITON_INTERPRET": "1"}
    done = subprocess.run([sys.executable, "-m", "mxmoe.cli", *args], capture_output=True, text=True, env=env,
                          cwd=cwd)
    assert done.returncode in (0, 1), done.stderr
    assert "…" not in done.stdout
    assert max(len(line) for line in done.stdout.splitlines()) <= 80, done.stdout
    return done.stdout


def test_bench_keeps_each_config_whole_on_one_line():
    out = piped("bench", "--model", "tiny", "--tokens", "1,16")
    for t in (1, 16):
        line = next(ln for ln in out.splitlines() if ln.startswith(f"T={t} config "))
        stages = line.removeprefix(f"T={t} config ").split("|")
        assert len(stages) == 2 and all(CONFIG.fullmatch(s) for s in stages), line
    assert "stage1" in out and "TFLOP/s" in out  # headers whole, not split mid-word


def test_legal_show_keeps_the_model_and_every_rejected_config_whole():
    out = piped("legal", "--model", "deepseek-v3-tp8", "--show", "illegal")
    assert any(ln.startswith("deepseek-v3-tp8 a16w4 stage 1") for ln in out.splitlines())
    s = summarize(get_shape("deepseek-v3-tp8"), MoEPath.A16W4, 1, "default", H100)
    rejected = [(c.short(), v.reason.value) for c, v in s["verdicts"] if isinstance(v, Illegal)]
    assert rejected
    for short, reason in rejected:
        assert re.search(rf"│ {re.escape(short)} +│ {reason} +│", out), short


def test_claim_piped_at_80_columns_prints_one_bullet_per_reason(tmp_path):
    led = tmp_path / "l.sqlite"
    with Ledger.open(led) as w:
        w.add_campaign("base")
        w.add_campaign("cand", baseline="base")
        w.record(_row("cand", interpreter=True))
        w.record(_row("base", interpreter=True))
    out = piped("claim", "cand", "--baseline", "base", "--ledger", str(led))
    bullets = [ln for ln in out.splitlines() if ln.startswith("  -")]
    assert bullets and all(re.match(r"  - \S", ln) for ln in bullets), out  # text on the bullet's line
    assert "  - no_win" in bullets


LONG = ("protocol:deepseek-v3-tp8/a16w4/T=128:torch_version:2.13.0+cu128 (a build of a much newer torch)!="
        "2.12.0+cu126 (the baseline's torch, measured the week before on another host with other drivers):"
        "nonclaimable:" + "0123456789abcdef" * 4)


def test_claim_wraps_a_long_reason_with_a_hanging_indent(tmp_path, monkeypatch):
    from mxmoe.cli import main as cli
    from mxmoe.tuning.judge import gate
    from mxmoe.tuning.report import build as report  # noqa: F401 - imported before the patch: keeps the real gate

    led = tmp_path / "l.sqlite"
    with Ledger.open(led) as w:
        w.add_campaign("base")
        w.add_campaign("cand", baseline="base")
    verdict = SimpleNamespace(claimable=False, reasons=(LONG, "no_win"))
    monkeypatch.setattr(gate, "claimable_wins", lambda *a, **k: [verdict])
    monkeypatch.setattr(cli, "console", Console(width=80))
    result = CliRunner().invoke(app, ["claim", "cand", "--baseline", "base", "--ledger", str(led)])
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    first = lines.index("  - protocol:deepseek-v3-tp8/a16w4/T=128:torch_version:2.13.0+cu128 (a build of")
    body = []
    for ln in lines[first + 1:]:
        if not ln.startswith("    "):
            break
        body.append(ln)
    assert len(body) >= 3 and all(len(ln) <= 80 for ln in (lines[first], *body))
    assert " ".join([lines[first][4:], *(ln[4:] for ln in body)]).replace(": ", ":") == LONG.replace(": ", ":")
    assert lines[first + 1 + len(body)] == "  - no_win"


def test_bullet_breaks_between_words_or_after_a_colon_never_inside_a_name():
    lines = bullet(LONG, 80)
    assert lines[0].startswith("  - protocol:") and all(ln.startswith("    ") for ln in lines[1:])
    assert all(len(ln) <= 80 for ln in lines)
    assert any("deepseek-v3-tp8/a16w4/T=128" in ln for ln in lines)
    assert bullet("no_win", 80) == ["  - no_win"]


def test_guardrail_table_keeps_model_and_config_keys_whole(monkeypatch):
    from mxmoe.cli.commands import guardrail

    buf = io.StringIO()
    monkeypatch.setattr(guardrail, "console", Console(width=80, file=buf))
    row = {"model": "deepseek-v3-tp8", "path": "a16w4", "passed": False, "outcome": "reference_invalid",
           "config_keys": ["0123456789abcdef", "fedcba9876543210", "00112233aabbccdd"], "logits_diff": 0.0123,
           "logits_diff_free": None, "logits_diff_vs_plain": 0.02, "fidelity": 0.003, "seconds": 12.5,
           "layers": [{"rms_rel": 1e-3}, {"rms_rel": 2e-3}], "routing_flips": [0, 1], "input_drift": [0.0, 1e-4],
           "detail": "reference: the reference produced NaN at layer 1 (a long detail that has to wrap somewhere)",
           "interpreter": True}
    guardrail._show([row], as_json=False)
    out = buf.getvalue()
    assert "…" not in out and max(len(ln) for ln in out.splitlines()) <= 80, out
    for whole in ("deepseek-v3-tp8", "reference_invalid", "01234567", "fedcba98", "00112233"):
        assert re.search(rf"[│ ]{whole}[ ,│]", out), whole
    facts = [ln for ln in out.splitlines() if ln.startswith("  - ")]
    assert facts == [ln for ln in facts if ln.startswith("  - deepseek-v3-tp8 a16w4: free run")]


# ---- plots of interpreter / fake-clock rows: no "win" ------------------------------------------------------------


def _point(outcome: Outcome, tokens: int, speedup: float) -> PointVerdict:
    return PointVerdict("tiny", "a16w4", "uniform", tokens, None, None, speedup, (speedup * 0.95, speedup * 1.05),
                        outcome, "cfg")


def _legend(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]


def test_speedup_plot_of_fake_times_says_faster_not_a_measurement():
    pytest.importorskip("matplotlib")
    from mxmoe.tuning.report.plots import speedup_figure

    pts = [_point(Outcome.WIN, 1, 1.5), _point(Outcome.REGRESSION, 16, 0.7), _point(Outcome.NEUTRAL, 128, 1.0)]
    assert set(_legend(speedup_figure(pts))) == {"win", "regression", "neutral"}
    fake = _legend(speedup_figure(pts, not_a_measurement=True))
    assert set(fake) == {"faster (not a measurement)", "slower (not a measurement)",
                         "within noise (not a measurement)"}


def test_report_plots_of_interpreter_rows_label_no_point_win(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from mxmoe.tuning.report import plots as report_plots

    legends: list[str] = []
    real_png = report_plots.png_bytes

    def spy(fig):
        legends.extend(_legend(fig))
        return real_png(fig)

    monkeypatch.setattr(report_plots, "png_bytes", spy)
    timing = Timing(median_us=5.0, p95_us=5.5, ci_lo_us=4.9, ci_hi_us=5.1, samples_us=(5.0,) * 5)
    fast = dataclasses.replace(_row("cand", interpreter=True), timing=timing)
    led = tmp_path / "l.sqlite"
    with Ledger.open(led) as w:
        w.add_campaign("base")
        w.add_campaign("cand", baseline="base")
        w.record(fast)
        w.record(_row("base", interpreter=True))
    result = CliRunner().invoke(app, ["report", "cand", "--ledger", str(led), "-o", str(tmp_path / "rep")])
    assert result.exit_code == 0, result.output
    assert any(t.endswith("(not a measurement)") for t in legends), legends
    assert not {"win", "regression", "neutral"} & set(legends)
    page = (tmp_path / "rep" / "index.html").read_text()
    assert "green faster, red slower" in page and "green win" not in page
