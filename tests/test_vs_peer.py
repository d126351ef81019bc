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
