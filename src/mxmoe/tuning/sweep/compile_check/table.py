"""The CSV a legality validation writes: one row per sampled config (CSV_COLUMNS: where it sits, the model's
verdict, the observed outcome, and device, versions and git sha), written and flushed as each result arrives so a
cut run keeps what it did. tests/test_legality.py replays the committed tables under results/legality/.
"""

from __future__ import annotations

import csv
import importlib.metadata
import subprocess
from collections.abc import Callable
from pathlib import Path as FsPath

from mxmoe.config import TileConfig
from mxmoe.tuning.sweep.compile_check.cpu import init_cpu_worker, run_task_cpu
from mxmoe.tuning.sweep.compile_check.pool import run_all
from mxmoe.tuning.sweep.compile_check.sample import Task

CSV_COLUMNS = (
    "shape", "path", "stage", "config_key", "block_m", "block_n", "block_k", "group_m", "num_warps", "num_stages",
    "mma", "combine", "split_k", "tail_m", "predicted", "reason", "detail", "modelled_smem", "compile_ok", "load_ok",
    "compiler_smem", "n_regs", "n_spills", "spill_source", "wrapper_ok", "launch_ok", "outcome", "error", "compile_s",
    "device", "smem_optin", "triton", "torch", "git_sha",
)
# load_ok and wrapper_ok are --cpu-compile columns (blank in GPU rows: there compile_ok includes the load and
# launch_ok the wrapper). spill_source says where n_spills comes from.
GPU_SPILL_SOURCE = "triton n_spills: CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES / 4"
CPU_SPILL_SOURCE = "cuobjdump --dump-resource-usage STACK bytes / 4"


def git_sha() -> str:
    """HEAD's sha, "-dirty" when the work tree has changes; "unknown" outside a git checkout."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("-dirty" if dirty.strip() else "")


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def provenance(cpu_compile: bool) -> dict:
    """The columns every row of one run shares: versions, git sha, where n_spills comes from."""
    return {"triton": _version("triton"), "torch": _version("torch"), "git_sha": git_sha(),
            "spill_source": CPU_SPILL_SOURCE if cpu_compile else GPU_SPILL_SOURCE}


def make_row(task: Task, result: dict, prov: dict) -> dict:
    """One CSV row: the task's config and verdict, the run's provenance, the worker's result (known columns)."""
    cfg = TileConfig.from_json(task.config)
    row = {k: "" for k in CSV_COLUMNS}
    row.update(shape=task.shape, path=task.path, stage=task.stage, config_key=cfg.key(), **cfg.to_dict(),
               predicted=task.predicted, reason=task.reason, detail=task.detail, modelled_smem=task.modelled_smem)
    row.update(prov)
    row.update({k: v for k, v in result.items() if k in CSV_COLUMNS})
    return row


def write_table(out: FsPath, kept: list[dict], tasks: list[Task], *, cpu_compile: bool, launch: bool, jobs: int,
                timeout_s: int, deadline_s: float, on_row: Callable[[int], None] | None = None) -> list[dict]:
    """Write `kept` (earlier rows, as recorded), then run `tasks` (GPU workers, or sm_90 compiles on the CPU with
    `cpu_compile`) and write each result's row as it arrives; `on_row(rows so far)` after each. Returns the new
    rows as text, as a reader of the CSV would see them."""
    prov = provenance(cpu_compile)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(kept)

        def write(task: Task, result: dict) -> None:
            row = make_row(task, result, prov)
            writer.writerow(row)
            f.flush()
            rows.append({k: str(v) for k, v in row.items()})
            if on_row is not None:
                on_row(len(rows))

        if cpu_compile:
            run_all(tasks, jobs, timeout_s, deadline_s, False, write, fn=run_task_cpu, initializer=init_cpu_worker)
        else:
            run_all(tasks, jobs, timeout_s, deadline_s, launch, write)
    return rows
