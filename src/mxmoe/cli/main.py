"""The `mxmoe` command: thin typed wrappers over the library (typer + rich).

Every command takes `--json` where a machine may read the answer. Commands that run kernels set
TRITON_INTERPRET=1 on a machine without a GPU *before* importing any kernel module, so the same
pipeline runs on the Triton interpreter (and says that its timings are not claims).
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path as FsPath
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer import _click as click  # typer's own click: the exceptions its parser raises
from typer.core import TyperGroup

from mxmoe._version import __version__
from mxmoe.cli.common import MxmoeUsageError, bullet, has_gpu, use_interpreter_without_gpu
from mxmoe.shapes import MODELS, TOKEN_GRID, Path, get_shape, parse_tokens

DEBUG_ENV = "MXMOE_DEBUG"


def _debugging(ctx: click.Context | None) -> bool:
    return os.environ.get(DEBUG_ENV) == "1" or bool(ctx is not None and ctx.params.get("debug"))


class _OneLineErrors(TyperGroup):
    """Bad input and unusable files end as one line on stderr, `error: ...`, exit code 2; the traceback only with
    `mxmoe --debug` (or MXMOE_DEBUG=1). Caught once here, for every command, instead of in each one."""

    def invoke(self, ctx: click.Context) -> object:
        import sqlite3

        from mxmoe.tuning.ledger.store import LedgerError

        try:
            return super().invoke(ctx)
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.exceptions.UsageError as exc:  # BadParameter, bad options, missing arguments
            if _debugging(ctx):
                raise
            message = exc.format_message()
            plain = (click.exceptions.BadParameter, click.exceptions.NoSuchOption)
            if exc.ctx is not None and not isinstance(exc, plain):
                message += f" (see {exc.ctx.command_path} --help)"
            _fail(message, exc.exit_code)
        except (ValueError, LedgerError, sqlite3.DatabaseError) as exc:
            if _debugging(ctx):
                raise
            _fail(str(exc), 2)


def _fail(message: str, code: int) -> None:
    line = " ".join(message.split())  # one line, whatever the message held
    click.echo(f"error: {line}", err=True)
    raise typer.Exit(code)


app = typer.Typer(help="Fast, tuned MXFP4 MoE layers, and the harness that proves every speed claim.",
                  no_args_is_help=True, add_completion=False, cls=_OneLineErrors)
ledger_app = typer.Typer(help="Inspect, export, merge and scan a SQLite ledger.", no_args_is_help=True)
app.add_typer(ledger_app, name="ledger")
console = Console()

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
LedgerOpt = Annotated[FsPath, typer.Option("--ledger", help="SQLite ledger file.")]
DEFAULT_LEDGER = FsPath("mxmoe.sqlite")


def _version(value: bool) -> None:
    if value:
        print(f"mxmoe {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help=f"Show the traceback of an error (or set {DEBUG_ENV}=1).")
                     ] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Fast, tuned MXFP4 MoE layers, and the harness that proves every speed claim."""


@app.command()
def doctor(as_json: JsonOpt = False) -> None:
    """Report Python, torch, triton, CUDA and the GPU (clocks via NVML), and say plainly if there is none."""
    import torch
    import triton

    from mxmoe import versions

    info: dict[str, object] = {
        "mxmoe": __version__, "python": platform.python_version(), "torch": torch.__version__,
        "triton": triton.__version__, "cuda_runtime": torch.version.cuda, "gpu": None,
    }
    problems = []
    for req in versions.REQUIREMENTS:
        version, problem = versions.check(req, interpreter=not torch.cuda.is_available())
        info.setdefault(req.package, version or "not installed")
        if problem:
            problems.append(problem)
    if problems:
        info["problems"] = problems
    if torch.cuda.is_available():
        from mxmoe.tuning.timing.gpu_state import read_gpu_state
        from mxmoe.tuning.timing.nvml import open_nvml

        props = torch.cuda.get_device_properties(0)
        info["gpu"] = {"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
                       "sm_count": props.multi_processor_count, "capability": f"{props.major}.{props.minor}"}
        info["nvml"] = read_gpu_state(open_nvml(), 0).to_dict()
    else:
        info["note"] = ("no CUDA GPU: kernels run on the Triton interpreter (TRITON_INTERPRET=1), "
                        "correct but slow; timings there are not claims")
    if as_json:
        print(json.dumps(info, indent=2, default=str))
        return
    table = Table(title="mxmoe doctor", show_header=False)
    for k, v in info.items():
        if k == "problems":
            v = "\n".join(v)
        if k == "nvml" and isinstance(v, dict):
            v = ", ".join(f"{kk}={vv}" for kk, vv in v.items() if "clock" in kk or kk in ("temperature_c", "power_w"))
        table.add_row(k, str(v))
    console.print(table)


@app.command()
def shapes(as_json: JsonOpt = False) -> None:
    """List the model shapes (DESIGN.md) and the token grid."""
    rows = [s.to_dict() for s in MODELS.values()]
    if as_json:
        print(json.dumps({"models": rows, "token_grid": list(TOKEN_GRID)}, indent=2))
        return
    # a name (and an activation) is what --model takes: never cut or folded, whatever the width (80 columns when
    # piped); short headers so that the whole table fits 80 columns
    table = Table(title="MoE shapes")
    headers = {"experts": "E", "shared_expert": "shared"}
    for col in ("name", "experts", "topk", "hidden", "inter", "activation", "bias", "shared_expert"):
        header = headers.get(col, col)
        typed = col in ("name", "activation")
        width = max(len(header), *(len(str(r[col])) for r in rows)) if typed else None
        table.add_column(header, no_wrap=typed, min_width=width)
    for r in rows:
        table.add_row(*(str(r[c]) for c in ("name", "experts", "topk", "hidden", "inter", "activation", "bias",
                                             "shared_expert")))
    console.print(table)
    console.print(f"token grid: {', '.join(map(str, TOKEN_GRID))}")


@app.command()
def demo(
    model: Annotated[str, typer.Option(help="Model name or E,topk,hidden,inter")] = "tiny",
    tokens: Annotated[str, typer.Option(help="Token counts, e.g. 1,17")] = "17",
    path: Annotated[Path, typer.Option(help="Activation path")] = Path.A16W4,
    seed: int = 0,
    force: Annotated[bool, typer.Option("--force", help="Run a model larger than tiny on the Triton interpreter "
                                        "anyway (minutes to hours)")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Run the fused kernels against the fp32 reference for one shape and report the error."""
    from mxmoe.tuning.sweep.driver import INTERPRETER_MODELS

    shape = get_shape(model)
    token_list = parse_tokens(tokens)
    if not has_gpu() and shape.name not in INTERPRETER_MODELS and not force:
        raise MxmoeUsageError(f"no GPU: demo of {shape.name} on the Triton interpreter would run for minutes or more; "
                              f"use --model {' or '.join(INTERPRETER_MODELS)}, or pass --force")
    interp = use_interpreter_without_gpu()
    import torch

    from mxmoe.moe import moe
    from mxmoe.problem import make_problem
    from mxmoe.tolerance import compare, lookup

    device = "cuda" if torch.cuda.is_available() else "cpu"
    results = []
    for t in token_list:
        p = make_problem(shape, path, t, seed=seed, device=device)
        out = moe(p.hidden, p.weights, p.topk_ids, p.topk_weights, path)
        rep = compare(out.float(), p.reference(), lookup(path, "layer"))
        results.append({"model": shape.name, "path": path.value, "tokens": t, "ok": rep.ok,
                        "max_rel": rep.max_rel, "rms_rel": rep.rms_rel, "interpreter": interp})
    if as_json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            mark = "[green]ok[/]" if r["ok"] else "[red]FAIL[/]"
            console.print(f"{r['model']} {r['path']} T={r['tokens']}: {mark} max_rel={r['max_rel']:.2e} "
                          f"rms_rel={r['rms_rel']:.2e}" + (" (Triton interpreter)" if interp else ""))
    if not all(r["ok"] for r in results):
        raise typer.Exit(1)


@ledger_app.command("show")
def ledger_show(ledger: LedgerOpt = DEFAULT_LEDGER, as_json: JsonOpt = False) -> None:
    """Counts of rows per campaign and status."""
    from mxmoe.tuning.ledger.store import Ledger

    with Ledger.open_readonly(ledger) as led:
        summary = led.summary()
        campaigns = {c.name: c for c in led.campaigns()}
    if as_json:
        print(json.dumps(summary, indent=2, default=str))
        return
    statuses = sorted({s for counts in summary.values() for s in counts})
    table = Table(title=f"ledger {ledger}: rows per campaign and status")
    table.add_column("campaign", no_wrap=True, min_width=max((len(n) for n in campaigns), default=8))
    table.add_column("baseline", no_wrap=True)
    for s in statuses:
        table.add_column(s, justify="right")
    table.add_column("rows", justify="right")
    for name, c in campaigns.items():
        counts = summary.get(name, {})
        table.add_row(escape(name), escape(c.baseline or "-"), *(str(counts.get(s, 0)) for s in statuses),
                      str(sum(counts.values())))
    console.print(table)


@ledger_app.command("export")
def ledger_export(out: FsPath, ledger: LedgerOpt = DEFAULT_LEDGER,
                  campaign: Annotated[str | None, typer.Option(help="Only this campaign")] = None,
                  csv: Annotated[bool, typer.Option("--csv", help="CSV (the only format today)")] = True) -> None:
    """Write the ledger's attempts as CSV."""
    from mxmoe.tuning.ledger.store import Ledger

    with Ledger.open_readonly(ledger) as led:
        n = led.export_csv(out, campaign=campaign)
    console.print(f"wrote {n} rows to {out}")


@ledger_app.command("merge")
def ledger_merge(other: FsPath, ledger: LedgerOpt = DEFAULT_LEDGER) -> None:
    """Bring in a ledger written on another machine, without duplicates (conflicts are kept and reported)."""
    from mxmoe.tuning.ledger.store import Ledger

    if not other.exists():
        raise typer.BadParameter(f"{other} does not exist")
    with Ledger.open(ledger) as led:
        rep = led.merge(other)
    console.print(rep)


@ledger_app.command("scan")
def ledger_scan(ledger: LedgerOpt = DEFAULT_LEDGER, campaign: str | None = None, as_json: JsonOpt = False) -> None:
    """Integrity scan: conflicting duplicates, bad supersede links, missing provenance. Exit 1 on findings."""
    from mxmoe.tuning.ledger.scan import scan
    from mxmoe.tuning.ledger.store import Ledger

    with Ledger.open_readonly(ledger) as led:
        findings = scan(led, campaign)
    if as_json:
        print(json.dumps([f.__dict__ if hasattr(f, "__dict__") else list(f) for f in findings], default=str))
    else:
        for f in findings:
            console.print(f)
        console.print(f"{len(findings)} finding(s)")
    if findings:
        raise typer.Exit(1)


@app.command()
def claim(
    campaign: str,
    baseline: Annotated[str, typer.Option(help="Baseline campaign")],
    ledger: LedgerOpt = DEFAULT_LEDGER,
    profile: Annotated[str, typer.Option(help="Spec profile: mxmoe or seed708")] = "mxmoe",
    model: Annotated[str | None, typer.Option(help="Scope the claim to this model's rows")] = None,
    path: Annotated[str | None, typer.Option(help="Scope the claim to this path's rows")] = None,
    each: Annotated[bool, typer.Option("--each", help="One verdict per (model, path) of the baseline (what each "
                                       "shipped table rests on), the ledger read once")] = False,
    as_json: JsonOpt = False,
) -> None:
    """The single claimable_win gate: prints the verdict with every reason; exit 1 when not claimable (with
    --each: when any (model, path) is not)."""
    from mxmoe.spec import Profile
    from mxmoe.tuning.judge.gate import claimable_wins
    from mxmoe.tuning.ledger.store import Ledger
    from mxmoe.tuning.report.build import INTERPRETER_BANNER, is_interpreter

    if each and (model or path):
        raise typer.BadParameter("--each judges every (model, path) of the baseline: drop --model / --path")
    profiles = [p.value for p in Profile]
    if profile not in profiles:
        raise MxmoeUsageError(f"--profile {profile!r} is not a spec profile; use one of {', '.join(profiles)}")
    with Ledger.open_readonly(ledger) as led:
        led.require_campaign(campaign)
        led.require_campaign(baseline, role="baseline campaign")
        interp = any(is_interpreter(r) for r in (*led.attempts(campaign), *led.attempts(baseline)))
        base_rows = led.attempts(baseline)
        scopes = sorted({(r.model, r.path) for r in base_rows}) if each else [(model, path)]
        verdicts = claimable_wins(led, campaign, baseline, Profile(profile), scopes=scopes,
                                  rows=(led.attempts(campaign), base_rows))
    labels = [":".join(x for x in scope if x) or "all" for scope in scopes]
    if as_json:
        out = [{"scope": label, "claimable": v.claimable, "reasons": list(v.reasons)}
               for label, v in zip(labels, verdicts, strict=True)]
        print(json.dumps(out if each else {k: out[0][k] for k in ("claimable", "reasons")}, indent=2))
    else:
        for label, v in zip(labels, verdicts, strict=True):
            colour = "green" if v.claimable else "red"
            scope = f" {label}" if each else ""
            console.print(f"[{colour}]claimable={v.claimable}[/]{scope} ({profile} profile)")
            for r in v.reasons:  # `  - <reason>`, wrapped with a hanging indent at the console's width
                for line in bullet(r, console.width):
                    console.print(line, markup=False, highlight=False, soft_wrap=True)
        if interp:
            console.print(f"[bold yellow]{INTERPRETER_BANNER}[/]")
    if not all(v.claimable for v in verdicts):
        raise typer.Exit(1)


def _register_subcommands() -> None:
    """Commands that live in their own modules (sweep, export, noise, bench, guardrail, report, legal)."""
    from mxmoe.cli.commands.guardrail import register as register_guardrail
    from mxmoe.cli.commands.legal import register as register_legal
    from mxmoe.cli.commands.report import register as register_report
    from mxmoe.cli.commands.sweep import register as register_sweep

    for register in (register_sweep, register_guardrail, register_report, register_legal):
        register(app)


_register_subcommands()


def main() -> None:  # pragma: no cover - console entry
    app(prog_name="mxmoe")

