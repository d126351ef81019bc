"""The attempt ledger: every candidate's row, in one SQLite file (WAL), written by the driver only.

No torch or triton here. One transaction per row; a key recorded twice with the same result is a
no-op and with a different result goes to `conflicts` (both kept; never an overwrite, REFERENCE.md
shortfall 12). The schema is versioned in `meta`; a ledger newer than this code is refused, never
cleared, and an older one is migrated forward in one transaction. The schema, its migrations and the
row <-> record conversions are `schema.py`'s; this module re-exports the public names.

Durability: `synchronous=FULL`. In WAL mode NORMAL already survives a kill -9 of the writer (the
WAL frames of a returned commit are in the OS page cache), but it may lose the last commits on
power loss or a VM pre-emption. A row costs seconds of GPU time and one fsync costs milliseconds,
so FULL: a commit that returned is on disk, whatever happens to the machine.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import sqlite3
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path as FsPath
from typing import Any, TextIO

from mxmoe.tuning.ledger.records import CSV_LEAD, Attempt, GuardrailResult, canonical_json, csv_rows, utc_now
from mxmoe.tuning.ledger.schema import (
    MIGRATIONS,
    SCHEMA_VERSION,
    Campaign,
    LedgerError,
    SchemaTooNewError,
    attempt_from,
    attempt_row,
    campaign_from,
    guardrail_from,
    migrate,
    read_schema_version,
    refuse_newer,
)

DEFAULT_LEDGER_PATH = FsPath("mxmoe.sqlite")
BUSY_TIMEOUT_MS = 30_000

_INSERT_CONFLICT = (
    "INSERT OR IGNORE INTO conflicts (key, campaign, payload_json, result_digest, source, recorded_at)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)
_FILTERS = ("model", "path", "stage", "tokens", "routing", "status", "config_key", "device", "kernel_hash")


class RecordOutcome(StrEnum):
    ADDED = "added"  # a new key
    IDENTICAL = "identical"  # the key exists with the same result: nothing written
    CONFLICT = "conflict"  # the key exists with a different result: kept in `conflicts`


@dataclass(frozen=True, slots=True)
class Conflict:
    """A row refused from `attempts` because its key was taken by a different result."""

    key: str
    incoming: Attempt
    source: str
    recorded_at: str


@dataclass(frozen=True, slots=True)
class MergeReport:
    added: int
    identical: int
    conflicts: int
    carried_conflicts: int = 0
    campaigns_added: int = 0
    guardrails_added: int = 0


class Ledger:
    """An open ledger file. Use `with Ledger.open(path) as ledger:`; pass it to whoever needs it."""

    __slots__ = ("_conn", "path")

    def __init__(self, conn: sqlite3.Connection, path: str) -> None:
        self._conn = conn
        self.path = path

    @classmethod
    def open(
        cls, path: str | os.PathLike[str] = DEFAULT_LEDGER_PATH, *, migrations: tuple[str, ...] = MIGRATIONS
    ) -> Ledger:
        conn = sqlite3.connect(os.fspath(path), isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
        try:
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            refuse_newer(conn, len(migrations), os.fspath(path))  # before WAL touches the file
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
            migrate(conn, migrations, where=os.fspath(path))
        except BaseException:
            conn.close()
            raise
        return cls(conn, os.fspath(path))

    @classmethod
    def open_readonly(
        cls, path: str | os.PathLike[str] = DEFAULT_LEDGER_PATH, *, migrations: tuple[str, ...] = MIGRATIONS
    ) -> Ledger:
        """Open an existing ledger for reading only (`show`, `scan`, `claim`, `report`, `export`): the file is
        opened `mode=ro`, no pragma changes its journal mode, and nothing is created or migrated on disk.
        A missing, empty, foreign or damaged file is a LedgerError naming the path; an older schema is
        migrated in a copy in memory (as `merge` reads the other file)."""
        where = os.fspath(path)
        if not os.path.exists(where):
            raise LedgerError(f"no ledger at {where}")
        if not os.path.isfile(where):
            raise LedgerError(f"ledger {where} is not a file")
        if os.path.getsize(where) == 0:
            raise LedgerError(f"ledger {where} is an empty file, not an mxmoe ledger")
        # A WAL reader creates -wal and -shm beside the file unless they exist already (a writer is at work) or the
        # file is opened immutable. So: immutable when no sidecar exists (nothing is writing: a clean, closed
        # ledger), plain mode=ro when one does (share the live writer's WAL).
        live = any(os.path.exists(where + tail) for tail in ("-wal", "-shm", "-journal"))
        uri = "file:" + urllib.parse.quote(os.path.abspath(where)) + "?mode=ro" + ("" if live else "&immutable=1")
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
        try:
            conn.row_factory = sqlite3.Row
            try:
                current = read_schema_version(conn)
            except sqlite3.DatabaseError as exc:
                raise LedgerError(f"ledger {where} is not an SQLite database ({exc})") from exc
            except (LedgerError, ValueError) as exc:
                raise LedgerError(f"ledger {where}: {exc}") from exc
            if current == 0:
                raise LedgerError(f"ledger {where} holds no mxmoe schema (an empty SQLite database)")
            refuse_newer(conn, len(migrations), where)
            if current < len(migrations):
                mem = sqlite3.connect(":memory:", isolation_level=None)
                conn.backup(mem)
                conn.close()
                conn = mem
                conn.row_factory = sqlite3.Row
                migrate(conn, migrations, where=where)
            conn.execute("PRAGMA query_only = ON")
        except BaseException:
            conn.close()
            raise
        return cls(conn, where)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        """Read-only escape hatch for scans and reports (PRAGMA integrity_check, ad hoc counts)."""
        return self._conn.execute(sql, params).fetchall()

    @property
    def schema_version(self) -> int:
        return read_schema_version(self._conn)

    # ---- campaigns -------------------------------------------------------------------------------

    def add_campaign(
        self,
        name: str,
        *,
        description: str = "",
        baseline: str | None = None,
        argv: tuple[str, ...] = (),
        created_at: str | None = None,
    ) -> Campaign:
        """Create `name` or return it as it stands; a different baseline for an existing one is an error."""
        if not name:
            raise ValueError("campaign name must be non-empty")
        with self._tx() as c:
            row = c.execute("SELECT * FROM campaigns WHERE name = ?", (name,)).fetchone()
            if row is None:
                c.execute(
                    "INSERT INTO campaigns VALUES (?, ?, ?, ?, ?)",
                    (name, created_at or utc_now(), description, baseline, canonical_json(list(argv))),
                )
                row = c.execute("SELECT * FROM campaigns WHERE name = ?", (name,)).fetchone()
            elif baseline is not None and row["baseline"] not in (None, baseline):
                raise ValueError(f"campaign {name!r} has baseline {row['baseline']!r}, not {baseline!r}")
        return campaign_from(row)

    def campaigns(self) -> list[Campaign]:
        return [campaign_from(r) for r in self._conn.execute("SELECT * FROM campaigns ORDER BY created_at")]

    def require_campaign(self, name: str, *, role: str = "campaign", hint: str = "") -> None:
        """ValueError (one line, naming the campaigns this ledger holds) unless `name` is one of them."""
        known = [c.name for c in self.campaigns()]
        if name not in known:
            held = ", ".join(map(repr, known)) or "no campaign"
            raise ValueError(f"{role} {name!r} does not exist in ledger {self.path}; it holds {held}"
                             + (f" ({hint})" if hint else ""))

    # ---- attempts --------------------------------------------------------------------------------

    def record(self, attempt: Attempt, *, source: str = "record") -> RecordOutcome:
        """Write one row in its own transaction (see RecordOutcome for what happens to a known key)."""
        with self._tx():
            return self._insert(attempt, source)

    def _require_campaign(self, name: str) -> None:
        if self._conn.execute("SELECT 1 FROM campaigns WHERE name = ?", (name,)).fetchone() is None:
            raise ValueError(f"campaign {name!r} does not exist; add_campaign it first")

    def _insert(self, a: Attempt, source: str) -> RecordOutcome:
        c = self._conn
        self._require_campaign(a.campaign)
        row = attempt_row(a)
        old = c.execute("SELECT result_digest FROM attempts WHERE key = ?", (a.key,)).fetchone()
        if old is None:
            marks = ", ".join("?" * len(row))
            c.execute(f"INSERT INTO attempts ({', '.join(row)}) VALUES ({marks})", tuple(row.values()))
            return RecordOutcome.ADDED
        if old["result_digest"] == row["result_digest"]:
            return RecordOutcome.IDENTICAL
        payload = (a.key, a.campaign, canonical_json(a.to_dict()), row["result_digest"], source, utc_now())
        c.execute(_INSERT_CONFLICT, payload)
        return RecordOutcome.CONFLICT

    def has(self, key: str) -> bool:
        return self._conn.execute("SELECT 1 FROM attempts WHERE key = ?", (key,)).fetchone() is not None

    def get(self, key: str) -> Attempt | None:
        row = self._conn.execute("SELECT * FROM attempts WHERE key = ?", (key,)).fetchone()
        return None if row is None else attempt_from(row)

    def keys(self, campaign: str) -> set[str]:
        """Keys recorded in `campaign`: the sweep skips candidates whose key is here."""
        return {r[0] for r in self._conn.execute("SELECT key FROM attempts WHERE campaign = ?", (campaign,))}

    def attempts(self, campaign: str | None = None, **filters: Any) -> list[Attempt]:
        """Rows of `campaign` (all when None), filtered by equality on the columns in _FILTERS."""
        bad = set(filters) - set(_FILTERS)
        if bad:
            raise ValueError(f"unknown attempt filters {sorted(bad)}; known: {list(_FILTERS)}")
        where = {"campaign": campaign} if campaign is not None else {}
        where |= {k: getattr(v, "value", v) for k, v in filters.items()}
        sql = "SELECT * FROM attempts"
        if where:
            sql += " WHERE " + " AND ".join(f"{k} = ?" for k in where)
        sql += " ORDER BY created_at, key"
        return [attempt_from(r) for r in self._conn.execute(sql, tuple(where.values()))]

    def conflicts(self, campaign: str | None = None) -> list[Conflict]:
        sql, args = "SELECT * FROM conflicts", ()
        if campaign is not None:
            sql, args = sql + " WHERE campaign = ?", (campaign,)
        rows = self._conn.execute(sql + " ORDER BY id", args)
        out = []
        for r in rows:
            incoming = Attempt.from_dict(json.loads(r["payload_json"]))
            out.append(Conflict(r["key"], incoming, r["source"], r["recorded_at"]))
        return out

    # ---- guardrails ------------------------------------------------------------------------------

    def record_guardrail(self, result: GuardrailResult) -> RecordOutcome:
        with self._tx():
            return self._insert_guardrail(result)

    def _insert_guardrail(self, g: GuardrailResult) -> RecordOutcome:
        c = self._conn
        self._require_campaign(g.campaign)
        row = (g.key(), g.campaign, g.model, g.path, int(g.passed), canonical_json(g.to_dict()))
        cur = c.execute("INSERT OR IGNORE INTO guardrails VALUES (?, ?, ?, ?, ?, ?)", row)
        return RecordOutcome.ADDED if cur.rowcount else RecordOutcome.IDENTICAL

    def guardrails(self, campaign: str) -> list[GuardrailResult]:
        sql = "SELECT * FROM guardrails WHERE campaign = ? ORDER BY rowid"
        rows = self._conn.execute(sql, (campaign,))
        return [guardrail_from(r) for r in rows]

    # ---- merge, export, summary ------------------------------------------------------------------

    def merge(self, other_path: str | os.PathLike[str]) -> MergeReport:
        """Bring in a ledger written elsewhere, in one transaction. The other file is only read (`open_readonly`:
        an older ledger is migrated in a copy in memory, so it merges without being rewritten)."""
        other_path = os.fspath(other_path)
        if os.path.realpath(other_path) == os.path.realpath(self.path):
            raise ValueError(f"cannot merge ledger {other_path!r} into itself")
        if not os.path.exists(other_path):
            raise ValueError(f"ledger to merge {other_path!r} does not exist")
        with Ledger.open_readonly(other_path) as other:  # migrated in memory when older; the file is only read
            return self._merge_from(other._conn, f"merge:{other_path}")

    def _merge_from(self, other: sqlite3.Connection, source: str) -> MergeReport:
        counts = {f: 0 for f in MergeReport.__dataclass_fields__}
        tally = {
            RecordOutcome.ADDED: "added",
            RecordOutcome.IDENTICAL: "identical",
            RecordOutcome.CONFLICT: "conflicts",
        }
        with self._tx() as c:
            for r in other.execute("SELECT * FROM campaigns"):
                cur = c.execute("INSERT OR IGNORE INTO campaigns VALUES (?, ?, ?, ?, ?)", tuple(r))
                counts["campaigns_added"] += cur.rowcount
            for r in other.execute("SELECT * FROM attempts ORDER BY created_at, key"):
                counts[tally[self._insert(attempt_from(r), source)]] += 1
            for r in other.execute("SELECT * FROM guardrails"):
                counts["guardrails_added"] += self._insert_guardrail(guardrail_from(r)) is RecordOutcome.ADDED
            for r in other.execute("SELECT * FROM conflicts ORDER BY id"):
                cols = ("key", "campaign", "payload_json", "result_digest", "source", "recorded_at")
                counts["carried_conflicts"] += c.execute(_INSERT_CONFLICT, tuple(r[k] for k in cols)).rowcount
        return MergeReport(**counts)

    def export_csv(self, dest: str | os.PathLike[str] | TextIO, campaign: str | None = None) -> int:
        """One row per attempt; returns the row count. See `csv_rows` for the columns."""
        rows = csv_rows(self.attempts(campaign))
        header = list(dict.fromkeys(k for r in rows for k in r)) or list(CSV_LEAD)
        if isinstance(dest, str | os.PathLike):
            with open(dest, "w", newline="", encoding="utf-8") as fh:
                return _write_csv(fh, header, rows)
        return _write_csv(dest, header, rows)

    def summary(self) -> dict[str, dict[str, int]]:
        """{campaign: {status: count}}, for `mxmoe show`."""
        out: dict[str, dict[str, int]] = {}
        sql = "SELECT campaign, status, COUNT(*) FROM attempts GROUP BY 1, 2 ORDER BY 1, 2"
        for r in self._conn.execute(sql):
            out.setdefault(r[0], {})[r[1]] = r[2]
        return out


def _write_csv(fh: TextIO, header: list[str], rows: list[dict[str, Any]]) -> int:
    writer = csv.DictWriter(fh, fieldnames=header)
    writer.writeheader()
    writer.writerows(rows)
    return len(rows)


__all__ = ["BUSY_TIMEOUT_MS", "DEFAULT_LEDGER_PATH", "MIGRATIONS", "SCHEMA_VERSION", "Campaign", "Conflict", "Ledger",
           "LedgerError", "MergeReport", "RecordOutcome", "SchemaTooNewError", "migrate"]
