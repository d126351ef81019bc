"""Export: the best claimable measured layer row per T becomes a dispatch table; dispatch reads it back.

Oracle: hand-made ledger rows with known medians (the lowest claimable median per T must win), and,
end to end, an interpreter sweep whose exported table `dispatch.choose_config` must return entry for
entry, with the next-grid-point-up rule between grid points.
"""

from __future__ import annotations

import csv
import json

import pytest

from mxmoe.config import MoEConfig, TileConfig
from mxmoe.dispatch import choose_config, clear_cache, running_versions, table_filename
from mxmoe.shapes import MODELS, Path
from mxmoe.tuning.judge.export import ExportError, export_tables
from mxmoe.tuning.ledger.records import Attempt, Status
from mxmoe.tuning.ledger.store import Ledger
from mxmoe.tuning.sweep.driver import SweepSpec, run_sweep
from mxmoe.tuning.sweep.executors import InlineExecutor, WorkerConfig
from mxmoe.tuning.timing.value import Timing

GPU = "NVIDIA H100 80GB HBM3"
DSV3 = MODELS["deepseek-v3"]
TRITON, KHASH = running_versions()
CFGS = [MoEConfig(TileConfig(block_m=m), TileConfig(block_m=m, num_warps=w)) for m in (16, 32) for w in (4, 8)]


def row(tokens: int, cfg: MoEConfig, median: float, *, claimable: bool = True, status: Status = Status.MEASURED,
        kernel_hash: str = KHASH, supersedes: str | None = None, campaign: str = "c",
        routing: str = "uniform") -> Attempt:
    timing = Timing(median_us=median, ci_lo_us=median * 0.99, ci_hi_us=median * 1.01, samples_us=(median,))
    return Attempt.make(
        campaign=campaign, status=status, model=DSV3.name, shape=DSV3.to_dict(), path="a16w4", stage="layer",
        routing=routing, tokens=tokens, config=cfg.to_dict(), config_key=cfg.key(), kernel_hash=kernel_hash, device=GPU,
        claimable=claimable, nonclaimable_reasons=() if claimable or status is not Status.MEASURED
        else ("busy:utilization",),
        provenance={"git_commit": "a" * 40, "triton_version": TRITON}, argv=("mxmoe", "sweep"),
        supersedes=supersedes, timing=timing if status is Status.MEASURED else None)


@pytest.fixture
def ledger(tmp_path):
    with Ledger.open(tmp_path / "l.sqlite") as led:
        led.add_campaign("c")
        yield led


def test_best_claimable_row_per_t_becomes_the_table(ledger, tmp_path):
    old = row(1, CFGS[3], 1.0)
    for r in (row(1, CFGS[0], 10.0), row(1, CFGS[1], 9.0), row(1, CFGS[2], 5.0, claimable=False),
              row(16, CFGS[2], 20.0), row(16, CFGS[3], 25.0),
              row(16, CFGS[0], 1.0, status=Status.INCORRECT, claimable=False),
              old, row(1, CFGS[3], 11.0, supersedes=old.key)):  # the superseded 1.0 us row is out
        ledger.record(r)
    (table,) = export_tables(ledger, "c", tmp_path / "tuned", ledger_export=tmp_path / "c.csv")
    assert table.file.name == "E=256,N=2048,H=7168,topk=8,path=a16w4,device_name=NVIDIA_H100_80GB_HBM3.json"
    assert table.file.name == table_filename(DSV3, Path.A16W4, GPU) and table.tokens == (1, 16) and table.claimable
    data = json.loads(table.file.read_text())
    assert MoEConfig.from_dict(data["1"]) == CFGS[1] and MoEConfig.from_dict(data["16"]) == CFGS[2]
    meta = data["_metadata"]
    assert meta["kernel_source_hash"] == KHASH and meta["triton_version"] == TRITON and meta["claimable"] is True
    assert meta["git_commit"] == "a" * 40 and meta["campaign"] == "c"
    assert meta["ledger_export"] == str(tmp_path / "c.csv")
    assert meta["median_us"] == {"1": 9.0, "16": 20.0} and meta["created_at"] and meta["mxmoe_version"]
    with open(tmp_path / "c.csv", newline="") as fh:
        assert len(list(csv.DictReader(fh))) == 8


def test_with_the_baseline_a_table_departs_from_it_only_where_a_win_was_proven(ledger, tmp_path):
    """T=1: CFGS[1] 20% faster than the baseline's CFGS[0], CIs apart: a win, so it ships. T=16: CFGS[2] 0.5%
    faster than the campaign's own re-measure of CFGS[0] (neutral under the gate): the baseline's config ships,
    from the campaign's row. T=128: the campaign never re-measured the baseline config: the fastest row stays."""
    ledger.add_campaign("b")
    for t, m in ((1, 10.0), (16, 20.0), (128, 40.0)):
        ledger.record(row(t, CFGS[0], m, campaign="b"))
    for r in (row(1, CFGS[0], 10.0), row(1, CFGS[1], 8.0), row(16, CFGS[0], 20.0), row(16, CFGS[2], 19.9),
              row(128, CFGS[3], 39.9)):
        ledger.record(r)
    (plain,) = export_tables(ledger, "c", tmp_path / "plain")
    (kept,) = export_tables(ledger, "c", tmp_path / "kept", baseline="b")
    plain_data, kept_data = (json.loads(t.file.read_text()) for t in (plain, kept))
    assert [MoEConfig.from_dict(plain_data[t]) for t in ("1", "16", "128")] == [CFGS[1], CFGS[2], CFGS[3]]
    assert [MoEConfig.from_dict(kept_data[t]) for t in ("1", "16", "128")] == [CFGS[1], CFGS[0], CFGS[3]]
    meta = kept_data["_metadata"]
    assert meta["baseline"] == "b" and plain_data["_metadata"]["baseline"] is None
    assert meta["median_us"] == {"1": 8.0, "16": 20.0, "128": 39.9}
    campaign_keys = {r.key for r in ledger.attempts("c")}
    assert set(meta["rows"].values()) <= campaign_keys  # every entry traces to a row of the campaign's export


def test_robust_over_a_second_routing_a_table_never_takes_a_config_that_loses_under_it(ledger, tmp_path):
    """Baseline CFGS[0] at T=4, 8, 16 under uniform and skewed. T=4: CFGS[1] is 20% faster under skewed and even
    under uniform (neutral): it ships. T=8: CFGS[2] wins 30% under skewed but is 5% slower under uniform (a
    regression): the baseline's config ships. T=16: CFGS[3] wins under uniform but the campaign never measured it
    under skewed: it ships only in the uniform-only table. Oracle: the gate's band by hand (CIs +-1%)."""
    ledger.add_campaign("b")
    for routing in ("uniform", "skewed"):
        for t in (4, 8, 16):
            ledger.record(row(t, CFGS[0], 100.0, campaign="b", routing=routing))
            ledger.record(row(t, CFGS[0], 100.0, routing=routing))
    for t, cfg, uniform, skewed in ((4, CFGS[1], 99.9, 80.0), (8, CFGS[2], 105.0, 70.0), (16, CFGS[3], 80.0, None)):
        ledger.record(row(t, cfg, uniform))
        if skewed is not None:
            ledger.record(row(t, cfg, skewed, routing="skewed"))
    (plain,) = export_tables(ledger, "c", tmp_path / "plain", baseline="b")
    (robust,) = export_tables(ledger, "c", tmp_path / "robust", baseline="b", robust_over=["skewed"])
    plain_data, robust_data = (json.loads(t.file.read_text()) for t in (plain, robust))
    assert [MoEConfig.from_dict(plain_data[t]) for t in ("4", "8", "16")] == [CFGS[0], CFGS[0], CFGS[3]]
    assert [MoEConfig.from_dict(robust_data[t]) for t in ("4", "8", "16")] == [CFGS[1], CFGS[0], CFGS[0]]
    meta = robust_data["_metadata"]
    assert meta["robust_over"] == ["skewed"] and meta["routing"] == "uniform" and "robust_over" not in plain_data[
        "_metadata"]
    assert meta["median_us"] == {"4": 99.9, "8": 100.0, "16": 100.0}  # the uniform rows' timings
    with pytest.raises(ExportError, match="baseline"):
        export_tables(ledger, "c", tmp_path / "x", robust_over=["skewed"])


def test_nonclaimable_rows_are_refused_unless_allowed(ledger, tmp_path):
    ledger.record(row(1, CFGS[0], 3.0, claimable=False))
    with pytest.raises(ExportError, match="--allow-nonclaimable"):
        export_tables(ledger, "c", tmp_path)
    (table,) = export_tables(ledger, "c", tmp_path, allow_nonclaimable=True)
    meta = json.loads(table.file.read_text())["_metadata"]
    assert not table.claimable and meta["claimable"] is False and meta["nonclaimable"] is True
    assert meta["nonclaimable_reasons"] == ["busy:utilization"]


def test_one_table_needs_one_kernel_source(ledger, tmp_path):
    ledger.record(row(1, CFGS[0], 3.0))
    ledger.record(row(16, CFGS[0], 3.0, kernel_hash="b" * 64))
    with pytest.raises(ExportError, match="kernel_hash"):
        export_tables(ledger, "c", tmp_path)
    with pytest.raises(ExportError, match="no measured layer rows"):
        export_tables(ledger, "nope", tmp_path)


def test_sweep_export_dispatch_round_trip(tmp_path, monkeypatch):
    t1 = TileConfig(block_k=64)
    space = {1: (t1, t1.replace(num_warps=2)), 2: (t1, t1.replace(num_warps=2))}
    s = SweepSpec("tiny", Path.A16W4, (1, 16), "rt", limit=2, argv=("pytest",))
    with Ledger.open(tmp_path / "l.sqlite") as led:
        run_sweep(s, led, InlineExecutor(WorkerConfig("tiny", "a16w4")), spaces=space)
        with pytest.raises(ExportError, match="claimable"):
            export_tables(led, "rt", tmp_path / "tuned")
        (table,) = export_tables(led, "rt", tmp_path / "tuned", allow_nonclaimable=True)
        best = {t: min((r for r in led.attempts("rt", stage="layer", tokens=t)), key=lambda r: r.timing.median_us)
                for t in (1, 16)}
    assert table.file.name == table_filename(MODELS["tiny"], Path.A16W4, "interpreter")
    monkeypatch.setenv("MXMOE_CONFIG_DIR", str(tmp_path / "tuned"))
    clear_cache()  # dispatch reads the variable once; kernels/ may have been edited since this process hashed it
    try:
        for live, bucket in ((1, 1), (2, 16), (16, 16), (500, 16)):
            assert choose_config(MODELS["tiny"], Path.A16W4, live).to_dict() == best[bucket].config
    finally:
        monkeypatch.undo()
        clear_cache()  # later tests in this process see the folder gone


def test_only_exports_the_named_model_path_pairs(ledger, tmp_path):
    ledger.record(row(1, CFGS[0], 10.0))
    assert [t.model for t in export_tables(ledger, "c", tmp_path / "a", only={(DSV3.name, "a16w4")})] == [DSV3.name]
    with pytest.raises(ExportError, match="no measured layer rows"):
        export_tables(ledger, "c", tmp_path / "b", only={(DSV3.name, "a8w4")})
