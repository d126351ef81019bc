"""A ledger written before the timing was nested (issue 25) still reads, compares and merges.

Oracle: `data/ledger_v1_8596078.sqlite`, written by `Ledger` at 8596078 (schema version 1), then repacked by
sqlite3 (journal_mode=DELETE, page_size=512, VACUUM: 12 KiB, same schema and rows). It holds, in campaign `old`:
a measured layer row (median 10.0 us, CI [9.75, 10.25], p95 11.5, samples 9.5 / 10.0 / 10.5 / 11.5), a timeout row
without a timing, and a conflict (the measured row's key with median 10.1, CI hi 10.3). The stored `result_digest`
columns are that version's digests. Nesting `Timing` in `Attempt` changed no column and no digest, so the schema
version stays 1 and no migration runs: the old file is the current format.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from mxmoe.tuning.ledger.records import Status
from mxmoe.tuning.ledger.store import SCHEMA_VERSION, Ledger, RecordOutcome
from mxmoe.tuning.timing.value import Timing

FIXTURE = Path(__file__).parent / "data" / "ledger_v1_8596078.sqlite"
MEASURED_KEY, TIMEOUT_KEY = "f90c7e56b865158240099c99cc8a8890", "9a3aff02c6fc204bdd5689277f784a61"


@pytest.fixture
def old_ledger(tmp_path):
    """A copy of the fixture: opening for writing turns on WAL and must never touch the committed file."""
    return Path(shutil.copy(FIXTURE, tmp_path / "old.sqlite"))


def _stored_digests(path: Path) -> dict[str, str]:
    with sqlite3.connect(path) as conn:
        return dict(conn.execute("SELECT key, result_digest FROM attempts"))


def _check_rows(led: Ledger, digests: dict[str, str]) -> None:
    measured, timeout = led.get(MEASURED_KEY), led.get(TIMEOUT_KEY)
    assert measured.timing == Timing(median_us=10.0, ci_lo_us=9.75, ci_hi_us=10.25, p95_us=11.5,
                                     samples_us=(9.5, 10.0, 10.5, 11.5))
    assert measured.status is Status.MEASURED and measured.tflops == 1.5
    assert timeout.status is Status.TIMEOUT and timeout.timing is None and timeout.stats() is None
    # the digests the old code stored are those this code computes: a re-record is identical, never a conflict
    assert {a.key: a.result_digest() for a in (measured, timeout)} == digests
    assert measured.computed_key() == MEASURED_KEY and timeout.computed_key() == TIMEOUT_KEY
    [conflict] = led.conflicts("old")
    assert conflict.incoming.timing == Timing(median_us=10.1, ci_lo_us=9.75, ci_hi_us=10.3, p95_us=11.5,
                                              samples_us=(9.5, 10.0, 10.5, 11.5))


def test_an_old_ledger_reads_read_only_without_migration(old_ledger):
    before = old_ledger.read_bytes()
    with Ledger.open_readonly(old_ledger) as led:
        assert SCHEMA_VERSION == 1 and led.schema_version == 1  # same format: nothing to migrate
        _check_rows(led, _stored_digests(FIXTURE))
    assert old_ledger.read_bytes() == before


def test_an_old_ledger_opens_for_writing_and_takes_its_rows_back_as_identical(old_ledger):
    with Ledger.open(old_ledger) as led:
        assert led.schema_version == 1
        _check_rows(led, _stored_digests(FIXTURE))
        for key in (MEASURED_KEY, TIMEOUT_KEY):
            assert led.record(led.get(key)) is RecordOutcome.IDENTICAL
        assert len(led.conflicts("old")) == 1


def test_an_old_ledger_merges_into_a_new_one(old_ledger, tmp_path):
    with Ledger.open(tmp_path / "new.sqlite") as new:
        report = new.merge(old_ledger)
        assert (report.added, report.conflicts, report.carried_conflicts) == (2, 0, 1)
        _check_rows(new, _stored_digests(FIXTURE))
        assert new.merge(old_ledger).identical == 2  # the digests agree across the two files
