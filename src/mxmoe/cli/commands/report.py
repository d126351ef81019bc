"""`mxmoe report`: the campaign's HTML report from the ledger. `mxmoe.cli.main` calls `register(app)`.

torch-free: the report reads the ledger only.
"""

from __future__ import annotations

import json
from pathlib import Path as FsPath
from typing import Annotated

import typer
from rich.console import Console

err = Console(stderr=True)
DEFAULT_LEDGER = FsPath("mxmoe.sqlite")


def report(
    campaign: Annotated[str, typer.Argument(help="Candidate campaign")],
    baseline: Annotated[str | None, typer.Option(help="Baseline campaign (default: the one the campaign "
                                                 "was created with)")] = None,
    ledger: Annotated[FsPath, typer.Option("--ledger", help="SQLite ledger file.")] = DEFAULT_LEDGER,
    out_dir: Annotated[FsPath | None, typer.Option("-o", "--out-dir", help="Where index.html and the PNGs go "
                                                   "(default results/report-<campaign>)")] = None,
    bandwidth: Annotated[float | None, typer.Option(help="Copy bandwidth B/s for rows that store none")] = None,
    rate: Annotated[float | None, typer.Option(help="bf16 FLOP/s for rows that store none")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Write the HTML report (plots inline) of CAMPAIGN; print the path of index.html and the headline."""
    from mxmoe.tuning.ledger.store import Ledger
    from mxmoe.tuning.report.build import INTERPRETER_BANNER, build_report, headline_markdown, is_interpreter

    out = out_dir or FsPath("results") / f"report-{campaign}"
    with Ledger.open_readonly(ledger) as led:
        if baseline is None:
            baseline = next((c.baseline for c in led.campaigns() if c.name == campaign), None)
        try:
            index = build_report(led, campaign, baseline, out, bandwidth=bandwidth, rate=rate)
        except ValueError as exc:
            err.print(f"[red]report refused:[/] {exc}")
            raise typer.Exit(2) from exc
        headline = headline_markdown(led, campaign, baseline) if baseline else ""
        rows = (*led.attempts(campaign), *(led.attempts(baseline) if baseline else ()))
        interp = any(is_interpreter(r) for r in rows)
    if as_json:
        print(json.dumps({"index": str(index), "baseline": baseline, "headline_markdown": headline,
                          "not_a_measurement": interp}, indent=2))
        return
    print(index)
    if interp:
        print(f"{INTERPRETER_BANNER.upper()}: the headline below is a pipeline check, not a result")
    print(headline or "(no baseline: no headline)")


def register(app: typer.Typer) -> None:
    """Add `report` to the `mxmoe` app."""
    app.command()(report)
