"""Integrity scans. Oracle: hand-built ledgers with exactly one defect each; a clean ledger finds nothing."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mxmoe.config import TileConfig
from mxmoe.shapes import MODELS
from mxmoe.tuning.ledger.records import Attempt, Status
from mxmoe.tuning.ledger.scan import REQUIRED_PROVENANCE, Code, replay, replay_command, scan
from mxmoe.tuning.ledger.store import Ledger

CFG = TileConfig()


def make(**kw) -> Attempt:
    """An `illegal` stage-1 row of `tiny` in campaign `c` with full provenance; override any field."""
    fields = dict(
        campaign="c",
        status=Status.ILLEGAL,
        reason="SMEM",
        model="tiny",
        shape=MODELS["tiny"].to_dict(),
        path="a16w4",
        stage="1",
        tokens=16,
        config=CFG.to_dict(),
        config_key=CFG.key(),
        kernel_hash="kh1",
        device="NVIDIA H100 80GB HBM3",
        provenance={"git_commit": "abc123"},
        argv=("mxmoe", "sweep"),
        created_at="2025-01-01T00:00:00+00:00",
    )
    fields.update(kw)
    return Attempt.make(**fields)


def with_key(a: Attempt, key: str, **changes) -> Attempt:
    """A row whose stored key is forced (what a hand edit or a key bug would leave)."""
    return Attempt.from_dict(a.to_dict() | {"key": key} | changes)


@pytest.fixture
def ledger(tmp_path):
    with Ledger.open(tmp_path / "s.sqlite") as led:
        led.add_campaign("c")
        led.add_campaign("d")
        yield led


def codes(findings) -> list[Code]:
    return [f.code for f in findings]


def test_clean_ledger_has_no_findings(ledger):
    a = make()
    ledger.record(a)
    ledger.record(make(tokens=32))
    ledger.record(make(kernel_hash="kh2", supersedes=a.key))  # a proper re-measurement after a kernel change
    assert scan(ledger) == [] and scan(ledger, "c") == []


def test_conflict_is_found(ledger):
    a = make()
    ledger.record(a)
    ledger.record(Attempt.from_dict(a.to_dict() | {"reason": "REGS"}))
    [f] = scan(ledger, "c")
    assert (f.code, f.key) == (Code.CONFLICT, a.key) and "illegal:REGS" in f.detail
    assert str(f).startswith(f"conflict:{a.key}:")
    assert scan(ledger, "d") == []


def test_dangling_supersede(ledger):
    b = make(supersedes="0" * 32)
    ledger.record(b)
    [f] = scan(ledger, "c")
    assert (f.code, f.key) == (Code.SUPERSEDE_DANGLING, b.key)


def test_cross_key_supersede(ledger):
    a = make(tokens=32)
    b = make(kernel_hash="kh2", supersedes=a.key)  # T=16 cannot replace a T=32 row
    ledger.record(a)
    ledger.record(b)
    [f] = scan(ledger, "c")
    assert (f.code, f.key) == (Code.SUPERSEDE_CROSS, b.key) and "tokens" in f.detail


def test_cross_campaign_supersede(ledger):
    a = make(campaign="d")
    b = make(supersedes=a.key)
    ledger.record(a)
    ledger.record(b)
    assert codes(scan(ledger, "c")) == [Code.SUPERSEDE_CROSS]


def test_supersede_cycle(ledger):
    a, b = make(), make(kernel_hash="kh2")
    ledger.record(with_key(a, "ka", supersedes="kb"))
    ledger.record(with_key(b, "kb", supersedes="ka"))
    ledger.record(with_key(make(tokens=8), "kc", supersedes="kc"))  # a row that supersedes itself
    findings = scan(ledger, "c")
    cycles = [f for f in findings if f.code is Code.SUPERSEDE_CYCLE]
    assert [(f.key, f.detail) for f in cycles] == [("ka", "loop through ka,kb"), ("kc", "loop through kc")]
    assert sorted(f.key for f in findings if f.code is Code.KEY_MISMATCH) == ["ka", "kb", "kc"]


def test_two_active_rows_for_one_probe(ledger):
    a, b = make(), make(kernel_hash="kh2")  # re-measured after a kernel change, without superseding
    ledger.record(a)
    ledger.record(b)
    [f] = scan(ledger, "c")
    assert f.code is Code.DUPLICATE_ACTIVE and a.key in f.detail and b.key in f.detail
    ledger.record(make(kernel_hash="kh3", supersedes=a.key))  # supersedes one, still two active
    assert codes(scan(ledger, "c")) == [Code.DUPLICATE_ACTIVE]


def test_missing_provenance(ledger):
    ok = make()
    bare = make(tokens=32, provenance={}, argv=(), kernel_hash="")
    ledger.record(ok)
    ledger.record(bare)
    [f] = scan(ledger, "c")
    assert (f.code, f.key, f.detail) == (Code.MISSING_PROVENANCE, bare.key, "missing git_commit,kernel_hash,argv")
    assert {"git_commit", "kernel_hash", "device", "argv", "created_at"} <= set(REQUIRED_PROVENANCE)


def test_key_mismatch(ledger):
    ledger.record(with_key(make(), "not-the-hash"))
    [f] = scan(ledger, "c")
    assert (f.code, f.key) == (Code.KEY_MISMATCH, "not-the-hash")


def test_replay_runs_the_argv_list_through_the_runner():
    calls = []

    def runner(cmd, **kwargs):
        calls.append((cmd, kwargs))
        return subprocess.CompletedProcess(cmd, 0, stdout="ok", stderr="")

    a = make(argv=("mxmoe", "sweep", "--tokens", "1,16", "a b; rm -rf /"))
    assert replay_command(a) == ["mxmoe", "sweep", "--tokens", "1,16", "a b; rm -rf /"]
    done = replay(a, runner=runner, cwd="/tmp")
    assert done.stdout == "ok"
    [(cmd, kwargs)] = calls
    assert cmd == list(a.argv) and kwargs["cwd"] == "/tmp" and not kwargs.get("shell")
    with pytest.raises(ValueError, match="shell"):
        replay(a, runner=runner, shell=True)
    with pytest.raises(ValueError, match="no argv"):
        replay_command(make(argv=()))


def test_replay_with_the_real_runner():
    a = make(argv=(sys.executable, "-c", "import sys; print(sys.argv[1:])", "x y"))
    done = replay(a)
    assert done.returncode == 0 and done.stdout.strip() == "['x y']"
