"""Ledger: idempotent keys, conflicts kept, versioned schema, merge, CSV export, kill -9 safety.

Oracle: the rows written (read back equal), SQLite's own `PRAGMA integrity_check`, and for kill -9
the keys the child printed after each commit returned."""

from __future__ import annotations

import csv
import io
import random
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mxmoe.config import MoEConfig, TileConfig
from mxmoe.shapes import MODELS
from mxmoe.tuning.ledger.records import Attempt, GuardrailResult, Status
from mxmoe.tuning.ledger.store import (
    MIGRATIONS,
    SCHEMA_VERSION,
    Ledger,
    LedgerError,
    RecordOutcome,
    SchemaTooNewError,
)
from mxmoe.tuning.timing.value import pop_timing

CFG = MoEConfig(TileConfig(), TileConfig(block_n=128))


def make(**kw) -> Attempt:
    """A claimable measured layer row of `tiny` in campaign `c`; override any field (the timing as its flat fields,
    as a stored row holds them)."""
    fields = dict(
        campaign="c",
        status=Status.MEASURED,
        model="tiny",
        shape=MODELS["tiny"].to_dict(),
        path="a16w4",
        stage="layer",
        tokens=16,
        config=CFG.to_dict(),
        config_key=CFG.key(),
        kernel_hash="kh1",
        device="NVIDIA H100 80GB HBM3",
        median_us=10.0,
        p95_us=11.0,
        ci_lo_us=9.9,
        ci_hi_us=10.1,
        samples_us=(9.9, 10.0, 10.1, 11.0),
        claimable=True,
        provenance={"git_commit": "abc123"},
        argv=("mxmoe", "sweep"),
        created_at="2025-01-01T00:00:00.000000+00:00",
    )
    fields.update(kw)
    timing = pop_timing(fields, "Attempt")
    fields.setdefault("timing", timing)
    return Attempt.make(**fields)


@pytest.fixture
def ledger(tmp_path):
    with Ledger.open(tmp_path / "l.sqlite") as led:
        led.add_campaign("c", description="test")
        yield led


def test_open_sets_wal_full_sync_and_version(tmp_path, ledger):
    assert ledger.execute("PRAGMA journal_mode")[0][0] == "wal"
    assert ledger.execute("PRAGMA synchronous")[0][0] == 2  # FULL
    assert ledger.execute("PRAGMA foreign_keys")[0][0] == 1
    assert ledger.schema_version == SCHEMA_VERSION
    assert [c.name for c in ledger.campaigns()] == ["c"]


def test_record_is_idempotent_and_conflicts_are_kept(ledger):
    a = make()
    assert ledger.record(a) is RecordOutcome.ADDED
    assert ledger.record(a) is RecordOutcome.IDENTICAL
    # same result, recorded again later with other provenance: a duplicate, not a conflict
    again = Attempt.from_dict(a.to_dict() | {"created_at": "2025-02-01T00:00:00+00:00", "argv": ["x"]})
    assert ledger.record(again) is RecordOutcome.IDENTICAL
    other = Attempt.from_dict(a.to_dict() | {"median_us": 10.05})
    assert other.key == a.key
    assert ledger.record(other) is RecordOutcome.CONFLICT
    assert ledger.record(other) is RecordOutcome.CONFLICT  # counted, but stored once
    assert ledger.attempts("c") == [a]  # never overwritten
    [conflict] = ledger.conflicts("c")
    assert conflict.key == a.key and conflict.incoming == other
    assert ledger.has(a.key) and not ledger.has("nope") and ledger.get(a.key) == a
    assert ledger.keys("c") == {a.key}


@pytest.mark.parametrize("status", list(Status))
def test_every_status_fits_the_schema(ledger, status):
    """The schema's CHECK lists the statuses: a new Status needs a migration, and this test says so."""
    kw = {"reason": "why"} if status.needs_reason else {}
    if status is not Status.MEASURED:
        kw |= dict(claimable=False, timing=None)
    a = make(status=status, **kw)
    assert ledger.record(a) is RecordOutcome.ADDED
    assert ledger.get(a.key).status_text == a.status_text


def test_record_refuses_unknown_campaign(ledger):
    with pytest.raises(ValueError, match="'ghost'"):
        ledger.record(make(campaign="ghost"))
    assert ledger.attempts() == []


def test_add_campaign_is_idempotent_but_baseline_is_fixed(ledger):
    ledger.add_campaign("cand", baseline="c")
    assert ledger.add_campaign("cand").baseline == "c"
    with pytest.raises(ValueError, match="baseline"):
        ledger.add_campaign("cand", baseline="other")


def test_attempt_filters(ledger):
    rows = [make(tokens=t, stage=s) for t in (1, 16) for s in ("1", "layer")]
    for r in rows:
        ledger.record(r)
    assert {r.key for r in ledger.attempts("c", tokens=16, stage="layer")} == {rows[3].key}
    assert len(ledger.attempts(status=Status.MEASURED)) == 4
    with pytest.raises(ValueError, match="colour"):
        ledger.attempts(colour="red")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.tuples(st.integers(0, 5), st.sampled_from(["1", "2", "layer"]), st.floats(1.0, 1e4, allow_nan=False)),
        max_size=12,
    )
)
def test_ledger_invariants(tmp_path, rows):
    """Whatever is recorded, each key is stored once, reads back equal, and re-recording changes nothing."""
    with Ledger.open(":memory:") as led:
        led.add_campaign("c")
        written = {}
        for t, stage, med in rows:
            a = make(tokens=t, stage=stage, median_us=med, ci_lo_us=med * 0.99, ci_hi_us=med * 1.01)
            outcome = led.record(a)
            if a.key in written:
                assert outcome is (RecordOutcome.IDENTICAL if written[a.key] == a else RecordOutcome.CONFLICT)
            else:
                assert outcome is RecordOutcome.ADDED
                written[a.key] = a
        assert {a.key: a for a in led.attempts("c")} == written
        assert all(led.record(a) is RecordOutcome.IDENTICAL for a in written.values())


def test_guardrails_round_trip(ledger):
    g = GuardrailResult(
        campaign="c",
        model="tiny",
        path="a16w4",
        config_keys=(CFG.key(),),
        logits_diff=0.001,
        agreement=1.0,
        passed=True,
    )
    assert ledger.record_guardrail(g) is RecordOutcome.ADDED
    assert ledger.record_guardrail(g) is RecordOutcome.IDENTICAL
    assert ledger.guardrails("c") == [g]
    with pytest.raises(ValueError, match="'ghost'"):
        ledger.record_guardrail(GuardrailResult.from_dict(g.to_dict() | {"campaign": "ghost"}))


# ---- schema versions -------------------------------------------------------------------------------


def test_newer_schema_is_refused_and_left_untouched(tmp_path):
    p = tmp_path / "new.sqlite"
    with Ledger.open(p) as led:
        led.add_campaign("c")
        led.record(make())
    raw = sqlite3.connect(p)
    raw.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    raw.commit()
    raw.close()
    with pytest.raises(SchemaTooNewError, match="schema_version 99"):
        Ledger.open(p)
    raw = sqlite3.connect(p)
    assert raw.execute("SELECT COUNT(*) FROM attempts").fetchone()[0] == 1
    raw.close()


def test_older_schema_migrates_forward_in_one_transaction(tmp_path):
    p = tmp_path / "old.sqlite"
    with Ledger.open(p, migrations=MIGRATIONS) as led:
        led.add_campaign("c")
        led.record(make())
    v2 = "CREATE TABLE notes (key TEXT PRIMARY KEY, note TEXT);\nINSERT INTO notes SELECT key, 'n' FROM attempts;"
    broken = "CREATE TABLE half (x INTEGER);\nINSERT INTO no_such_table VALUES (1);"
    with pytest.raises(sqlite3.OperationalError):
        Ledger.open(p, migrations=(*MIGRATIONS, broken))
    with Ledger.open(p) as led:  # the failed migration left nothing behind
        assert led.schema_version == len(MIGRATIONS)
        assert led.execute("SELECT name FROM sqlite_master WHERE name = 'half'") == []
    with Ledger.open(p, migrations=(*MIGRATIONS, v2)) as led:
        assert led.schema_version == len(MIGRATIONS) + 1
        assert led.execute("SELECT note FROM notes")[0][0] == "n"
        assert led.attempts("c") == [make()]
    with pytest.raises(SchemaTooNewError):
        Ledger.open(p)  # the code now knows fewer migrations than the file has


def test_foreign_sqlite_file_is_not_a_ledger(tmp_path):
    p = tmp_path / "other.sqlite"
    raw = sqlite3.connect(p)
    raw.execute("CREATE TABLE users (name TEXT)")
    raw.commit()
    raw.close()
    with pytest.raises(LedgerError, match="not an mxmoe ledger"):
        Ledger.open(p)


# ---- merge -----------------------------------------------------------------------------------------


def test_merge_disjoint_overlapping_and_conflicting(tmp_path, ledger):
    shared, mine = make(tokens=1), make(tokens=2)
    ledger.record(shared)
    ledger.record(mine)
    theirs_path = tmp_path / "theirs.sqlite"
    theirs_new, theirs_conflict = make(tokens=4), Attempt.from_dict(mine.to_dict() | {"median_us": 10.09})
    with Ledger.open(theirs_path) as other:
        other.add_campaign("c")
        other.add_campaign("d", baseline="c")
        for a in (shared, theirs_new, theirs_conflict, make(campaign="d")):
            other.record(a)
        other.record(Attempt.from_dict(shared.to_dict() | {"median_us": 10.01}))  # a conflict over there
        other.record_guardrail(
            GuardrailResult(
                campaign="d",
                model="tiny",
                path="a16w4",
                config_keys=("k",),
                logits_diff=0.0,
                agreement=1.0,
                passed=True,
            )
        )
    report = ledger.merge(theirs_path)
    assert (report.added, report.identical, report.conflicts) == (2, 1, 1)
    assert (report.carried_conflicts, report.campaigns_added, report.guardrails_added) == (1, 1, 1)
    assert ledger.get(mine.key) == mine  # ours kept; theirs in conflicts
    assert {c.incoming.timing.median_us for c in ledger.conflicts("c")} == {10.09, 10.01}
    assert ledger.campaigns()[-1].baseline == "c"
    again = ledger.merge(theirs_path)
    # the conflicting row still conflicts (reported again), but nothing new is stored
    assert (again.added, again.identical, again.conflicts, again.carried_conflicts) == (0, 3, 1, 0)
    assert len(ledger.conflicts()) == 2
    with Ledger.open(theirs_path) as other:  # the source was only read
        assert len(other.attempts()) == 4
    with pytest.raises(ValueError, match="into itself"):
        ledger.merge(ledger.path)
    with pytest.raises(ValueError, match="does not exist"):
        ledger.merge(tmp_path / "missing.sqlite")


# ---- export ----------------------------------------------------------------------------------------


def test_export_csv_is_readable_by_csv(tmp_path, ledger):
    ledger.record(make())
    ledger.record(
        make(
            tokens=1,
            status=Status.ILLEGAL,
            reason="SMEM",
            claimable=False,
            timing=None,
            detail='line1\nline2, "q"',
        )
    )
    out = tmp_path / "x.csv"
    assert ledger.export_csv(out, campaign="c") == 2
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    by_t = {r["tokens"]: r for r in rows}
    assert by_t["1"]["status"] == "illegal:SMEM" and by_t["1"]["detail"] == 'line1\nline2, "q"'
    assert by_t["16"]["config.stage2.block_n"] == "128"
    assert [float(x) for x in by_t["16"]["samples_us"].split(";")] == [9.9, 10.0, 10.1, 11.0]
    assert by_t["16"]["argv"] == "mxmoe sweep" and by_t["1"]["median_us"] == ""
    buf = io.StringIO()
    assert ledger.export_csv(buf, campaign="nothing") == 0
    assert buf.getvalue().startswith("key,campaign,status")


def test_summary_counts_per_campaign_and_status(ledger):
    ledger.record(make())
    ledger.record(make(tokens=1, status=Status.TIMEOUT, claimable=False))
    ledger.record(make(tokens=2, status=Status.TIMEOUT, claimable=False))
    assert ledger.summary() == {"c": {"measured": 1, "timeout": 2}}


# ---- kill -9 ---------------------------------------------------------------------------------------

_CHILD = """
import sys
from mxmoe.tuning.ledger.store import Ledger
from mxmoe.tuning.ledger.records import Attempt
path, run = sys.argv[1], int(sys.argv[2])
with Ledger.open(path) as led:
    led.add_campaign("kill")
    i = 0
    while True:
        a = Attempt.make(campaign="kill", status="illegal", reason="SMEM", model="tiny", shape={"E": 4},
                         path="a16w4", stage="1", tokens=run * 1_000_000 + i, config={"i": i},
                         config_key="c", kernel_hash="k", device="interpreter", argv=("x",))
        led.record(a)
        print(a.key, flush=True)
        i += 1
"""


def test_kill_minus_nine_loses_at_most_the_row_in_flight(tmp_path):
    db = tmp_path / "kill.sqlite"
    rng = random.Random(708)
    printed: list[str] = []
    kills = 6
    for run in range(kills):
        proc = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(db), str(run)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        first = proc.stdout.readline()  # the child is writing rows
        if not first:
            proc.wait()
            pytest.fail(f"child wrote nothing: {proc.stderr.read()}")
        time.sleep(rng.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL
        lines = (first + proc.stdout.read()).split("\n")
        printed += [ln for ln in lines[:-1] if ln]  # the last piece is '' or a line cut by the kill
        proc.stdout.close()
        proc.stderr.close()
    with Ledger.open(db) as led:
        assert led.execute("PRAGMA integrity_check")[0][0] == "ok"
        keys = led.keys("kill")
        assert led.execute("SELECT COUNT(*) FROM attempts")[0][0] == len(keys)
        assert len(printed) == len(set(printed)) and len(printed) > kills
        assert set(printed) <= keys  # every commit that returned survived
        assert len(keys - set(printed)) <= kills  # at most the one in flight per kill
        assert led.conflicts() == []
