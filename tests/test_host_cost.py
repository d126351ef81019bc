"""benchmarks/host_cost.py on the CPU: it runs, stubs the launches where moe() makes them (layer_plan), and reports
every measurement for both dispatch sources. Timings are not asserted (speed goals live in the benchmark's output);
this catches the script going stale, as it did when the launches moved from moe.py to layer_plan.py."""

from __future__ import annotations

import json

import pytest
import torch
from bench_script import load


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU path (tensors on the CPU, interpreter dispatch)")
@pytest.mark.parametrize("tokens", [4, 64], ids=["direct-layer", "sorted-layer"])
def test_host_cost_runs_and_reports_every_measurement(tokens, capsys, monkeypatch):
    """Every launcher of the layer plan raises if called: the script must have stubbed them all."""
    from mxmoe import layer_plan

    def launched(*args, **kwargs):
        raise AssertionError("host_cost.py let a real launch run")

    for name in ("quantize_input", "align", "stage1", "stage2", "direct_stage1", "direct_stage2"):
        monkeypatch.setattr(layer_plan, name, launched)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    module = load("host_cost")
    assert module.main(["--calls", "5", "--repeats", "2", "--tokens", str(tokens), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert set(info["median_us"]) == {"heuristic", "tuned table"}
    for row in info["median_us"].values():
        assert set(row) == {"choose_config", "moe(None)", "moe(None, validate=False)", "moe(config)"}
        assert all(us > 0 for us in row.values())
