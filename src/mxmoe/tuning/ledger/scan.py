"""Integrity scans over the ledger: what must hold before any row is used in a claim.

No torch or triton here. Each finding is a typed value; `gate.claimable_win` refuses a claim when
the scan of either campaign finds anything. The checks answer the reference harness's scans
(REFERENCE.md) and its shortfall 12:

- one key recorded with two different results (the ledger's `conflicts` table);
- a stored key that is not the hash of its row's key material (hand edits, or a key bug);
- supersede links that point nowhere, point at a different probe, or loop;
- two active (not superseded) rows for the same probe: a probe is the key material less
  `kernel_hash` and `supersedes` (`Attempt.probe`), so a re-measurement after a kernel change or a
  retry must supersede the row it replaces, or the campaign holds two answers to one question;
- rows missing a field of REQUIRED_PROVENANCE.

`replay` re-runs a row's stored command as an argv list, never through a shell.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from mxmoe.tuning.ledger.records import PROBE_FIELDS, Attempt, active
from mxmoe.tuning.ledger.store import Ledger

# Fields every row must carry, whatever its status (the reference refused records missing any).
# Looked up on the Attempt first, then in its provenance dict.
REQUIRED_PROVENANCE = ("git_commit", "kernel_hash", "device", "argv", "created_at")


class Code(StrEnum):
    """What a finding is about."""

    CONFLICT = "conflict"  # one key recorded with two different results
    KEY_MISMATCH = "key_mismatch"  # the stored key is not the hash of the row's key material
    SUPERSEDE_DANGLING = "supersede_dangling"  # `supersedes` names a key the ledger does not hold
    SUPERSEDE_CROSS = "supersede_cross"  # the superseded row answers a different probe
    SUPERSEDE_CYCLE = "supersede_cycle"  # following `supersedes` comes back to where it started
    DUPLICATE_ACTIVE = "duplicate_active"  # two rows answer one probe and neither supersedes the other
    MISSING_PROVENANCE = "missing_provenance"  # a REQUIRED_PROVENANCE field is absent or empty


@dataclass(frozen=True, slots=True)
class Finding:
    code: Code
    key: str
    detail: str

    def __str__(self) -> str:
        return f"{self.code.value}:{self.key}:{self.detail}"


def scan(ledger: Ledger, campaign: str | None = None, *, rows: Sequence[Attempt] | None = None) -> list[Finding]:
    """Every finding for `campaign` (the whole ledger when None), in a stable order. `rows`: the campaign's rows
    when the caller has read them already (`ledger.attempts(campaign)`, as here otherwise)."""
    rows = ledger.attempts(campaign) if rows is None else rows
    findings = [
        Finding(Code.CONFLICT, c.key, f"incoming {c.incoming.status_text} from {c.source}")
        for c in ledger.conflicts(campaign)
    ]
    findings += [
        Finding(Code.KEY_MISMATCH, r.key, f"fields hash to {r.computed_key()}")
        for r in rows
        if r.computed_key() != r.key
    ]
    findings += _supersede_findings(ledger, rows)
    findings += _duplicate_findings(rows)
    findings += _provenance_findings(rows)
    return findings


def _probe_diff(a: Attempt, b: Attempt) -> str:
    return ",".join(n for n, x, y in zip(PROBE_FIELDS, a.probe, b.probe, strict=True) if x != y)


def _supersede_findings(ledger: Ledger, rows: Sequence[Attempt]) -> list[Finding]:
    by_key = {r.key: r for r in rows}

    def lookup(key: str) -> Attempt | None:
        return by_key[key] if key in by_key else ledger.get(key)

    findings: list[Finding] = []
    cycles_seen: set[frozenset[str]] = set()
    for r in rows:
        if r.supersedes is None:
            continue
        target = lookup(r.supersedes)
        if target is None:
            findings.append(Finding(Code.SUPERSEDE_DANGLING, r.key, f"supersedes missing row {r.supersedes}"))
            continue
        if target.probe != r.probe:
            detail = f"supersedes {target.key}, a different probe ({_probe_diff(r, target)} differ)"
            findings.append(Finding(Code.SUPERSEDE_CROSS, r.key, detail))
        chain = [r.key]
        cur: Attempt | None = target
        while cur is not None and cur.key not in chain:
            chain.append(cur.key)
            cur = lookup(cur.supersedes) if cur.supersedes else None
        if cur is not None:  # came back to a key already on the chain
            loop = frozenset(chain[chain.index(cur.key) :])
            if loop not in cycles_seen:
                cycles_seen.add(loop)
                detail = "loop through " + ",".join(sorted(loop))
                findings.append(Finding(Code.SUPERSEDE_CYCLE, min(loop), detail))
    return findings


def _duplicate_findings(rows: Sequence[Attempt]) -> list[Finding]:
    groups: dict[tuple[Any, ...], list[Attempt]] = {}
    for r in active(rows):
        groups.setdefault(r.probe, []).append(r)
    findings = []
    for group in groups.values():
        if len(group) > 1:
            keys = sorted(r.key for r in group)
            detail = f"{len(group)} active rows for one probe: {','.join(keys)}"
            findings.append(Finding(Code.DUPLICATE_ACTIVE, keys[0], detail))
    return findings


def _provenance_findings(rows: Sequence[Attempt]) -> list[Finding]:
    findings = []
    for r in rows:
        missing = [
            name
            for name in REQUIRED_PROVENANCE
            if getattr(r, name, None) in (None, "", ()) and r.provenance.get(name) in (None, "", [], ())
        ]
        if missing:
            findings.append(Finding(Code.MISSING_PROVENANCE, r.key, "missing " + ",".join(missing)))
    return findings


def replay_command(attempt: Attempt) -> list[str]:
    """The stored command of a row, as the argv list it ran with."""
    if not attempt.argv:
        raise ValueError(f"row {attempt.key} stores no argv: it cannot be replayed")
    return list(attempt.argv)


def replay(
    attempt: Attempt,
    runner: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run,
    **kwargs: Any,
) -> subprocess.CompletedProcess[str]:
    """Re-run a row's command (argv list, no shell) and return the completed process.

    `runner` is injectable so tests and dry runs need not spawn anything; `kwargs` (cwd, env,
    timeout) go to it unchanged.
    """
    if kwargs.get("shell"):
        raise ValueError("replay never runs through a shell: the argv list is the command")
    return runner(replay_command(attempt), capture_output=True, text=True, check=False, **kwargs)
