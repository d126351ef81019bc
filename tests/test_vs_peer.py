"""benchmarks/vs_peer.py without a GPU: mxmoe alone on the Triton interpreter, tiny shape, rows labelled as no
measurement. The script's own GPU path (and the peer) run only on the device; this checks the CSV it writes."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import pytest
import torch
from bench_script import load

REQUIRED = ("shape", "T", "path", "scope", "mxmoe_us", "peer_us", "ratio", "mxmoe_roofline", "peer_roofline",
            "memory_floor_us", "compute_floor_us", "config", "check", "note", "device", "torch", "triton", "commit")

# With a GPU, main() runs the real benchmark over every model: far too long for the test suite.
pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="the interpreter path runs only without a GPU")



def _rows(folder: Path) -> tuple[Path, list[dict[str, str]]]:
    (found,) = folder.glob("*_vs_peer_*.csv")
    with open(found, newline="", encoding="utf-8") as fh:
        return found, list(csv.DictReader(fh))


def test_interpreter_csv(tmp_path, capsys):
    assert load("vs_peer").main(["--out-dir", str(tmp_path), "--path", "a16w4,a8w4"]) == 0
    found, rows = _rows(tmp_path)
    assert set(REQUIRED) <= set(rows[0])
    assert sorted((int(r["T"]), r["path"]) for r in rows) == [(1, "a16w4"), (1, "a8w4"), (3, "a16w4"), (3, "a8w4")]
    for r in rows:
        assert (r["shape"], r["scope"], r["device"]) == ("tiny", "experts", "interpreter")
        assert r["note"] == "interpreter: not a measurement"
        assert float(r["mxmoe_us"]) > 0 and r["peer_us"] == r["ratio"] == ""
        assert r["config"].count("|") == 1
        assert r["check"].startswith("mxmoe:pass(max_abs=") == (r["T"] == "1")  # --check-tokens 1,128
    assert "NOT A MEASUREMENT" in capsys.readouterr().out
    if importlib.util.find_spec("matplotlib") is not None:
        assert found.with_suffix(".png").stat().st_size > 0


def test_deadline_lists_what_was_not_run(tmp_path, capsys):
    assert load("vs_peer").main(["--out-dir", str(tmp_path), "--deadline-s", "0"]) == 0
    _, rows = _rows(tmp_path)
    assert rows == []
    assert "deadline: 2 points not run: tiny/a16w4/experts/T=1, tiny/a16w4/experts/T=3" in capsys.readouterr().out


def test_device_slug():
    slug = load("vs_peer")._device_slug
    assert slug("NVIDIA H100 80GB HBM3") == "h100"
    assert slug("NVIDIA H200") == "h200"


def test_commit_names_a_tree_that_differs_from_git_as_dirty(tmp_path, monkeypatch):
    """vs_peer's commit column: MXMOE_COMMIT first; else git's short commit, "-dirty" when a tracked file differs
    (the device's stale .git under a newer tree); "nogit" outside a repository."""
    import subprocess

    commit = load("vs_peer")._commit
    monkeypatch.delenv("MXMOE_COMMIT", raising=False)
    assert commit(tmp_path) == "nogit"
    git = lambda *a: subprocess.run(["git", "-C", str(tmp_path), *a], check=True, capture_output=True)  # noqa: E731
    git("init", "-q")
    (tmp_path / "k.py").write_text("a = 1\n")
    git("add", "k.py")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "k")
    clean = commit(tmp_path)
    assert len(clean) >= 7 and not clean.endswith("-dirty")
    (tmp_path / "untracked.txt").write_text("not part of the tree git names\n")
    assert commit(tmp_path) == clean
    (tmp_path / "k.py").write_text("a = 2\n")
    assert commit(tmp_path) == clean + "-dirty"
    monkeypatch.setenv("MXMOE_COMMIT", "0123456789abcdef")
    assert commit(tmp_path) == "0123456"
