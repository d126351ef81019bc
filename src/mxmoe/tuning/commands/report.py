"""`mxmoe report`: the campaign's HTML report from the ledger. `cli.py` calls `register(app)`.

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
    from mxmoe.tuning.ledger import Ledger
    from mxmoe.tuning.report import build_report, headline_markdown

    if not ledger.exists():
        raise typer.BadParameter(f"ledger {ledger} does not exist")
    out = out_dir or FsPath("results") / f"report-{campaign}"
    with Ledger.open(ledger) as led:
        if baseline is None:
            baseline = next((c.baseline for c in led.campaigns() if c.name == campaign), None)
        try:
            index = build_report(led, campaign, baseline, out, bandwidth=bandwidth, rate=rate)
        except ValueError as exc:
            err.print(f"[red]report refused:[/] {exc}")
            raise typer.Exit(2) from exc
        headline = headline_markdown(led, campaign, baseline) if baseline else ""
    if as_json:
        print(json.dumps({"index": str(index), "baseline": baseline, "headline_markdown": headline}, indent=2))
        return
    print(index)
    print(headline or "(no baseline: no headline)")


def register(app: typer.Typer) -> None:
    """Add `report` to the `mxmoe` app."""
    app.command()(report)
