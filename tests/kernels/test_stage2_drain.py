"""rules.STAGE2_DRAIN, compiled for sm_90 on the CPU by benchmarks/wgmma_hazard.py in a fresh interpreter.

Without the drain, Triton 3.6 leaves 3 of the sorted stage 2's 4 k16 wgmma groups in flight at the K loop's back
edge, their A fragments in registers the loop top may overwrite (docs/architecture.md, "Known hazard"); with it,
the last wait of every K loop waits for all of them. Whether the drain is worth its cost is a GPU measurement
(rule_ab); this checks that it does what it is for, and that without it the exposure the check looks for is there
(so the check can fail). Under the interpreter the drain is not emitted; the stage's result there is the
interpreter twin's, checked elsewhere (test_wgmma.py)."""

from __future__ import annotations

import json

import pytest
from bench_script import BENCHMARKS

from mxmoe.config import Combine, Mma, TileConfig
from mxmoe.kernels import rules

# gpt-oss-20b T=256: the heuristic's stage 2 is M64N128K64 w4 (BLOCK_K 64: 4 k16 groups a step), one warpgroup, so
# the two compiles take about a minute on 2 cores.
POINT = "gpt-oss-20b:256"


def test_drain_leaves_no_wgmma_in_flight_at_stage2s_back_edge():
    from fresh_interpreter import run_without_interpreter

    out = run_without_interpreter(str(BENCHMARKS / "wgmma_hazard.py"), f"{POINT}@STAGE2_DRAIN=0",
                                  f"{POINT}@STAGE2_DRAIN=1", "--kernels", "_stage2", "--json")
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    plain = [r for r in rows if r["point"].endswith("=0")]
    drained = [r for r in rows if r["point"].endswith("=1")]
    assert plain and drained and all(r["groups"] == 4 for r in rows), rows
    assert any(r["in_flight"] > 0 for r in plain), rows  # the exposure is there to remove
    assert all(r["in_flight"] == 0 and r["writes"] == 0 for r in drained), rows


@pytest.mark.parametrize("mma", [Mma.WGMMA, Mma.WGMMA_E4M3])
def test_drain_rule(mma, monkeypatch):
    cfg = TileConfig(block_m=64, block_n=128, block_k=64, group_m=8, num_warps=4, num_stages=3, mma=mma,
                     combine=Combine.ATOMIC)
    assert not rules.stage2_drains(cfg)
    monkeypatch.setattr(rules, "STAGE2_DRAIN", 1)
    assert rules.stage2_drains(cfg) is (mma is Mma.WGMMA)
