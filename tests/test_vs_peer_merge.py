"""benchmarks/vs_peer_merge.py (CPU): the grid's parts become one CSV, ordered as MODELS, and what would make the
merged grid wrong (a point twice, other columns, other devices or commits) is refused."""

from __future__ import annotations

import csv

import pytest
from bench_script import BENCHMARKS, load

HEAD = ("shape", "T", "path", "scope", "mxmoe_us", "peer_us", "ratio", "device", "commit")


def _row(shape, t, ratio="1.1", device="H100", commit="aaaaaaa"):
    return dict(zip(HEAD, (shape, str(t), "a16w4", "experts", "10.0", "11.0", ratio, device, commit), strict=True))


@pytest.fixture
def merger(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # it imports vs_peer's plot, as when run from benchmarks/
    return load("vs_peer_merge")


def test_parts_become_one_grid_in_models_order(merger, tmp_path):
    a = [_row("kimi-k2", 16), _row("gpt-oss-20b", 4096)]
    b = [_row("gpt-oss-20b", 1), _row("kimi-k2", 1)]
    rows = merger.merge([a, b])
    assert [(r["shape"], r["T"]) for r in rows] == [("gpt-oss-20b", "1"), ("gpt-oss-20b", "4096"), ("kimi-k2", "1"),
                                                   ("kimi-k2", "16")]
    paths = []
    for i, part in enumerate((a, b)):
        paths.append(tmp_path / f"p{i}.csv")
        with open(paths[-1], "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=HEAD)
            w.writeheader()
            w.writerows(part)
    out = tmp_path / "merged.csv"
    merger.main([*map(str, paths), "-o", str(out), "--commit", "bbbbbbb"])
    with open(out, newline="") as f:
        got = list(csv.DictReader(f))
    assert len(got) == 4 and {r["commit"] for r in got} == {"bbbbbbb"}


def test_refusals(merger):
    with pytest.raises(SystemExit, match="more than one part"):
        merger.merge([[_row("kimi-k2", 1)], [_row("kimi-k2", 1, ratio="1.2")]])
    with pytest.raises(SystemExit, match="different devices"):
        merger.merge([[_row("kimi-k2", 1)], [_row("kimi-k2", 2, device="H200")]])
    with pytest.raises(SystemExit, match="different commits"):
        merger.merge([[_row("kimi-k2", 1)], [_row("kimi-k2", 2, commit="ccccccc")]])
    assert len(merger.merge([[_row("kimi-k2", 1)], [_row("kimi-k2", 2, commit="ccccccc")]], commit="ddddddd")) == 2
    other = {k: v for k, v in _row("kimi-k2", 2).items() if k != "device"}
    with pytest.raises(SystemExit, match="columns differ"):
        merger.merge([[_row("kimi-k2", 1)], [other]])
