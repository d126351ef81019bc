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

The work is done by the library `mxmoe.tuning.sweep.compile_check` (sample, workers, pool, CSV, summary); this
script parses the arguments and prints. `compile_sm90` and `resource_usage` (`compile_check.sm90`) are re-exported
here under their old names `_compile_sm90` and `_resource_usage` for the tools that import them from this script.

Writes one CSV row per sampled config (columns: compile_check.table.CSV_COLUMNS, with device, versions and git
sha), prints a confusion matrix (predicted verdict x observed outcome) and the shared-memory model's error. Never
asserts: tests/test_legality.py replays the committed table.

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
import os
import sys
import time
from collections import Counter
from pathlib import Path as FsPath

from mxmoe.legality import H100
from mxmoe.tuning.sweep.compile_check.sample import select_tasks
from mxmoe.tuning.sweep.compile_check.sm90 import compile_sm90 as _compile_sm90
from mxmoe.tuning.sweep.compile_check.sm90 import resource_usage as _resource_usage
from mxmoe.tuning.sweep.compile_check.summary import summarize_rows
from mxmoe.tuning.sweep.compile_check.table import write_table

__all__ = ["_compile_sm90", "_resource_usage", "main"]  # the old names, for tools that import them from here


def _parser() -> argparse.ArgumentParser:
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
    return ap


def _args() -> argparse.Namespace:
    args = _parser().parse_args()
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
    return args


def main() -> None:
    args = _args()
    kept, groups, tasks = select_tasks(
        shapes=args.shapes.split(","), paths=args.paths.split(","), stages=args.stages.split(","),
        space=args.space, per_combo=args.per_combo, from_csv=args.from_csv, where=args.where, limit=args.limit)
    if args.dry_run:
        for g in groups:
            print(f"{g[0].shape:14} {g[0].path} stage {g[0].stage}: "
                  f"{dict(Counter(t.reason or 'legal' for t in g))}" if g else "empty")
        print(f"{len(tasks)} configs in all" + (f", {len(kept)} rows of {args.from_csv} kept" if kept else ""))
        return
    mode = "sm_90 compiles on the CPU, nothing launched" if args.cpu_compile else "GPU compile, load and launch"
    source = f"rows of {args.from_csv} where {' and '.join(args.where) or 'always'}" if args.from_csv else \
        f"{args.space} space, stratified sample"
    print(f"{mode}: {len(tasks)} configs ({source}) on {args.jobs} workers; "
          f"timeout {args.timeout_s}s per compile, deadline {args.deadline_s:.0f}s; -> {args.out}", flush=True)

    t0 = time.monotonic()

    def progress(done: int) -> None:
        if done % 25 == 0:
            print(f"  {done}/{len(tasks)} done, {time.monotonic() - t0:.0f}s", flush=True)

    rows = write_table(args.out, kept, tasks, cpu_compile=args.cpu_compile, launch=not args.no_launch,
                       jobs=args.jobs, timeout_s=args.timeout_s, deadline_s=args.deadline_s, on_row=progress)
    devices = Counter(r["device"] for r in rows if r["device"])
    print(f"\nwrote {len(rows)} rows to {args.out} in {time.monotonic() - t0:.0f}s; devices {dict(devices)}; "
          f"verdicts judged with {H100.name} limits ({H100.smem_optin_bytes} B)")
    summarize_rows(rows)


if __name__ == "__main__":
    main()
