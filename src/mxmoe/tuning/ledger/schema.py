"""The ledger's on-disk format: the SQL schema as ordered migrations, the version check that refuses a newer file,
and the conversions between table rows and the records (Attempt, Campaign, GuardrailResult).

It exists apart from `store.py` so that the format (what a file holds and how it is read back) sits in one place
below the Ledger class (how rows are written, merged and queried). No torch or triton here. Imported by
`mxmoe.tuning.ledger.store` only (which re-exports the public names); it never imports the ledger.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from mxmoe.tuning.ledger.records import Attempt, GuardrailResult, canonical_json

# Ordered migrations: MIGRATIONS[i] takes a ledger from schema version i to i + 1. They are history:
# never edit one that has shipped; add the next. (A new Status needs one: the CHECK below lists them.)
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE campaigns (
        name TEXT PRIMARY KEY, created_at TEXT NOT NULL, description TEXT NOT NULL DEFAULT '',
        baseline TEXT, argv_json TEXT NOT NULL DEFAULT '[]'
    );
    CREATE TABLE attempts (
        key TEXT PRIMARY KEY,
        campaign TEXT NOT NULL REFERENCES campaigns(name),
        status TEXT NOT NULL CHECK (status IN ('measured', 'illegal', 'compile_error', 'launch_error', 'incorrect',
            'timeout', 'worker_lost', 'unmeasured')), reason TEXT,
        model TEXT NOT NULL, shape_json TEXT NOT NULL, path TEXT NOT NULL,
        stage TEXT NOT NULL CHECK (stage IN ('1', '2', 'layer')), tokens INTEGER NOT NULL,
        routing TEXT NOT NULL, config_json TEXT NOT NULL, config_key TEXT NOT NULL,
        kernel_hash TEXT NOT NULL, device TEXT NOT NULL, device_uuid TEXT,
        median_us REAL, p95_us REAL, ci_lo_us REAL, ci_hi_us REAL, samples_us_json TEXT NOT NULL,
        tflops REAL, roofline_fraction REAL,
        claimable INTEGER NOT NULL CHECK (claimable IN (0, 1)), nonclaimable_reasons_json TEXT NOT NULL,
        provenance_json TEXT NOT NULL, argv_json TEXT NOT NULL, created_at TEXT NOT NULL,
        supersedes TEXT, detail TEXT, result_digest TEXT NOT NULL
    );
    CREATE INDEX attempts_point ON attempts (campaign, model, path, tokens, stage);
    CREATE INDEX attempts_supersedes ON attempts (supersedes);
    CREATE TABLE conflicts (
        id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL, campaign TEXT NOT NULL,
        payload_json TEXT NOT NULL, result_digest TEXT NOT NULL, source TEXT NOT NULL,
        recorded_at TEXT NOT NULL, UNIQUE (key, result_digest)
    );
    CREATE TABLE guardrails (
        key TEXT PRIMARY KEY, campaign TEXT NOT NULL REFERENCES campaigns(name),
        model TEXT NOT NULL, path TEXT NOT NULL, passed INTEGER NOT NULL, payload_json TEXT NOT NULL
    );
    CREATE INDEX guardrails_campaign ON guardrails (campaign);
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)
# Issue 25 nested the five timing columns in `Attempt.timing` (a `timing.value.Timing`) in the Python record only: the
# columns, their values and the result digests are what they were, so it added no migration and no version (a
# version 1 file of before reads as it is: tests/tuning/test_ledger_compat.py). A bump would only make older mxmoe
# refuse files it reads correctly.

_JSON_FIELDS = ("shape", "config", "samples_us", "nonclaimable_reasons", "provenance", "argv")


class LedgerError(RuntimeError):
    """A ledger file that cannot be used as it is (never repaired by clearing it)."""


class SchemaTooNewError(LedgerError):
    """The file was written by a newer mxmoe; upgrading the code is the fix, not clearing the file."""


@dataclass(frozen=True, slots=True)
class Campaign:
    name: str
    created_at: str
    description: str = ""
    baseline: str | None = None
    argv: tuple[str, ...] = ()


def _statements(script: str) -> Iterator[str]:
    """Split a migration into statements, so all of them run inside one transaction
    (`executescript` would commit first)."""
    buf = ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            yield buf.strip()
            buf = ""
    if buf.strip():
        raise ValueError(f"incomplete SQL statement in migration: {buf.strip()[:80]!r}")


def read_schema_version(conn: sqlite3.Connection) -> int:
    """The file's schema version from `meta` (0 for an empty database); LedgerError for a foreign one."""
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "meta" not in tables:
        if tables - {"sqlite_sequence"}:
            raise LedgerError(f"not an mxmoe ledger (tables {sorted(tables)} and no meta table)")
        return 0
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    if row is None:
        raise LedgerError("meta table without schema_version: not an mxmoe ledger, or a damaged one")
    return int(row[0])


def refuse_newer(conn: sqlite3.Connection, target: int, where: str) -> int:
    """The file's schema version; SchemaTooNewError when it is above `target` (the file is left untouched)."""
    current = read_schema_version(conn)
    if current > target:
        raise SchemaTooNewError(
            f"ledger {where} has schema_version {current}; this mxmoe knows up to {target}. "
            "Upgrade mxmoe to read it; the file is left untouched."
        )
    return current


def migrate(conn: sqlite3.Connection, migrations: tuple[str, ...] = MIGRATIONS, where: str = "") -> int:
    """Bring `conn` to len(migrations) in one transaction; refuse a newer schema. Returns the version."""
    target = len(migrations)
    if refuse_newer(conn, target, where) == target:
        return target
    conn.execute("BEGIN IMMEDIATE")
    try:
        current = refuse_newer(conn, target, where)  # re-read under the lock: another writer may have won
        for script in migrations[current:]:
            for stmt in _statements(script):
                conn.execute(stmt)
        conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)", (str(target),))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return target


# ---- rows <-> records ------------------------------------------------------------------------------------------


def attempt_row(a: Attempt) -> dict[str, Any]:
    """The `attempts` columns of one Attempt (JSON fields canonical, plus its result digest)."""
    d = a.to_dict()
    for name in _JSON_FIELDS:
        d[f"{name}_json"] = canonical_json(d.pop(name))
    d["claimable"] = int(a.claimable)
    d["result_digest"] = a.result_digest()
    return d


def attempt_from(row: sqlite3.Row) -> Attempt:
    d = dict(zip(row.keys(), row, strict=True))
    d.pop("result_digest")
    for name in _JSON_FIELDS:
        d[name] = json.loads(d.pop(f"{name}_json"))
    d["claimable"] = bool(d["claimable"])
    return Attempt.from_dict(d)


def campaign_from(r: sqlite3.Row) -> Campaign:
    argv = tuple(json.loads(r["argv_json"]))
    return Campaign(r["name"], r["created_at"], r["description"], r["baseline"], argv)


def guardrail_from(r: sqlite3.Row) -> GuardrailResult:
    return GuardrailResult.from_dict(json.loads(r["payload_json"]))
