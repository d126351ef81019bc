"""Validate the legality model against real compiles: predicted verdict vs compile, load and launch, per config.

For each (shape, path, stage) the `wide` candidate space is judged by `mxmoe.legality.check` (H100 limits),
then a deterministic stratified sample is compiled for real in spawn workers (one CUDA context each):
  compile  `_stageN_kernel.warmup(...)` with the exact arguments the launch wrapper passes (Triton 3.6 compiles
           without launching); records `metadata.shared`, then loads the binary as the first launch would,
           which is where an over-large shared-memory request fails (OutOfResources); records n_regs, n_spills
  launch   the real wrapper (`stage1()` / `stage2()`: its checks, then one launch) on a tiny problem with the
           shape's hidden and inter but min(E, 8) experts and 16 tokens, then a synchronize
Why a sample: one compile takes 1 to 200 s on one core (median ~5 s; heavily spilling and shared-memory-hungry
tiles are the slow tail), so the full wide space (30720 stage-1 and 38400 stage-2 configs per shape and path)
would take hours. Per (shape, path, stage) the sample takes `--per-combo` configs: half predicted legal, half
spread evenly over the failure codes that occur (4 of DEGENERATE, a choice outside every metric); each stratum
is sampled at evenly spaced positions of its sorted order, SMEM_OVERFLOW and REG_PRESSURE only within 1.5x of
their limit (SMEM_OVERFLOW with registers in budget), where a wrong verdict would hide and compiles are quick.
Predicted-legal configs run first.

Writes one CSV row per sampled config (columns in CSV_COLUMNS, with device, versions and git sha), prints a
confusion matrix (predicted verdict x observed outcome) and the shared-memory model's error. Never asserts:
tests/test_legality.py replays the committed table.

Run on the GPU machine from the repo root (default: 2 shapes x 2 paths x 2 stages x 64 configs = 512 compiles,
about 6-8 minutes on 16 cores; past `--deadline-s` (450 s) the rest is written as not_run, which the replay test
ignores):
    python benchmarks/validate_legality.py --out results/legality/h100_wide.csv
    python benchmarks/validate_legality.py --limit 16 --jobs 4 --out "$OUT/legality_smoke.csv"   # smoke test

`--cpu-compile` (no GPU): the same sample, compiled ahead of time for sm_90 on the CPU with the bundled ptxas
(`triton.compile(ASTSource(...), target=GPUTarget("cuda", 90, 32))`, the signature, constexprs and divisibility
attributes from the JIT's own binder applied to the very arguments the GPU mode passes). Per row: compile_ok;
compiler_smem (`metadata.shared`); load_ok = compiler_smem <= the H100 opt-in limit 232448 B, the check
`CompiledKernel._init_handles` makes when a GPU loads the binary; n_regs and n_spills from `cuobjdump
--dump-resource-usage` (n_spills = STACK bytes / 4, Triton's unit: see spill_source); wrapper_ok = the real
launch wrapper (`stage1()` / `stage2()`) accepted the config, run on CPU tensors with the kernel launch replaced
by a recorder (also checks that the recorded launch specializes like the compiled one); launch_ok blank (not
run: no GPU). Outcome: compile (compiler error) | load (over the opt-in limit) | wrapper (refused) | spills | ok.
    nice -n 10 python benchmarks/validate_legality.py --cpu-compile --jobs 2 --deadline-s 1800 \
        --out results/legality/sm90_cpu_compile.csv

`--from-csv TABLE --where FIELD=VALUE [--where FIELD!=VALUE ...]` (either mode): instead of a fresh sample,
recompile the configs of TABLE's rows that match every predicate (compared as the CSV's text), judged by the
current model; TABLE's other rows are copied to --out unchanged first, so `--out TABLE` refreshes just those
rows (they move to the end). For a kernel change that leaves some rows describing code that no longer exists,
without redrawing the sample (which would change every row), e.g. the stage-2 split-K rows:
    nice -n 10 python benchmarks/validate_legality.py --cpu-compile --jobs 2 --deadline-s 1200 \
        --from-csv results/legality/sm90_cpu_compile.csv --where stage=2 --where split_k!=1 \
        --out results/legality/sm90_cpu_compile.csv
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import csv
import functools
import importlib.metadata
import multiprocessing as mp
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path as FsPath

from mxmoe.config import TileConfig
from mxmoe.legality import (
    ACC_REG_BUDGET,
    H100,
    Illegal,
    Legal,
    Reason,
    check,
    observed_failure,
    register_model,
    smem_breakdown,
)
from mxmoe.shapes import MODELS, MoEShape, Path
from mxmoe.space import candidate_space

CSV_COLUMNS = (
    "shape", "path", "stage", "config_key", "block_m", "block_n", "block_k", "group_m", "num_warps", "num_stages",
    "mma", "combine", "split_k", "predicted", "reason", "detail", "modelled_smem", "compile_ok", "load_ok",
    "compiler_smem", "n_regs", "n_spills", "spill_source", "wrapper_ok", "launch_ok", "outcome", "error", "compile_s",
    "device", "smem_optin", "triton", "torch", "git_sha",
)
# load_ok and wrapper_ok are --cpu-compile columns (blank in GPU rows: there compile_ok includes the load and
# launch_ok the wrapper). spill_source says where n_spills comes from.
GPU_SPILL_SOURCE = "triton n_spills: CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES / 4"
CPU_SPILL_SOURCE = "cuobjdump --dump-resource-usage STACK bytes / 4"
LAUNCH_EXPERTS = 8  # tiny launch problem: min(E, 8) experts ...
LAUNCH_TOKENS = 16  # ... and 16 tokens, with the shape's own hidden and inter (same strides and EVEN_K)
ERROR_TAIL = 400  # characters of an error message kept in the CSV
CHOICE_SAMPLE = 4  # configs per (shape, path, stage) of a choice code (DEGENERATE): a spot check only
NEAR = 1.5  # resource strata are sampled within 1.5 x their limit (see _near_boundary)


@dataclass(frozen=True, slots=True)
class Task:
    """One config to compile: where it sits (shape, path, stage) and what the model predicted."""

    shape: str
    path: str
    stage: int
    config: str  # TileConfig JSON
    predicted: str  # "legal" | "illegal"
    reason: str
    detail: str
    modelled_smem: int


# ----------------------------------------------------------------------------------------------------------
# driver side: sampling, scheduling, CSV, summary (no torch, no CUDA context)


def _spread(items: list, count: int) -> list:
    """`count` items at evenly spaced positions (deterministic), all of them when there are fewer."""
    if count >= len(items):
        return list(items)
    return [items[(i * len(items)) // count] for i in range(count)]


def _near_boundary(shape: MoEShape, path: Path, stage: int, reason: str, tasks: list[Task]) -> list[Task]:
    """The part of a resource stratum next to its limit, where a wrong verdict would hide (and whose compiles
    are the fast ones): modelled smem <= NEAR x the limit, or registers <= NEAR x the budget. Others: all."""
    def regs(t: Task) -> dict[str, int]:
        return register_model(path, stage, TileConfig.from_json(t.config))

    if reason == Reason.SMEM_OVERFLOW.value:  # registers within budget: the verdict rests on smem alone
        near = [t for t in tasks if t.modelled_smem <= NEAR * H100.smem_optin_bytes
                and regs(t)["acc"] <= ACC_REG_BUDGET and regs(t)["total"] <= H100.regs_per_thread_max]
    elif reason == Reason.REG_PRESSURE.value:
        near = [t for t in tasks if regs(t)["acc"] <= NEAR * ACC_REG_BUDGET
                and regs(t)["total"] <= NEAR * H100.regs_per_thread_max]
    else:
        return tasks
    return near or tasks


def judge(shape: MoEShape, path: Path, stage: int, cfg: TileConfig) -> Task:
    """A Task carrying the current model's verdict and modelled shared memory (H100 limits)."""
    v = check(shape, path, stage, cfg, H100)
    smem = smem_breakdown(shape, path, stage, cfg)["total"]
    if isinstance(v, Legal):
        return Task(shape.name, path.value, stage, cfg.to_json(), "legal", "", "", smem)
    assert isinstance(v, Illegal)
    return Task(shape.name, path.value, stage, cfg.to_json(), "illegal", v.reason.value, v.detail, smem)


def sample_tasks(shape: MoEShape, path: Path, stage: int, space: str, per_combo: int) -> list[Task]:
    """Half predicted-legal, half split evenly over the failure codes present (a few of the choice code);
    leftovers go to the other strata. Each stratum is sampled at evenly spaced positions of its sorted order,
    resource strata only near their limit (`_near_boundary`)."""
    strata: dict[str, list[Task]] = defaultdict(list)
    for cfg in candidate_space(stage, path, space):
        task = judge(shape, path, stage, cfg)
        strata[task.reason or "legal"].append(task)
    reasons = sorted((k for k in strata if k != "legal"), key=lambda k: (not Reason(k).is_failure, k))
    for r in reasons:
        strata[r] = _near_boundary(shape, path, stage, r, strata[r])
    budget = {"legal": per_combo // 2}
    left = per_combo - min(budget["legal"], len(strata["legal"]))
    for i, r in enumerate(reasons):  # even split, each stratum capped by its size, remainder passed on
        share = left // (len(reasons) - i)
        cap = len(strata[r]) if Reason(r).is_failure else min(len(strata[r]), CHOICE_SAMPLE)
        budget[r] = min(share, cap)
        left -= budget[r]
    budget["legal"] = min(len(strata["legal"]), budget["legal"] + left)
    return [t for name in ["legal", *reasons] for t in _spread(strata[name], budget[name])]


def _interleave(groups: list[list[Task]]) -> list[Task]:
    """Predicted-legal configs first (the zero-failure claim and the smem fit rest on them), then the rest;
    each part round-robin across (shape, path, stage), so a deadline cut leaves every combination covered."""
    out: list[Task] = []
    for part in (lambda t: t.predicted == "legal", lambda t: t.predicted != "legal"):
        sub = [[t for t in g if part(t)] for g in groups]
        for i in range(max((len(g) for g in sub), default=0)):
            out.extend(g[i] for g in sub if i < len(g))
    return out


def _git_sha() -> str:
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


def _row(task: Task, result: dict, provenance: dict) -> dict:
    cfg = TileConfig.from_json(task.config)
    row = {k: "" for k in CSV_COLUMNS}
    row.update(shape=task.shape, path=task.path, stage=task.stage, config_key=cfg.key(), **cfg.to_dict(),
               predicted=task.predicted, reason=task.reason, detail=task.detail, modelled_smem=task.modelled_smem)
    row.update(provenance)
    row.update({k: v for k, v in result.items() if k in CSV_COLUMNS})
    return row


def _terminate(pool: cf.ProcessPoolExecutor) -> None:
    """Stop a pool now: cancel queued tasks and end its worker processes (ours), which may sit in a compile."""
    processes = list(getattr(pool, "_processes", {}).values())  # no public API for this in 3.11
    pool.shutdown(wait=False, cancel_futures=True)
    for p in processes:
        if p.is_alive():
            p.terminate()


def _quarantine(suspects: list[Task], ctx, initializer, fn, timeout_s: int, launch: bool, write,
                deadline: float) -> None:
    """Run the tasks that were in flight when a worker died one at a time: the one that kills a worker
    alone is written as worker_lost, the others get their real result."""
    pool = None
    for i, task in enumerate(suspects):
        if time.monotonic() > deadline:
            for t in suspects[i:]:
                write(t, {"outcome": "not_run", "error": "deadline reached in quarantine"})
            break
        pool = pool or cf.ProcessPoolExecutor(max_workers=1, mp_context=ctx, initializer=initializer)
        try:
            write(task, pool.submit(fn, task, timeout_s, launch).result(timeout=max(1.0, deadline - time.monotonic())))
        except cf.process.BrokenProcessPool:
            write(task, {"outcome": "worker_lost", "error": "the worker process died running this config alone"})
            pool.shutdown(wait=True)
            pool = None
        except cf.TimeoutError:
            _terminate(pool)
            pool = None
            write(task, {"outcome": "not_run", "error": "deadline reached in quarantine"})
    if pool is not None:
        pool.shutdown(wait=True)


def run_all(tasks: list[Task], jobs: int, timeout_s: int, deadline_s: float, launch: bool, write,
            fn=None, initializer=None) -> None:
    """Run every task in spawn workers, at most `jobs` in flight, and `write(task, result)` each one.

    A worker whose CUDA context broke answers "retry" from then on: the driver drains the pool, starts a
    fresh one and resubmits. A worker that dies breaks the pool: the tasks in flight then are rerun one
    at a time (`_quarantine`). Past `deadline_s` the pool is stopped and the rest written as not_run.
    `fn(task, timeout_s, launch) -> dict` and `initializer` default to the GPU worker (`run_task`, `_init_worker`).
    """
    fn = fn or run_task
    initializer = initializer or _init_worker
    deadline = time.monotonic() + deadline_s
    queue = list(reversed(tasks))  # pop() from the end keeps the interleaved order
    ctx = mp.get_context("spawn")
    while queue:
        pool = cf.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=initializer)
        inflight: dict = {}
        suspects: list[Task] = []
        drain = False
        while queue or inflight:
            while queue and not drain and len(inflight) < jobs:
                task = queue.pop()
                inflight[pool.submit(fn, task, timeout_s, launch)] = task
            if not inflight:
                break
            done, _ = cf.wait(inflight, timeout=max(0.0, deadline - time.monotonic()), return_when=cf.FIRST_COMPLETED)
            if not done:  # deadline
                _terminate(pool)
                for task in [*inflight.values(), *suspects, *reversed(queue)]:
                    write(task, {"outcome": "not_run", "error": f"deadline {deadline_s:.0f}s reached"})
                return
            for fut in done:
                task = inflight.pop(fut)
                try:
                    result = fut.result()
                except cf.process.BrokenProcessPool:
                    suspects.append(task)
                    drain = True
                    continue
                if result.get("outcome") == "retry":  # CUDA context lost earlier in that worker
                    queue.append(task)
                    drain = True
                    continue
                write(task, result)
        pool.shutdown(wait=True, cancel_futures=True)
        if suspects:
            print(f"a worker died: rerunning the {len(suspects)} configs in flight one at a time", flush=True)
            _quarantine(suspects, ctx, initializer, fn, timeout_s, launch, write, deadline)
        if drain and queue:
            print(f"restarting the worker pool; {len(queue)} configs left", flush=True)


FAILED = ("compile", "load", "wrapper", "launch")  # outcomes where the config did not get to run ("load",
# "wrapper": --cpu-compile only; a GPU row's "compile" includes the load, its "launch" the wrapper)


def _as_bool(s: str) -> bool | None:
    return None if s == "" else s == "1"


def summarize_rows(rows: list[dict]) -> None:
    """Confusion matrix (predicted x observed) and the shared-memory model's error; prints, never asserts."""
    matrix: dict[str, Counter] = defaultdict(Counter)
    for r in rows:
        pred = "legal" if r["predicted"] == "legal" else f"illegal:{r['reason']}"
        matrix[pred][r["outcome"]] += 1
    outcomes = sorted({o for c in matrix.values() for o in c})
    print("\nconfusion matrix: rows = predicted, columns = observed outcome")
    print(f"{'':28}" + "".join(f"{o:>12}" for o in outcomes))
    for pred in sorted(matrix):
        print(f"{pred:28}" + "".join(f"{matrix[pred][o]:>12}" for o in outcomes))

    known = [r for r in rows if r["outcome"] not in ("not_run", "timeout", "worker_lost", "harness_error")]
    bad_legal = [r for r in known if r["predicted"] == "legal" and r["outcome"] in FAILED]
    failures = [r for r in known if r["predicted"] == "illegal" and r["reason"] != "degenerate"]
    fine = [r for r in failures if r["outcome"] == "ok"]
    print(f"\npredicted legal but failed: {len(bad_legal)}")
    for r in bad_legal[:20]:
        print(f"  {r['shape']} {r['path']} s{r['stage']} {TileConfig.from_dict(_cfg_fields(r)).short()}: "
              f"{r['outcome']} {r['error'][:160]}")
    if failures:
        print(f"predicted illegal (failure codes) that compiled and ran fine: {len(fine)}/{len(failures)} "
              f"= {100 * len(fine) / len(failures):.1f}%")
        for reason, n in Counter(r["reason"] for r in fine).most_common():
            print(f"  {reason}: {n}")

    errs = []
    for r in known:
        if r["compiler_smem"] not in ("", "0") and r["modelled_smem"] != "":
            cc, mod = int(r["compiler_smem"]), int(r["modelled_smem"])
            errs.append(((mod - cc) / cc, mod - cc, r))
    if errs:
        rel = [e for e, _, _ in errs]
        legal_rel = [e for e, _, r in errs if r["predicted"] == "legal"]
        print(f"\nsmem model error (modelled - compiler) / compiler over {len(errs)} compiles: "
              f"mean {statistics.mean(rel):+.3f}, median {statistics.median(rel):+.3f}, "
              f"max |err| {max(abs(e) for e in rel):.3f}, "
              f"within 10%: {sum(abs(e) <= 0.10 for e in rel)}/{len(rel)}; predicted-legal within 10%: "
              f"{sum(abs(e) <= 0.10 for e in legal_rel)}/{len(legal_rel)}")
        print("worst 10:")
        for e, d, r in sorted(errs, key=lambda x: -abs(x[0]))[:10]:
            print(f"  {e:+.3f} ({d:+7d} B) {r['shape']} {r['path']} s{r['stage']} "
                  f"{TileConfig.from_dict(_cfg_fields(r)).short()} compiler {r['compiler_smem']} {r['predicted']}")


def _cfg_fields(r: dict) -> dict:
    ints = ("block_m", "block_n", "block_k", "group_m", "num_warps", "num_stages", "split_k")
    return {k: int(r[k]) for k in ints} | {"mma": r["mma"], "combine": r["combine"]}


_WHERE = re.compile(r"(\w+)(!?=)(.*)")


def _matches(row: dict, where: list[str]) -> bool:
    """Every `FIELD=VALUE` / `FIELD!=VALUE` predicate holds on the row's text (an unknown column raises)."""
    for pred in where:
        m = _WHERE.fullmatch(pred)
        if m is None:
            raise SystemExit(f"--where {pred!r}: expected FIELD=VALUE or FIELD!=VALUE")
        field, op, value = m.groups()
        if field not in row:
            raise SystemExit(f"--where {pred!r}: no column {field!r}")
        if (row[field] == value) != (op == "="):
            return False
    return True


def tasks_from_csv(table: FsPath, where: list[str]) -> tuple[list[dict], list[Task]]:
    """(the rows that stay as recorded, Tasks re-judged by the current model for the rows every predicate
    matches), so rows compiled with an older kernel can be recompiled without redrawing the sample."""
    with table.open(newline="") as f:
        rows = list(csv.DictReader(f))
    kept = [r for r in rows if not _matches(r, where)]
    groups: dict[tuple, list[Task]] = defaultdict(list)
    for r in rows:
        if _matches(r, where):
            shape, path, stage = MODELS[r["shape"]], Path(r["path"]), int(r["stage"])
            groups[shape.name, path.value, stage].append(
                judge(shape, path, stage, TileConfig.from_dict(_cfg_fields(r))))
    return kept, _interleave(list(groups.values()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shapes", default="deepseek-v3,gpt-oss-120b")
    ap.add_argument("--paths", default="a16w4,a8w4")
    ap.add_argument("--stages", default="1,2")
    ap.add_argument("--space", default="wide", choices=("default", "wide"))
    ap.add_argument("--per-combo", type=int, default=64, help="configs sampled per (shape, path, stage)")
    ap.add_argument("--limit", type=int, default=0, help="cap on the total number of configs (0: no cap)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes")
    ap.add_argument("--timeout-s", type=int, default=120, help="per-compile timeout")
    ap.add_argument("--deadline-s", type=float, default=450.0, help="stop submitting after this long")
    ap.add_argument("--no-launch", action="store_true", help="compile only (launch-wrapper refusals then go unseen)")
    ap.add_argument("--cpu-compile", action="store_true",
                    help="no GPU: compile for sm_90 on the CPU (ASTSource + bundled ptxas), judge the load against "
                         "the H100 opt-in limit, run the launch wrappers' checks, launch nothing")
    ap.add_argument("--from-csv", type=FsPath, default=None,
                    help="compile the configs of this table instead of a fresh sample (see --where); its other "
                         "rows are copied to --out unchanged, so --out may be the same table")
    ap.add_argument("--where", action="append", default=[], metavar="FIELD=VALUE",
                    help="with --from-csv: only rows where every FIELD=VALUE / FIELD!=VALUE holds (repeatable)")
    ap.add_argument("--dry-run", action="store_true", help="print the sample per (shape, path, stage) and exit")
    ap.add_argument("--out", type=FsPath, default=None,
                    help="CSV to write (default results/legality/h100_wide.csv, under $OUT when set; "
                         "with --cpu-compile results/legality/sm90_cpu_compile.csv)")
    args = ap.parse_args()
    if args.out is None:
        name = "sm90_cpu_compile.csv" if args.cpu_compile else "h100_wide.csv"
        args.out = FsPath(os.environ["OUT"], "legality", name) if os.environ.get("OUT") else \
            FsPath("results/legality", name)
    if os.environ.get("TRITON_INTERPRET") == "1":
        sys.exit("validate_legality.py compiles for the GPU: unset TRITON_INTERPRET")

    if args.where and args.from_csv is None:
        sys.exit("--where filters the rows of --from-csv")
    if args.limit and args.from_csv is not None and args.out.resolve() == args.from_csv.resolve():
        sys.exit("--limit would drop the matching rows past it from the --from-csv table: write to another --out")
    kept: list[dict] = []
    if args.from_csv is not None:
        kept, tasks = tasks_from_csv(args.from_csv, args.where)
        groups = [[t for t in tasks if (t.shape, t.path, t.stage) == key]
                  for key in dict.fromkeys((t.shape, t.path, t.stage) for t in tasks)]
    else:
        groups = [sample_tasks(MODELS[s], Path(p), int(st), args.space, args.per_combo)
                  for s in args.shapes.split(",") for p in args.paths.split(",") for st in args.stages.split(",")]
        tasks = _interleave(groups)
    if args.limit:
        tasks = tasks[: args.limit]
    if args.dry_run:
        for g in groups:
            print(f"{g[0].shape:14} {g[0].path} stage {g[0].stage}: "
                  f"{dict(Counter(t.reason or 'legal' for t in g))}" if g else "empty")
        print(f"{len(tasks)} configs in all" + (f", {len(kept)} rows of {args.from_csv} kept" if kept else ""))
        return
    provenance = {"triton": _version("triton"), "torch": _version("torch"), "git_sha": _git_sha(),
                  "spill_source": CPU_SPILL_SOURCE if args.cpu_compile else GPU_SPILL_SOURCE}
    mode = "sm_90 compiles on the CPU, nothing launched" if args.cpu_compile else "GPU compile, load and launch"
    source = f"rows of {args.from_csv} where {' and '.join(args.where) or 'always'}" if args.from_csv else \
        f"{args.space} space, stratified sample"
    print(f"{mode}: {len(tasks)} configs ({source}) on {args.jobs} workers; "
          f"timeout {args.timeout_s}s per compile, deadline {args.deadline_s:.0f}s; -> {args.out}", flush=True)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    t0 = time.monotonic()
    with args.out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(kept)

        def write(task: Task, result: dict) -> None:
            row = _row(task, result, provenance)
            writer.writerow(row)
            f.flush()
            rows.append({k: str(v) for k, v in row.items()})
            if len(rows) % 25 == 0:
                print(f"  {len(rows)}/{len(tasks)} done, {time.monotonic() - t0:.0f}s", flush=True)

        if args.cpu_compile:
            run_all(tasks, args.jobs, args.timeout_s, args.deadline_s, False, write, fn=run_task_cpu,
                    initializer=_init_cpu_worker)
        else:
            run_all(tasks, args.jobs, args.timeout_s, args.deadline_s, not args.no_launch, write)
    devices = Counter(r["device"] for r in rows if r["device"])
    print(f"\nwrote {len(rows)} rows to {args.out} in {time.monotonic() - t0:.0f}s; devices {dict(devices)}; "
          f"verdicts judged with {H100.name} limits ({H100.smem_optin_bytes} B)")
    summarize_rows(rows)


# ----------------------------------------------------------------------------------------------------------
# worker side: one CUDA context per process, torch and triton imported here only


def _init_worker() -> None:
    os.environ.pop("TRITON_INTERPRET", None)
    import torch

    torch.cuda.init()


class _CompileTimeout(Exception):
    pass


def _on_alarm(signum, frame):  # noqa: ARG001 -- signal handler signature
    raise _CompileTimeout("compile exceeded the per-config timeout")


def _tail(exc: BaseException) -> str:
    text = "".join(traceback.format_exception_only(type(exc), exc)).strip().replace("\n", " | ")
    return text[-ERROR_TAIL:]


def _compile_retried(compile_fn):
    """(compile_fn(), None), or after one failure that is not the alarm, (compile_fn() again, a note saying so):
    concurrent cold-cache compiles failed transiently in calibration. A second failure propagates."""
    try:
        return compile_fn(), None
    except _CompileTimeout:
        raise
    except Exception as first:
        return compile_fn(), "first compile failed, retry passed: " + _tail(first)


@functools.cache
def _launch_weights(shape: MoEShape, device: str):
    """min(E, 8) experts of random MXFP4 weights at the shape's hidden and inter (one copy per worker and shape:
    ~180 MB for deepseek-v3, so 16 workers stay far from the GPU's memory)."""
    from mxmoe.weights import MoEWeights

    e = min(shape.experts, LAUNCH_EXPERTS)
    small = MoEShape(f"{shape.name}-launch", e, min(shape.topk, e), shape.hidden, shape.inter, shape.activation,
                     bias=shape.bias)
    return MoEWeights.random(small, seed=0, device=device)


@functools.cache
def _launch_routing(shape: MoEShape, block_m: int, device: str):
    """16 tokens, each on min(topk, E') distinct experts; the plan aligned to block_m; uniform routing weights."""
    import torch

    from mxmoe.routing import align_by_expert

    e = min(shape.experts, LAUNCH_EXPERTS)
    t, a = LAUNCH_TOKENS, min(shape.topk, e)
    ids = ((torch.arange(t)[:, None] + torch.arange(a)[None, :]) % e).to(torch.int32).to(device)  # [T, A]
    return align_by_expert(ids, e, block_m), torch.full((t, a), 1.0 / a, device=device)


@functools.cache
def _launch_input(shape: MoEShape, path: Path, stage: int, device: str):
    """The stage's activation at the path's width: x [T, H] (stage 1) or h [T*A, I] (stage 2)."""
    import torch

    from mxmoe.kernels.common import KernelInput

    t, a = LAUNCH_TOKENS, min(shape.topk, shape.experts, LAUNCH_EXPERTS)
    rows, cols = (t, shape.hidden) if stage == 1 else (t * a, shape.inter)
    x = KernelInput.empty(path, rows, cols, torch.device(device))
    if path is Path.A16W4:
        x.data.copy_(torch.randn(rows, cols, device=device) * 0.1)
    else:
        x.data.copy_(torch.randint(0, 0x70, x.data.shape, device=device, dtype=torch.uint8))  # no e4m3 NaN codes
        x.scales.fill_(127)  # e8m0 1.0
    return x


def _launch_problem(shape: MoEShape, path: Path, stage: int, block_m: int, device: str = "cuda"):
    """(weights, plan, x, topk_weights, T) of the tiny launch problem, from per-worker caches."""
    plan, topk_weights = _launch_routing(shape, block_m, device)
    return _launch_weights(shape, device), plan, _launch_input(shape, path, stage, device), topk_weights, \
        LAUNCH_TOKENS


def _stage1_call(x, weights, plan, cfg: TileConfig, out):
    """The main kernel, grid and arguments `kernels.stage1.stage1` launches with (mirrored; kept in step by hand).
    With split_k > 1 the wrapper also launches the small epilogue kernel, which is not compiled here."""
    import torch
    import triton

    from mxmoe.kernels.common import ACT_CODES, MMA_CODES, PATH_CODES, interpreting
    from mxmoe.kernels.stage1 import _stage1_kernel

    i, h = weights.inter, weights.hidden
    ws = weights.w13
    b = weights.b13 if weights.b13 is not None else ws.scales
    part = torch.zeros(plan.num_pairs, 2 * i, dtype=torch.float32, device=x.data.device) if cfg.split_k > 1 \
        else out.data
    grid = (plan.max_blocks * triton.cdiv(i, cfg.block_n), cfg.split_k)
    args = (
        x.data, x.scales_or(x.data), ws.data, ws.scales, b, out.data, out.scales_or(out.data), part,
        plan.sorted_ids, plan.block_expert, plan.num_padded,
        plan.num_pairs, h, i, plan.max_blocks,
        x.data.stride(0), x.scales_or(x.data).stride(0), ws.data.stride(0), ws.data.stride(1),
        ws.scales.stride(0), ws.scales.stride(1), b.stride(0),
        out.data.stride(0), out.scales_or(out.data).stride(0), part.stride(0),
    )
    meta = dict(
        TOPK=plan.topk, PATH=PATH_CODES[x.path], ACT=ACT_CODES[weights.activation],
        HAS_BIAS=weights.b13 is not None, MMA=MMA_CODES[cfg.mma],
        EVEN_K=h % cfg.block_k == 0, INTERP=interpreting(), SPLIT_K=cfg.split_k,
        BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k, GROUP_M=cfg.group_m,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )
    return _stage1_kernel, grid, args, meta


def _stage2_call(h, weights, plan, topk_weights, cfg: TileConfig, out):
    """The kernel, grid and arguments `kernels.stage2.stage2` launches with (mirrored; kept in step by hand)."""
    import torch
    import triton

    from mxmoe.config import Combine
    from mxmoe.kernels.common import MMA_CODES, PATH_CODES, interpreting
    from mxmoe.kernels.stage2 import _stage2_kernel

    ws = weights.w2
    hidden, inter = weights.hidden, weights.inter
    rw = topk_weights.to(torch.float32).contiguous().view(-1)
    b = weights.b2 if weights.b2 is not None else rw
    grid = (plan.max_blocks * triton.cdiv(hidden, cfg.block_n), cfg.split_k)
    args = (
        h.data, h.scales_or(h.data), ws.data, ws.scales, b, rw, out,
        plan.sorted_ids, plan.block_expert, plan.num_padded,
        plan.num_pairs, hidden, inter, plan.max_blocks,
        h.data.stride(0), h.scales_or(h.data).stride(0), ws.data.stride(0), ws.data.stride(1),
        ws.scales.stride(0), ws.scales.stride(1), b.stride(0), out.stride(0),
    )
    meta = dict(
        TOPK=plan.topk, PATH=PATH_CODES[h.path], HAS_BIAS=weights.b2 is not None,
        MMA=MMA_CODES[cfg.mma], SLOTS=cfg.combine is Combine.SLOTS, SPLIT_K=cfg.split_k,
        EVEN_K=inter % cfg.block_k == 0, INTERP=interpreting(),
        BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k, GROUP_M=cfg.group_m,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )
    return _stage2_kernel, grid, args, meta


def _cache_size(kernel) -> int | None:
    """Compiled variants the kernel holds for this device (Triton 3.6 internals; None if they moved)."""
    try:
        import torch

        return len(kernel.device_caches[torch.cuda.current_device()][0])
    except (AttributeError, KeyError, IndexError, TypeError):
        return None


_POISONED: list[str] = []  # per worker process: set once a launch leaves the CUDA context unusable


def _device_fields() -> dict:
    import torch

    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    return {"device": props.name, "smem_optin": getattr(props, "shared_memory_per_block_optin", "")}


def run_task(task: Task, timeout_s: int, launch: bool) -> dict:
    """Compile (and launch) one config; every failure is returned as data, never raised.

    outcome: ok | compile (compiler or loader refused) | launch | spills (heavy) | timeout | harness_error;
    "retry" when this worker's CUDA context was lost by an earlier task.
    """
    import torch

    if _POISONED:  # a sticky CUDA error earlier: the driver drains this pool and resubmits in a fresh one
        return {"outcome": "retry", "error": f"CUDA context lost after {_POISONED[0]}"}
    shape, path, stage = MODELS[task.shape], Path(task.path), task.stage
    cfg = TileConfig.from_json(task.config)
    out: dict = _device_fields() | {"compile_ok": 0, "launch_ok": ""}
    try:
        weights, plan, x, topk_weights, t = _launch_problem(shape, path, stage, cfg.block_m)
        if stage == 1:
            from mxmoe.kernels.common import KernelInput

            buf = KernelInput.empty(path, plan.num_pairs, weights.inter, x.data.device)
            kernel, grid, args, meta = _stage1_call(x, weights, plan, cfg, buf)
        else:
            rows = plan.num_pairs if cfg.combine.value == "slots" else t
            buf = torch.zeros(rows, weights.hidden, dtype=torch.float32, device=x.data.device)
            kernel, grid, args, meta = _stage2_call(x, weights, plan, topk_weights, cfg, buf)
    except Exception as exc:  # the harness could not build inputs: no evidence about the config (compile_ok blank)
        return out | {"compile_ok": "", "outcome": "harness_error", "error": "inputs: " + _tail(exc)}

    t0 = time.monotonic()
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.alarm(timeout_s)
    try:
        compiled, retried = _compile_retried(lambda: kernel.warmup(*args, grid=grid, **meta))
        if retried:
            out["error"] = retried
        out["compiler_smem"] = compiled.metadata.shared
        compiled._init_handles()  # what the first launch does: loads the binary, checks shared memory vs device
        out.update(compile_ok=1, n_regs=compiled.n_regs, n_spills=compiled.n_spills)
    except _CompileTimeout as exc:
        return out | {"compile_ok": "", "outcome": "timeout", "error": _tail(exc),
                      "compile_s": round(time.monotonic() - t0, 2)}
    except Exception as exc:  # compile errors and OutOfResources are the data this script collects
        return out | {"outcome": "compile", "error": _tail(exc), "compile_s": round(time.monotonic() - t0, 2)}
    finally:
        signal.alarm(0)
    out["compile_s"] = round(time.monotonic() - t0, 2)

    if launch:
        before = _cache_size(kernel)
        try:
            if stage == 1:
                from mxmoe.kernels.stage1 import stage1

                stage1(x, weights, plan, cfg, out=buf)
            else:
                from mxmoe.kernels.stage2 import stage2

                stage2(x, weights, plan, topk_weights, cfg, t, out=buf)
            torch.cuda.synchronize()
            out["launch_ok"] = 1
        except Exception as exc:  # wrapper refusals (ValueError) and launch errors are data too
            out.update(launch_ok=0, error=_tail(exc))
            try:
                torch.cuda.synchronize()
            except Exception:  # sticky error: this context is gone; later tasks answer "retry" (see run_all)
                _POISONED.append(task.config)
        after = _cache_size(kernel)
        if before is not None and after is not None and after > before:
            out["error"] = (out.get("error", "") + " | the launch compiled another variant: _stage_call mirrors "
                            "are out of step with the launch wrapper").strip(" |")
    failure = observed_failure(bool(out["compile_ok"]), None if out["launch_ok"] == "" else bool(out["launch_ok"]),
                               out.get("n_spills"))
    out["outcome"] = failure or "ok"
    return out


# ----------------------------------------------------------------------------------------------------------
# --cpu-compile worker: no GPU, no CUDA context. sm_90 compiles through triton.compile(ASTSource) with the JIT's
# own binder (so signature, constexprs and divisibility attributes are what a launch with these arguments gets),
# the load judged against the H100 opt-in limit, the launch wrappers' checks run on CPU tensors.

CPU_DEVICE = "sm_90 (CPU compile, triton {triton}, not launched)"
_USAGE = re.compile(r"REG:(\d+)\s+STACK:(\d+)\s+SHARED:(\d+)\s+LOCAL:(\d+)")


def _init_cpu_worker() -> None:
    os.environ.pop("TRITON_INTERPRET", None)
    import torch

    torch.set_num_threads(1)


@functools.cache
def _sm90():
    """(target, backend) for sm_90; make_backend needs no GPU."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend

    target = GPUTarget("cuda", 90, 32)
    return target, make_backend(target)


@functools.cache
def _binder(kernel):
    from triton.runtime.jit import create_function_from_signature

    return create_function_from_signature(kernel.signature, kernel.params, _sm90()[1])


def _bind(kernel, args: tuple, meta: dict):
    """What `JITFunction.run` computes before compiling: (kwargs, bound args, specialization, options)."""
    from triton import knobs

    kwargs = dict(meta)
    kwargs["debug"] = kwargs.get("debug", kernel.debug) or knobs.runtime.debug
    kwargs["instrumentation_mode"] = knobs.compilation.instrumentation_mode
    bound, specialization, options = _binder(kernel)(*args, **kwargs)
    return kwargs, bound, specialization, options


def _compile_sm90(kernel, args: tuple, meta: dict):
    """Compile `kernel` for sm_90 exactly as `JITFunction.run` would for these arguments, without a GPU."""
    import triton
    from triton.compiler import ASTSource

    target, backend = _sm90()
    kwargs, bound, specialization, options = _bind(kernel, args, meta)
    options, signature, constexprs, attrs = kernel._pack_args(backend, kwargs, bound, specialization, options)
    return triton.compile(ASTSource(kernel, signature, constexprs, attrs), target=target, options=options.__dict__)


def _resource_usage(cubin: bytes) -> dict[str, int]:
    """REG, STACK, SHARED (static), LOCAL of the cubin's one kernel, from `cuobjdump --dump-resource-usage`."""
    from triton import knobs

    tool = knobs.nvidia.cuobjdump.path
    with tempfile.TemporaryDirectory(prefix="mxmoe-cubin-") as d:
        path = FsPath(d, "kernel.cubin")
        path.write_bytes(cubin)
        text = subprocess.run([tool, "--dump-resource-usage", str(path)], capture_output=True, text=True,
                              check=True, timeout=60).stdout
    m = _USAGE.search(text)
    if m is None:
        raise RuntimeError(f"no resource usage line in cuobjdump output: {text[-200:]!r}")
    return dict(zip(("regs", "stack", "shared_static", "local"), map(int, m.groups()), strict=True))


@functools.cache
def _cpu_weights(shape: MoEShape):
    """The GPU mode's min(E, 8) experts with the shape's hidden and inter, as uninitialised CPU tensors: only
    their shapes, strides and dtypes reach the compiler (never launched; untouched pages cost no memory)."""
    import torch

    from mxmoe.mx import MXFormat, MXTensor
    from mxmoe.weights import MoEWeights

    e, h, i = min(shape.experts, LAUNCH_EXPERTS), shape.hidden, shape.inter

    def mx(rows: int, k: int) -> MXTensor:
        return MXTensor(torch.empty(e, rows, k // 2, dtype=torch.uint8), torch.empty(e, rows, k // 32,
                        dtype=torch.uint8), MXFormat.E2M1, axis=2, shape=(e, rows, k))

    b13 = torch.zeros(e, 2 * i) if shape.bias else None
    b2 = torch.zeros(e, h) if shape.bias else None
    return MoEWeights(mx(2 * i, h), mx(h, i), b13, b2, shape.activation)


class _LaunchRecorder:
    """Stands in for a kernel inside a launch wrapper: `kernel[grid](*args, **meta)` is recorded, not run."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def __getitem__(self, grid):
        return lambda *args, **meta: self.calls.append((tuple(grid), args, meta))


@contextlib.contextmanager
def _wrappers_record_launches():
    """The real `stage1()` / `stage2()`, with their launch recorded and the CUDA-tensor requirement lifted (the
    only check that needs a GPU); every other check they make runs as on a GPU."""
    import mxmoe.kernels.common as common
    import mxmoe.kernels.stage1 as s1
    import mxmoe.kernels.stage2 as s2

    saved = (common.require_executable, s1._stage1_kernel, s1._stage1_finish_kernel, s2._stage2_kernel)
    recorder = _LaunchRecorder()
    common.require_executable = lambda t: None
    s1._stage1_kernel = s1._stage1_finish_kernel = s2._stage2_kernel = recorder
    try:
        yield recorder
    finally:
        common.require_executable, s1._stage1_kernel, s1._stage1_finish_kernel, s2._stage2_kernel = saved


def _wrapper_check(stage: int, x, weights, plan, topk_weights, cfg: TileConfig, t: int, buf):
    """(accepted, error, the recorded launch or None): the launch wrapper's own verdict on this config."""
    with _wrappers_record_launches() as recorder:
        try:
            if stage == 1:
                from mxmoe.kernels.stage1 import stage1

                stage1(x, weights, plan, cfg, out=buf)
            else:
                from mxmoe.kernels.stage2 import stage2

                stage2(x, weights, plan, topk_weights, cfg, t, out=buf)
        except Exception as exc:  # ValueError refusals are the data; anything else is reported as a refusal too
            return False, _tail(exc), None
    return True, "", (recorder.calls[0] if recorder.calls else None)


def run_task_cpu(task: Task, timeout_s: int, launch: bool) -> dict:  # noqa: ARG001 -- run_all's signature
    """Compile one config for sm_90 on the CPU; every failure is returned as data, never raised.

    outcome: ok | compile (the compiler refused) | load (compiler smem > the H100 opt-in limit) | wrapper (the
    launch wrapper refused) | spills (>= HEAVY_SPILL_BYTES of stack per thread) | timeout | harness_error.
    """
    import torch
    import triton

    shape, path, stage = MODELS[task.shape], Path(task.path), task.stage
    cfg = TileConfig.from_json(task.config)
    out: dict = {"device": CPU_DEVICE.format(triton=triton.__version__), "smem_optin": H100.smem_optin_bytes,
                 "compile_ok": 0, "load_ok": "", "wrapper_ok": "", "launch_ok": ""}
    notes: list[str] = []
    try:
        from mxmoe.kernels.common import KernelInput

        weights = _cpu_weights(shape)
        plan, topk_weights = _launch_routing(shape, cfg.block_m, "cpu")
        x, t = _launch_input(shape, path, stage, "cpu"), LAUNCH_TOKENS
        if stage == 1:
            buf = KernelInput.empty(path, plan.num_pairs, weights.inter, x.data.device)
            kernel, grid, args, meta = _stage1_call(x, weights, plan, cfg, buf)
        else:
            rows = plan.num_pairs if cfg.combine.value == "slots" else t
            buf = torch.zeros(rows, weights.hidden, dtype=torch.float32)
            kernel, grid, args, meta = _stage2_call(x, weights, plan, topk_weights, cfg, buf)
        accepted, refusal, recorded = _wrapper_check(stage, x, weights, plan, topk_weights, cfg, t, buf)
        out["wrapper_ok"] = int(accepted)
        if not accepted:
            notes.append("launch wrapper refused: " + refusal)
        elif recorded is None:
            notes.append("the launch wrapper returned without launching")
        else:  # the compile below must be the variant the wrapper's launch would get
            r_grid, r_args, r_meta = recorded
            if r_grid != tuple(grid) or _bind(kernel, r_args, r_meta)[2] != _bind(kernel, args, meta)[2]:
                notes.append("the launch wrapper's launch specializes differently from _stage_call: the mirrors "
                             "are out of step with the wrapper")
    except Exception as exc:  # the harness could not build inputs: no evidence about the config (compile_ok blank)
        return out | {"compile_ok": "", "outcome": "harness_error", "error": "inputs: " + _tail(exc)}

    t0 = time.monotonic()
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.alarm(timeout_s)
    try:
        compiled, retried = _compile_retried(lambda: _compile_sm90(kernel, args, meta))
        if retried:
            notes.append(retried)
        usage = _resource_usage(compiled.asm["cubin"])
    except _CompileTimeout as exc:
        return out | {"compile_ok": "", "outcome": "timeout", "error": "; ".join([*notes, _tail(exc)]),
                      "compile_s": round(time.monotonic() - t0, 2)}
    except Exception as exc:  # compiler errors are the data this script collects
        return out | {"outcome": "compile", "error": "; ".join([*notes, _tail(exc)]),
                      "compile_s": round(time.monotonic() - t0, 2)}
    finally:
        signal.alarm(0)
    shared = compiled.metadata.shared
    out.update(compile_ok=1, compiler_smem=shared, load_ok=int(shared <= H100.smem_optin_bytes),
               n_regs=usage["regs"], n_spills=usage["stack"] // 4, compile_s=round(time.monotonic() - t0, 2))
    if not out["load_ok"]:
        notes.append(f"not loadable: metadata.shared {shared} B > {H100.smem_optin_bytes} B opt-in limit "
                     "(_init_handles raises OutOfResources on an H100)")
    elif shared + usage["shared_static"] > H100.smem_optin_bytes:
        notes.append(f"passes the load check, but {shared} B dynamic + {usage['shared_static']} B static shared "
                     f"memory > {H100.smem_optin_bytes} B: the launch may still fail")
    if usage["local"]:
        notes.append(f"cuobjdump LOCAL {usage['local']} B besides STACK {usage['stack']} B")
    failure = observed_failure(True, None, out["n_spills"])
    if not out["load_ok"]:
        failure = "load"
    elif not accepted:
        failure = "wrapper"
    out["outcome"] = failure or "ok"
    out["error"] = "; ".join(notes)
    return out


if __name__ == "__main__":
    main()
