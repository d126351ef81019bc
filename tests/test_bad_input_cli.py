"""Issue 24's bad-input corpus for the `mxmoe` command: one test per case.

Each bad input gets one line on stderr, `error: ...`, naming the bad value (and the allowed ones), exit code 2 and
no traceback unless `--debug`; a command that only reads a ledger creates and changes no file.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mxmoe._version import __version__
from mxmoe.cli import app
from mxmoe.shapes import MODELS
from mxmoe.tuning.ledger.records import Attempt, Status
from mxmoe.tuning.ledger.store import Ledger
from mxmoe.tuning.timing.value import Timing


def mxmoe(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(app, list(args), env=env)


def one_line_error(result, *needles: str, code: int = 2) -> str:
    """The run failed with exit `code`, printed exactly one line (`error: ...`) holding every needle, no traceback."""
    assert result.exit_code == code, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: "), lines[0]
    assert "Traceback" not in result.output
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def fingerprint(folder: Path) -> dict[str, tuple[str, int]]:
    """Every file of `folder`: content hash and mtime (a read-only command must leave both as they were)."""
    return {p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.iterdir()) if p.is_file()}


def _row(campaign: str, *, interpreter: bool = False, status: Status = Status.MEASURED) -> Attempt:
    measured = status is Status.MEASURED
    timing = Timing(median_us=10.0, p95_us=11.0, ci_lo_us=9.5, ci_hi_us=10.5, samples_us=(10.0,) * 5)
    return Attempt.make(
        campaign=campaign, status=status, reason=None, model="tiny", shape=MODELS["tiny"].to_dict(), path="a16w4",
        stage="layer", tokens=1, routing="uniform", config={"block_m": 16}, config_key="cfg",
        kernel_hash="k" * 12, device="interpreter" if interpreter else "NVIDIA H100",
        provenance={}, argv=("pytest",), nonclaimable_reasons=("interpreter", "fake_clock") if interpreter else (),
        claimable=not interpreter, timing=timing if measured else None)


@pytest.fixture
def ledger_dir(tmp_path: Path) -> Path:
    """A folder holding one good ledger (campaigns `cand` and `base`) and the bad ones of the corpus."""
    with Ledger.open(tmp_path / "good.sqlite") as led:
        led.add_campaign("base")
        led.add_campaign("cand", baseline="base")
    (tmp_path / "empty.sqlite").write_bytes(b"")
    (tmp_path / "random.sqlite").write_bytes(os.urandom(4096))
    conn = sqlite3.connect(tmp_path / "foreign.sqlite")
    conn.execute("CREATE TABLE meta (key TEXT, value TEXT)")  # a `meta` table, but not mxmoe's
    conn.commit()
    conn.close()
    conn = sqlite3.connect(tmp_path / "other.sqlite")
    conn.execute("CREATE TABLE songs (title TEXT)")
    conn.commit()
    conn.close()
    return tmp_path


# ---- 1. read-only ledger commands create and change nothing -------------------------------------------------------

READERS = {
    "ledger show": lambda led, d: ["ledger", "show", "--ledger", led],
    "ledger scan": lambda led, d: ["ledger", "scan", "--ledger", led],
    "ledger export": lambda led, d: ["ledger", "export", str(d / "out.csv"), "--ledger", led],
    "claim": lambda led, d: ["claim", "cand", "--baseline", "base", "--ledger", led],
    "report": lambda led, d: ["report", "cand", "--ledger", led, "-o", str(d / "rep")],
    "export": lambda led, d: ["export", "cand", "--ledger", led, "--out-dir", str(d / "t")],
}
BAD_LEDGERS = {
    "missing": ("nosuch.sqlite", "no ledger at "),
    "empty": ("empty.sqlite", "is an empty file"),
    "foreign": ("foreign.sqlite", "not an mxmoe ledger"),
    "other_tables": ("other.sqlite", "not an mxmoe ledger"),
    "random_bytes": ("random.sqlite", "is not an SQLite database"),
}


@pytest.mark.parametrize("bad", list(BAD_LEDGERS))
@pytest.mark.parametrize("command", list(READERS))
def test_read_only_command_refuses_a_bad_ledger_and_touches_nothing(ledger_dir, command, bad):
    name, why = BAD_LEDGERS[bad]
    before = fingerprint(ledger_dir)
    led = str(ledger_dir / name)
    one_line_error(mxmoe(*READERS[command](led, ledger_dir)), led, why)
    assert fingerprint(ledger_dir) == before  # no file created, none rewritten (not even its mtime)


@pytest.mark.parametrize("command", ["ledger show", "ledger scan", "ledger export", "claim"])
def test_read_only_command_on_a_good_ledger_leaves_it_as_it_was(ledger_dir, command):
    led = ledger_dir / "good.sqlite"
    before = fingerprint(ledger_dir)
    result = mxmoe(*READERS[command](str(led), ledger_dir))
    assert "Traceback" not in result.output
    after = fingerprint(ledger_dir)
    after.pop("out.csv", None)  # what `ledger export` was asked to write
    assert after == before  # no -wal / -shm left beside it, no journal-mode switch
    assert sqlite3.connect(led).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_read_only_open_does_not_switch_a_foreign_file_to_wal(ledger_dir):
    foreign = ledger_dir / "foreign.sqlite"
    mxmoe("ledger", "scan", "--ledger", str(foreign))
    assert sqlite3.connect(foreign).execute("PRAGMA journal_mode").fetchone()[0] == "delete"


def test_writers_still_create_a_ledger(tmp_path):
    with Ledger.open(tmp_path / "new.sqlite") as led:  # sweep, merge's target, guardrail rows
        led.add_campaign("c")
    assert (tmp_path / "new.sqlite").stat().st_size > 0


# ---- 2. one-line errors, exit 2, traceback only with --debug ---------------------------------------------------


def test_demo_unknown_model():
    one_line_error(mxmoe("demo", "--model", "nosuch"), "'nosuch'", "tiny-oai", "deepseek-v3-tp8")


def test_legal_unknown_space():
    one_line_error(mxmoe("legal", "--model", "tiny", "--space", "huge"), "'huge'", "default, wide")


def test_legal_negative_tokens():
    one_line_error(mxmoe("legal", "--model", "tiny", "--tokens", "-5"), "--tokens -5", "1 or more")


def test_claim_unknown_profile(ledger_dir):
    led = str(ledger_dir / "good.sqlite")
    one_line_error(mxmoe("claim", "cand", "--baseline", "base", "--ledger", led, "--profile", "foo"),
                   "'foo'", "mxmoe, seed708")


def test_debug_option_shows_the_traceback():
    result = mxmoe("--debug", "legal", "--model", "tiny", "--space", "huge")
    assert result.exit_code != 0 and isinstance(result.exception, ValueError)
    assert "unknown space 'huge'" in str(result.exception)


def test_debug_env_shows_the_traceback():
    result = mxmoe("legal", "--model", "tiny", "--space", "huge", env={"MXMOE_DEBUG": "1"})
    assert result.exit_code != 0 and isinstance(result.exception, ValueError)


def test_subprocess_error_is_one_line_without_traceback(tmp_path):
    done = subprocess.run([sys.executable, "-m", "mxmoe.cli", "ledger", "show", "--ledger", str(tmp_path / "x")],
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip() == f"error: no ledger at {tmp_path / 'x'}" and done.stdout == ""
    assert os.listdir(tmp_path) == []


# ---- 3. the sweep validates before it writes; a sweep that measured nothing fails --------------------------------

BAD_SWEEPS = {
    "routing": (["--routing", "zipf"], ("'zipf'", "uniform, skewed, few_active, all_active, sentinel_padding")),
    "limit": (["--limit", "0"], ("limit=0", "1 or more")),
    "tokens": (["--tokens", "0"], ("tokens=0", "1 or more")),
    "baseline": (["--baseline", "nosuch"], ("'nosuch'", "does not exist")),
}


@pytest.mark.parametrize("case", list(BAD_SWEEPS))
def test_bad_sweep_writes_nothing(tmp_path, case):
    args, needles = BAD_SWEEPS[case]
    led = tmp_path / "sweep.sqlite"
    result = mxmoe("sweep", "--model", "tiny", "--campaign", "z", "--tokens", "1", "--ledger", str(led), *args)
    one_line_error(result, *needles)
    assert not led.exists()


def test_bad_sweep_baseline_leaves_an_existing_ledger_alone(ledger_dir):
    led = ledger_dir / "good.sqlite"
    before = fingerprint(ledger_dir)
    result = mxmoe("sweep", "--model", "tiny", "--campaign", "z", "--tokens", "1", "--ledger", str(led),
                   "--baseline", "nosuch")
    one_line_error(result, "'nosuch'", "does not exist", "'base', 'cand'")
    assert fingerprint(ledger_dir) == before
    with Ledger.open_readonly(led) as r:
        assert [c.name for c in r.campaigns()] == ["base", "cand"]


def test_sweep_that_measured_nothing_exits_1(tmp_path):
    led = tmp_path / "sweep.sqlite"
    result = mxmoe("sweep", "--model", "tiny", "--campaign", "z", "--baseline-only", "--tokens", "1",
                   "--ledger", str(led), env={"MXMOE_TEST_FAULT": "launch:*"})
    assert result.exit_code == 1, result.output
    assert "sweep z measured nothing: 1 of 1 rows failed (launch_error=1)" in " ".join(result.output.split())
    assert "not a measurement" in result.output


# ---- 4. claim on an unknown campaign --------------------------------------------------------------------------


def test_claim_unknown_campaign(ledger_dir):
    led = str(ledger_dir / "good.sqlite")
    one_line_error(mxmoe("claim", "nosuch", "--baseline", "base", "--ledger", led),
                   "campaign 'nosuch' does not exist", "'base', 'cand'")


def test_claim_unknown_baseline(ledger_dir):
    led = str(ledger_dir / "good.sqlite")
    one_line_error(mxmoe("claim", "cand", "--baseline", "nosuch", "--ledger", led),
                   "baseline campaign 'nosuch' does not exist")


# ---- 5. first contact ------------------------------------------------------------------------------------------


def test_version():
    result = mxmoe("--version")
    assert result.exit_code == 0 and result.output.strip() == f"mxmoe {__version__}"


def test_ledger_show_prints_a_table(ledger_dir):
    led = str(ledger_dir / "good.sqlite")
    with Ledger.open(led) as w:
        w.record(_row("cand"))
    result = mxmoe("ledger", "show", "--ledger", led)
    assert result.exit_code == 0, result.output
    assert "{" not in result.output and "┃ campaign" in result.output and "measured" in result.output
    as_json = mxmoe("ledger", "show", "--ledger", led, "--json")
    assert json.loads(as_json.output) == {"cand": {"measured": 1}}


def test_shapes_piped_at_80_columns_keeps_every_name_whole(tmp_path):
    env = {**os.environ, "COLUMNS": "80"}
    done = subprocess.run([sys.executable, "-m", "mxmoe.cli", "shapes"], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert "…" not in done.stdout
    assert max(len(line) for line in done.stdout.splitlines()) <= 80
    for name in MODELS:
        assert f" {name} " in done.stdout, name


def test_demo_refuses_a_big_model_without_a_gpu():
    one_line_error(mxmoe("demo", "--model", "deepseek-v3-tp8"), "deepseek-v3-tp8", "tiny or tiny-oai", "--force")


# ---- 6. interpreter / fake-clock results are labelled "not a measurement" --------------------------------------


def test_claim_labels_interpreter_rows(ledger_dir):
    led = str(ledger_dir / "good.sqlite")
    with Ledger.open(led) as w:
        w.record(_row("cand", interpreter=True))
    result = mxmoe("claim", "cand", "--baseline", "base", "--ledger", led)
    assert "not a measurement" in " ".join(result.output.split())


def test_report_labels_interpreter_rows_in_console_html_and_plots(ledger_dir, monkeypatch):
    pytest.importorskip("matplotlib")
    from mxmoe.tuning.report import plots as report_plots

    titles: list[str] = []
    real_png = report_plots.png_bytes

    def spy(fig):
        titles.append(fig._suptitle.get_text() if fig._suptitle is not None else "")
        return real_png(fig)

    monkeypatch.setattr(report_plots, "png_bytes", spy)
    led = str(ledger_dir / "good.sqlite")
    with Ledger.open(led) as w:
        w.record(_row("cand", interpreter=True))
        w.record(_row("base", interpreter=True))
    out = ledger_dir / "rep"
    result = mxmoe("report", "cand", "--ledger", led, "-o", str(out))
    assert result.exit_code == 0, result.output
    assert "NOT A MEASUREMENT" in result.output
    page = (out / "index.html").read_text()
    assert "<title>mxmoe report: cand vs base (not a measurement)</title>" in page
    assert titles and all("NOT A MEASUREMENT" in t for t in titles), titles


# ---- 7. a refused sweep writes nothing ---------------------------------------------------------------------------


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="the interpreter refusal needs no GPU")
def test_refused_sweep_creates_no_ledger_and_no_campaign(ledger_dir):
    led = ledger_dir / "sweep.sqlite"
    args = ["sweep", "--model", "deepseek-v3-tp8", "--campaign", "z", "--tokens", "1"]
    one_line_error(mxmoe(*args, "--ledger", str(led)), "sweep refused", "deepseek-v3-tp8", "--force")
    assert not led.exists()  # the refusal comes before the ledger is opened
    before = fingerprint(ledger_dir)
    one_line_error(mxmoe(*args, "--ledger", str(ledger_dir / "good.sqlite")), "sweep refused")
    assert fingerprint(ledger_dir) == before
