"""The harness commands of `mxmoe`: sweep, export, noise, bench. `mxmoe.cli.main` calls `register(app)`.

Each command is a thin typed function over the library. `sweep` keeps this process torch-free (its
worker owns the GPU); `noise` and `bench` time in-process, on the Triton interpreter with a fake
clock when there is no GPU, and say so.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path as FsPath
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from mxmoe.cli.common import MxmoeUsageError, use_interpreter_without_gpu
from mxmoe.shapes import Path, get_shape, model_tokens, parse_tokens
from mxmoe.tuning.sweep.executors import ExecutorKind

console = Console()
err = Console(stderr=True)  # banners and progress: stdout stays clean for --json
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
LedgerOpt = Annotated[FsPath, typer.Option("--ledger", help="SQLite ledger file.")]
ModelOpt = Annotated[str, typer.Option("--model", help="Model name (mxmoe shapes) or E,topk,hidden,inter")]
PathOpt = Annotated[Path, typer.Option("--path", help="Activation path")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Run a non-tiny model on the Triton interpreter anyway.")]
DEFAULT_LEDGER = FsPath("mxmoe.sqlite")


class _Bar:
    """Rich progress for a sweep: a bar with ETA and live counts per status."""

    def __init__(self, quiet: bool, executor: Any = None) -> None:
        self.quiet, self.counts, self.executor = quiet, Counter[str](), executor
        self.progress = Progress(TextColumn("[bold]{task.fields[title]}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[counts]}"),
                                 console=err, disable=quiet)
        self.task: Any = None

    def planned(self, info: Any, total: int, skipped: int) -> None:
        from mxmoe.tuning.sweep.driver import INTERPRETER_BANNER

        if info.interpreter:
            err.print(f"[bold yellow]{INTERPRETER_BANNER}[/]")
        workers = [w for w in self.executor.stats() if not w.note] if self.executor is not None else []
        if not self.quiet:
            err.print(f"device {info.device}; {len(workers) or 1} worker(s); {total} candidates to run, "
                      f"{skipped} already in the ledger")
        title = f"sweep x{len(workers)}" if len(workers) > 1 else "sweep"
        self.task = self.progress.add_task("sweep", total=total, title=title, counts="")

    def recorded(self, attempt: Any) -> None:
        self.counts[attempt.status.value] += 1
        text = " ".join(f"{k}={v}" for k, v in sorted(self.counts.items()))
        self.progress.update(self.task, advance=1, counts=text)


def sweep(
    model: ModelOpt,
    campaign: Annotated[str, typer.Option("--campaign", help="Campaign name: rows are keyed on it")],
    path: PathOpt = Path.A16W4,
    tokens: Annotated[str, typer.Option(help="Token grid: 1,16,128 | grid | decode | prefill")] = "1,16,128",
    stage: Annotated[str, typer.Option(help="layer (what users run), 1, 2, or both")] = "layer",
    space: Annotated[str, typer.Option(help="Candidate space: default | wide")] = "default",
    baseline: Annotated[str | None, typer.Option(help="The baseline campaign this one is judged against")] = None,
    baseline_only: Annotated[bool, typer.Option("--baseline-only", help="Measure exactly the heuristic's "
                                                "config per T: the validated baseline")] = False,
    ledger: LedgerOpt = DEFAULT_LEDGER,
    routing: Annotated[str, typer.Option(help="Routing distribution of the timed problem")] = "uniform",
    timeout: Annotated[float, typer.Option(help="Seconds a worker phase may take before it is killed")] = 300.0,
    allow_busy: Annotated[bool, typer.Option("--allow-busy", help="Time on a GPU not verified idle "
                                             "(rows are non-claimable)")] = False,
    limit: Annotated[int | None, typer.Option(help="Candidates per T (default 48 for the layer)")] = None,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Run timeout / worker_lost / unmeasured "
                                               "rows again (the new row supersedes the old)")] = False,
    retry_nonclaimable: Annotated[bool, typer.Option("--retry-nonclaimable", help="Measure non-claimable rows "
                                                     "(busy GPU, clock events) again; the new row supersedes")] = False,
    seed: int = 0,
    force: ForceOpt = False,
    executor: Annotated[ExecutorKind, typer.Option("--executor", help="local: one GPU | host: every GPU of this "
                                                   "host | ray: a Ray cluster")] = ExecutorKind.LOCAL,
    workers: Annotated[int | None, typer.Option("--workers", min=1, help="Workers (host, ray): default every GPU; "
                                                "without a GPU, N interpreter workers (default 1)")] = None,
    ray_address: Annotated[str | None, typer.Option("--ray-address", help="auto | ray://head:10001 (default: "
                                                    "a Ray started here)")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Sweep tile configs: one ledger row per candidate (measured, illegal:<reason>, incorrect, ...)."""
    from mxmoe.tuning.sweep.driver import SweepSpec
    from mxmoe.tuning.sweep.executors import ExecutorUnavailableError, WorkerConfig

    argv = tuple(sys.argv)
    # every argument is checked before anything is written: a bad sweep leaves no ledger file and no campaign
    try:
        spec = SweepSpec(model, path, parse_tokens(tokens), campaign, stage=stage, space=space, baseline=baseline,
                         baseline_only=baseline_only, routing=routing, limit=limit, seed=seed,
                         allow_busy=allow_busy, force=force, retry_failed=retry_failed,
                         retry_nonclaimable=retry_nonclaimable, argv=argv)
        shape = get_shape(model)
        if not model_tokens(shape, spec.tokens):
            raise ValueError(f"--tokens {tokens}: {shape.name} is measured from T={shape.min_tokens}")
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    _require_baseline_in(ledger, baseline)
    config = WorkerConfig(model, path.value, argv=argv, seed=seed)
    try:
        ex = _executor(executor, config, workers, ray_address, timeout)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    except ExecutorUnavailableError as exc:
        _refuse(f"sweep refused: {exc}")
    report, stats = _run(spec, ex, ledger, quiet=as_json)
    _print_sweep(report, stats, as_json)


def _require_baseline_in(ledger: FsPath, baseline: str | None) -> None:
    """A --baseline names a campaign of the ledger, checked read-only before the sweep writes anything."""
    from mxmoe.tuning.ledger.store import Ledger
    from mxmoe.tuning.sweep.driver import require_baseline

    if baseline is None:
        return
    if not ledger.exists():
        raise MxmoeUsageError(f"baseline campaign {baseline!r} does not exist: no ledger at {ledger}")
    with Ledger.open_readonly(ledger) as led:
        require_baseline(led, baseline)


def _run(spec: Any, ex: Any, ledger: FsPath, *, quiet: bool) -> tuple[Any, list[Any]]:
    """Start the workers, apply every refusal (big model on the interpreter, busy GPU, ...) before the ledger is
    opened, then sweep under the progress bar: the sweep's report and the workers' stats."""
    from mxmoe.tuning.ledger.store import Ledger
    from mxmoe.tuning.sweep.driver import SweepRefused, run_sweep, start_checked
    from mxmoe.tuning.sweep.executors import WorkerStartError

    bar = _Bar(quiet=quiet, executor=ex)
    with ex:
        try:
            start_checked(spec, ex)
        except (SweepRefused, WorkerStartError) as exc:
            _refuse(f"sweep refused: {exc}")
        with Ledger.open(ledger) as led, bar.progress:
            try:
                report = run_sweep(spec, led, ex, observer=bar)
            except (SweepRefused, WorkerStartError, ValueError) as exc:
                _refuse(f"sweep refused: {exc}")
        return report, ex.stats()


def _print_sweep(report: Any, stats: list[Any], as_json: bool) -> None:
    """The rows written per status (and the workers' throughput), as JSON or tables; exit 1 when none measured."""
    if as_json:
        print(json.dumps({"campaign": report.campaign, "device": report.device, "interpreter": report.interpreter,
                          "planned": report.planned, "skipped": report.skipped, "counts": report.counts,
                          "restarts": report.restarts, "workers": [w.to_dict() for w in stats],
                          "not_a_measurement": report.interpreter}, indent=2))
        _exit_if_nothing_measured(report)
        return
    table = Table(title=f"sweep {report.campaign} on {report.device}")
    table.add_column("status")
    table.add_column("rows", justify="right")
    for status, n in sorted(report.counts.items()):
        table.add_row(status, str(n))
    table.add_row("[dim]already in the ledger[/]", str(report.skipped))
    console.print(table)
    _print_workers(stats)
    if report.interpreter:
        console.print("[yellow]every row above is non-claimable (interpreter, fake clock): not a measurement[/]")
    _exit_if_nothing_measured(report)


def _refuse(message: str) -> NoReturn:
    """One line on stderr, `error: ...`, exit 2 (as `mxmoe` prints a usage error; here also under a bare app)."""
    typer.echo(f"error: {' '.join(message.split())}", err=True)
    raise typer.Exit(2)


def _exit_if_nothing_measured(report: Any) -> None:
    from mxmoe.tuning.sweep.driver import nothing_measured

    why = nothing_measured(report)
    if why is not None:
        err.print(f"[red]error:[/] {escape(why)}")
        raise typer.Exit(1)


def _executor(kind: ExecutorKind, config: Any, workers: int | None, ray_address: str | None, timeout: float) -> Any:
    """The sweep's executor: ValueError for options that do not fit the kind, ExecutorUnavailableError
    (saying how to install it) for ray without Ray."""
    from mxmoe.tuning.sweep.executors import LocalExecutor

    if ray_address is not None and kind is not ExecutorKind.RAY:
        raise ValueError(f"--ray-address needs --executor ray (got --executor {kind.value})")
    if kind is ExecutorKind.LOCAL:
        if workers not in (None, 1):
            raise ValueError(f"--workers {workers}: the local executor runs one worker; use --executor host or ray")
        return LocalExecutor(config, timeout_s=timeout)
    if kind is ExecutorKind.HOST:
        from mxmoe.tuning.sweep.executors_host import HostExecutor

        return HostExecutor(config, workers=workers, timeout_s=timeout)
    from mxmoe.tuning.sweep.executors_ray import RayExecutor, require_ray

    require_ray()
    return RayExecutor(config, workers=workers, address=ray_address, timeout_s=timeout)


def _print_workers(stats: Any) -> None:
    """Per-worker throughput: rows answered by each worker (GPU), and rows/s while it worked."""
    table = Table(title="workers")
    for col in ("worker", "device", "uuid", "rows", "rows/s", "restarts", "note"):
        table.add_column(col, justify="right" if col in ("rows", "rows/s", "restarts") else "left")
    for w in stats:
        table.add_row(w.label, w.device, w.device_uuid or "-", str(w.rows), f"{w.rows_per_s:.2f}", str(w.restarts),
                      escape(w.note))
    total = sum(w.rows for w in stats)
    seconds = max((w.seconds for w in stats), default=0.0)
    table.add_row("[bold]all[/]", "", "", str(total), f"{total / seconds:.2f}" if seconds else "0.00", "", "")
    console.print(table)


def export(
    campaign: Annotated[str, typer.Argument(help="Campaign whose best layer configs become tables")],
    ledger: LedgerOpt = DEFAULT_LEDGER,
    out_dir: Annotated[FsPath, typer.Option("--out-dir", help="Where the JSON tables go")] = FsPath("src/mxmoe/tuned"),
    allow_nonclaimable: Annotated[bool, typer.Option("--allow-nonclaimable", help="Export non-claimable rows, "
                                                     "stamping the tables as such")] = False,
    routing: str = "uniform",
    ledger_export: Annotated[FsPath | None, typer.Option(help="CSV of the campaign's rows, named in the "
                                                         "metadata (default results/<campaign>.ledger.csv)")] = None,
    only: Annotated[list[str] | None, typer.Option(help="model:path to export (repeatable; default: every pair)")
                    ] = None,
    baseline: Annotated[str | None, typer.Option(help="The claim's baseline campaign: keep its config at every T "
                                                 "where the campaign has no win over it")] = None,
    robust_over: Annotated[list[str] | None, typer.Option(
        "--robust-over", help="Another routing both campaigns measured (repeatable, needs --baseline): a T leaves "
        "the baseline's config only for one that wins under some routing and regresses under none")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Write one tuned table per (GPU, shape, path) from CLAIMABLE measured layer rows."""
    from mxmoe.tuning.judge.export import ExportError, export_tables
    from mxmoe.tuning.ledger.store import Ledger

    dest = ledger_export or FsPath("results") / f"{campaign}.ledger.csv"
    pairs = None
    if only:
        bad = [o for o in only if o.count(":") != 1]
        if bad:
            raise typer.BadParameter(f"--only {bad[0]!r}: expected model:path")
        pairs = {tuple(o.split(":")) for o in only}
    with Ledger.open_readonly(ledger) as led:
        try:
            tables = export_tables(led, campaign, out_dir, allow_nonclaimable=allow_nonclaimable, routing=routing,
                                   ledger_export=dest, only=pairs, baseline=baseline, robust_over=robust_over or ())
        except ExportError as exc:
            err.print(f"[red]export refused:[/] {exc}")
            raise typer.Exit(1) from exc
    if as_json:
        print(json.dumps([{"file": str(t.file), "tokens": list(t.tokens), "claimable": t.claimable} for t in tables]))
        return
    for t in tables:
        stamp = "" if t.claimable else " [yellow](NON-CLAIMABLE)[/]"
        console.print(f"wrote {t.file}: T={','.join(map(str, t.tokens))}{stamp}")


def _interpreter_guard(model: str, force: bool) -> bool:
    from mxmoe.tuning.sweep.driver import INTERPRETER_BANNER, INTERPRETER_MODELS

    interp = use_interpreter_without_gpu()
    if interp:
        if get_shape(model).name not in INTERPRETER_MODELS and not force:
            _refuse(f"no GPU: {model} on the Triton interpreter would take hours; use --model "
                    f"{' or '.join(INTERPRETER_MODELS)}, or pass --force")
        err.print(f"[bold yellow]{INTERPRETER_BANNER}[/]")
    return interp


def noise(
    model: ModelOpt,
    path: PathOpt = Path.A16W4,
    tokens: Annotated[str, typer.Option(help="Token counts")] = "1,16,128",
    rounds: Annotated[int, typer.Option(help="A/B rounds per T")] = 5,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """A/A noise floor of the heuristic layer (graph replay, L2 flushed): must sit under the win margins."""
    interp = _interpreter_guard(model, force)
    from mxmoe.tuning.timing.bench import layer_settings
    from mxmoe.tuning.timing.clocks import FakeClock
    from mxmoe.tuning.timing.noise import run_noise

    shape = get_shape(model)

    def factory(t: int) -> Any:
        from mxmoe.dispatch import choose_config
        from mxmoe.moe import moe
        from mxmoe.problem import make_problem

        p = make_problem(shape, path, t, device="cpu" if interp else "cuda")
        cfg = choose_config(shape, path, t)
        return lambda: moe(p.hidden, p.weights, p.topk_ids, p.topk_weights, path, cfg, validate=False)

    kw: dict[str, Any] = {"settings": layer_settings(interp, {"idle_sample_s": 0.0} if interp else None)}
    if interp:
        kw["clock"] = FakeClock(10.0, 0.02, execute=False)
    reports = run_noise(shape, path, parse_tokens(tokens), factory, rounds=rounds, measure_kwargs=kw)
    if as_json:
        print(json.dumps([r.to_dict() for r in reports], indent=2))
        return
    table = Table(title=f"A/A noise: {shape.name} {path.value}, {rounds} rounds")
    for col in ("T", "median |rel|", "p95 |rel|", "win margin", "margin above noise", "false wins", "checks"):
        table.add_column(col)
    for r in reports:
        table.add_row(str(r.t), f"{r.median_abs_rel:.2%}", f"{r.p95_abs_rel:.2%}", f"{r.win_margin:.0%}",
                      str(r.margin_above_noise), str(r.false_wins), ",".join(r.checks) or "-")
    console.print(table)


def bench(
    model: ModelOpt,
    path: PathOpt = Path.A16W4,
    tokens: Annotated[str, typer.Option(help="Token counts")] = "1,16,128,1024",
    csv: Annotated[FsPath | None, typer.Option("--csv", help="Append rows (device, versions, git sha) here")] = None,
    routing: Annotated[str, typer.Option(help="Routing distribution")] = "uniform",
    force: ForceOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Roofline table per T: layer, stage 1, stage 2 and routing times beside floors measured in this run."""
    interp = _interpreter_guard(model, force)
    from mxmoe.tuning.timing.bench import run_bench, write_csv

    rows = run_bench(get_shape(model), path, parse_tokens(tokens), interpreter=interp, routing=routing)
    if csv is not None:
        write_csv(rows, csv)
    if as_json:
        print(json.dumps([r.to_dict() for r in rows], indent=2))
        return
    # 80 columns when piped: short headers that wrap between words, and the configs (what --config takes) below
    # the table, whole, rather than in a column too narrow for them
    where = f"{rows[0].model if rows else model} {path.value} on {rows[0].device if rows else '?'}"
    table = Table(title=f"{where} (times in us)")
    for col in ("T", "layer", "stage1", "stage2", "route", "mem floor", "flop floor", "roof", "TFLOP/s"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(str(r.tokens), f"{r.layer_us:.1f}", f"{r.stage1_us:.1f}", f"{r.stage2_us:.1f}",
                      f"{r.routing_us:.1f}", f"{r.memory_floor_us:.2f}", f"{r.compute_floor_us:.2f}",
                      f"{r.roofline_fraction:.1%}", f"{r.tflops:.2f}")
    console.print(table)
    for r in rows:
        console.print(f"T={r.tokens} config {escape(r.config)}", soft_wrap=True)
    if rows:
        console.print(f"floors: {rows[0].bandwidth / 1e12:.2f} TB/s copy, {rows[0].rate / 1e12:.0f} TFLOP/s bf16 "
                      f"({rows[0].floors_source})")


def register(app: typer.Typer) -> None:
    """Add sweep, export, noise and bench to the `mxmoe` app."""
    app.command()(sweep)
    app.command()(export)
    app.command()(noise)
    app.command()(bench)
