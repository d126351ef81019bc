"""`mxmoe legal`: how a candidate space fares against the legality model, before any compile."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mxmoe.shapes import Path, get_shape


def register(app: typer.Typer) -> None:
    @app.command()
    def legal(
        model: Annotated[str, typer.Option(help="Model name or E,topk,hidden,inter")],
        path: Annotated[Path, typer.Option(help="Activation path")] = Path.A16W4,
        stage: Annotated[int, typer.Option(help="Stage 1 or 2")] = 1,
        space: Annotated[str, typer.Option(help="Candidate space: default or wide")] = "default",
        tokens: Annotated[int | None, typer.Option(help="Judge DEGENERATE tiles at this T")] = None,
        show: Annotated[str | None, typer.Option(help="'illegal' lists each rejected config")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
    ) -> None:
        """Counts per reason code for a candidate space (H100 limits); --show illegal lists the rejections."""
        from mxmoe.legality import H100, Illegal, summarize

        if stage not in (1, 2):
            raise typer.BadParameter(f"--stage must be 1 or 2, got {stage}")
        if tokens is not None and tokens < 1:
            raise typer.BadParameter(f"--tokens {tokens}: a token count is 1 or more")
        if show not in (None, "illegal"):
            raise typer.BadParameter(f"--show takes 'illegal', got {show!r}")
        s = summarize(get_shape(model), path, stage, space, H100, tokens)
        rejected = [(c, v) for c, v in s["verdicts"] if isinstance(v, Illegal)]
        if as_json:
            out = {k: v for k, v in s.items() if k != "verdicts"}
            if show:
                out["illegal"] = [{"config": c.to_dict(), "reason": v.reason.value, "detail": v.detail}
                                  for c, v in rejected]
            print(json.dumps(out, indent=2))
            return
        console = Console()
        # 80 columns when piped: the title on its own line, and every config (what --config takes) and reason code
        # whole on one line; only the detail wraps
        console.print(f"{s['shape']} {s['path']} stage {stage}, {space} space: {s['total']} configs "
                      f"({s['device']} limits)", highlight=False)
        table = Table()
        table.add_column("verdict", no_wrap=True)
        table.add_column("count", justify="right")
        for reason, n in s["counts"].items():
            if n:
                table.add_row(reason, str(n))
        console.print(table)
        if show:
            listing = Table(title="rejected configs")
            listing.add_column("config", no_wrap=True)
            listing.add_column("reason", no_wrap=True)
            listing.add_column("detail", min_width=20)
            for c, v in rejected:
                listing.add_row(c.short(), v.reason.value, escape(v.detail))
            console.print(listing)
