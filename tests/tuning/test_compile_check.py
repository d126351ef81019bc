"""mxmoe.tuning.sweep.compile_check, the library of benchmarks/validate_legality.py: the sample it draws, the
--from-csv selection and the CSV rows round-tripping through it, the printed summary, the worker pool's
fail-closed paths (a worker that dies, the deadline), and the names the script keeps for the tools that import it.

Oracles: the script's own dry-run on the same arguments before the move to the library (the sample's counts per
stratum), rows built and read back through the real CSV writer, and hand-counted outcomes.
"""

from __future__ import annotations

import csv
import os
import time
from collections import Counter
from pathlib import Path as FsPath

import pytest
from bench_script import load

from mxmoe.tuning.sweep.compile_check.pool import run_all
from mxmoe.tuning.sweep.compile_check.sample import Task, matches, select_tasks
from mxmoe.tuning.sweep.compile_check.sm90 import compile_sm90, resource_usage
from mxmoe.tuning.sweep.compile_check.summary import summarize_rows
from mxmoe.tuning.sweep.compile_check.table import CSV_COLUMNS, make_row

SMALL = dict(shapes=["gpt-oss-120b"], paths=["a16w4"], stages=["1", "2"], space="wide", per_combo=4)


def test_sample_is_the_scripts_dry_run():
    # `validate_legality.py --dry-run --shapes gpt-oss-120b --paths a16w4 --stages 1,2 --per-combo 4 --limit 6`
    kept, groups, tasks = select_tasks(**SMALL, limit=6)
    assert kept == []
    assert [dict(Counter(t.reason or "legal" for t in g)) for g in groups] == [
        {"legal": 2, "warp_layout": 1, "degenerate": 1}, {"legal": 2, "warp_layout": 1, "degenerate": 1}]
    assert len(tasks) == 6
    assert [t.predicted for t in tasks] == ["legal"] * 4 + ["illegal"] * 2  # predicted-legal first
    assert [t.stage for t in tasks] == [1, 2, 1, 2, 1, 2]  # round robin over (shape, path, stage)
    assert select_tasks(**SMALL, limit=6)[2] == tasks  # deterministic


def test_where_predicates():
    row = {"stage": "2", "split_k": "1"}
    assert matches(row, ["stage=2"]) and matches(row, ["stage=2", "split_k!=4"]) and matches(row, [])
    assert not matches(row, ["stage=2", "split_k!=1"])
    with pytest.raises(SystemExit, match="no column 'nope'"):
        matches(row, ["nope=1"])
    with pytest.raises(SystemExit, match="expected FIELD=VALUE"):
        matches(row, ["bad"])


def _write(path: FsPath, tasks: list[Task], results: list[dict]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(make_row(t, r, {"git_sha": "x"}) for t, r in zip(tasks, results, strict=True))


def test_from_csv_keeps_other_rows_and_rejudges_the_matching_ones(tmp_path):
    _, _, tasks = select_tasks(**SMALL)
    table = tmp_path / "t.csv"
    _write(table, tasks, [{"outcome": "ok"}] * len(tasks))
    kept, groups, again = select_tasks(**SMALL, from_csv=table, where=["stage=2"])
    assert [r["stage"] for r in kept] == ["1"] * sum(t.stage == 1 for t in tasks)
    assert sorted(again, key=repr) == sorted((t for t in tasks if t.stage == 2), key=repr)
    assert [len(g) for g in groups] == [len(again)]


def test_summary_counts(tmp_path, capsys):
    _, _, tasks = select_tasks(**SMALL, limit=6)
    outcomes = ["ok", "compile", "ok", "not_run", "ok", "wrapper"]  # 4 legal, then smem_overflow, warp_layout
    table = tmp_path / "t.csv"
    _write(table, tasks, [{"outcome": o, "compiler_smem": 9216 if o == "ok" else ""} for o in outcomes])
    with table.open(newline="") as f:
        summarize_rows(list(csv.DictReader(f)))
    text = capsys.readouterr().out  # columns: compile, not_run, ok, wrapper
    assert "predicted legal but failed: 1" in text
    assert "predicted illegal (failure codes) that compiled and ran fine: 1/2 = 50.0%" in text
    assert "smem model error (modelled - compiler) / compiler over 3 compiles" in text
    assert [ln.split() for ln in text.splitlines() if ln.startswith("legal ")] == [["legal", "1", "1", "2", "0"]]


def _noop() -> None:
    pass


def _fake(task: Task, timeout_s: int, launch: bool) -> dict:
    if task.detail == "die":
        os._exit(3)
    if task.detail == "hang":
        time.sleep(60)
    return {"outcome": "ok", "error": f"{timeout_s} {launch}"}


@pytest.mark.slow
def test_pool_survives_a_dying_worker_and_stops_at_the_deadline():
    def task(detail: str) -> Task:
        return Task("gpt-oss-120b", "a16w4", 1, "{}", "legal", "", detail, 0)

    written: list[tuple[str, dict]] = []
    run_all([task("a"), task("die"), task("b")], 2, 7, 120.0, True, lambda t, r: written.append((t.detail, r)),
            fn=_fake, initializer=_noop)
    got = dict(written)
    assert len(written) == 3 and got["a"] == got["b"] == {"outcome": "ok", "error": "7 True"}
    assert got["die"]["outcome"] == "worker_lost"

    written.clear()
    run_all([task("a"), task("hang")], 2, 7, 5.0, False, lambda t, r: written.append((t.detail, r)),
            fn=_fake, initializer=_noop)
    assert dict(written)["hang"] == {"outcome": "not_run", "error": "deadline 5s reached"}
    assert len(written) == 2


def test_the_script_keeps_the_old_names():
    module = load("validate_legality")
    assert module._compile_sm90 is compile_sm90 and module._resource_usage is resource_usage
    assert callable(module.main)


_V2_TASK = """
import json, sys
from mxmoe.config import Mma, TileConfig
from mxmoe.tuning.sweep.compile_check.cpu import run_task_cpu
from mxmoe.tuning.sweep.compile_check.sample import Task
cfg = TileConfig(block_m=16, block_n=64, block_k=64, num_warps=int(sys.argv[1]), num_stages=2, mma=Mma.WGMMA,
                 combine=sys.argv[3])
row = run_task_cpu(Task("gpt-oss-120b", "a8w4", int(sys.argv[2]), cfg.to_json(), "legal", "", "", 0), timeout_s=300,
                   launch=False)
print(json.dumps(row))
"""


@pytest.mark.parametrize("warps,stage,combine,want", [(4, 1, "atomic", "ok"), (2, 1, "atomic", "wrapper"),
                                                      (4, 2, "rows", "ok")])
def test_cpu_compile_of_a_v2_config_is_the_wrappers_launch(warps, stage, combine, want):
    """A v2 (mma=wgmma) config is compiled for sm_90 from the launch the real wrapper records (bf16 carriers, the
    swmoe kernel), not from the v1 mirrors (which have no wgmma code): a legal tile compiles with its registers
    read back; one the wrapper refuses (2 warps: no warpgroup) is a `wrapper` outcome with nothing compiled. In a
    fresh interpreter without TRITON_INTERPRET, as the --cpu-compile worker runs (kernels decorated under the
    interpreter cannot compile). Stage 2 with the rows combine compiles stage 2's kernel, not the combine's."""
    from fresh_interpreter import last_json, run_without_interpreter

    row = last_json(run_without_interpreter("-c", _V2_TASK, str(warps), str(stage), combine))
    assert row["outcome"] == want, row.get("error")
    if want == "ok":
        assert row["compile_ok"] == 1 and row["wrapper_ok"] == 1 and row["n_regs"] > 0 and row["n_spills"] == 0
    else:
        assert row["compile_ok"] == "" and row["wrapper_ok"] == 0 and "warpgroup" in row["error"]
