"""`mxmoe guardrail`: the e2e guardrail from the command line, thin over mxmoe.tuning.guardrail.run.

`register(app)` adds the command to the `mxmoe` app (mxmoe.cli.main calls it once). Kernel modules are imported
inside the command, after TRITON_INTERPRET is set on a machine without a GPU.
"""

from __future__ import annotations

import json
from pathlib import Path as FsPath
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from mxmoe.cli.common import bullet, use_interpreter_without_gpu
from mxmoe.shapes import Path

console = Console()
DEFAULT_LEDGER = FsPath("mxmoe.sqlite")


def register(app: typer.Typer) -> None:
    """Add the `guardrail` command to `app`."""
    app.command("guardrail")(guardrail)


def guardrail(
    model: Annotated[str, typer.Option("--model", help="Model family: gpt-oss or deepseek-v3.")],
    path: Annotated[Path, typer.Option(help="Activation path.")] = Path.A16W4,
    campaign: Annotated[str | None, typer.Option(help="Guard every winning config of this campaign and "
                                                      "record a GuardrailResult per config.")] = None,
    ledger: Annotated[FsPath | None, typer.Option(help="Ledger of --campaign (default mxmoe.sqlite).")] = None,
    baseline: Annotated[str | None, typer.Option(help="With --campaign: skip winners that are this baseline "
                                                      "campaign's own config wherever they won.")] = None,
    config_dir: Annotated[FsPath | None, typer.Option(help="Tuned-table directory for dispatch "
                                                           "(MXMOE_CONFIG_DIR); not with --campaign.")] = None,
    shape: Annotated[str | None, typer.Option(help="MODELS shape giving the MoE dims (without --campaign; "
                                                   "default tiny on CPU, the real model on a GPU).")] = None,
    layers: Annotated[int, typer.Option(help="Decoder layers of the model.")] = 2,
    seed: Annotated[int, typer.Option(help="Seed of the weights and token ids.")] = 0,
    small: Annotated[bool | None, typer.Option("--small/--full", help="Tiny attention and vocab "
                                                                      "(default: only without a GPU).")] = None,
    max_experts: Annotated[int, typer.Option(help="Routed experts kept per layer.")] = 32,
    e4m3: Annotated[bool, typer.Option("--e4m3", help="a8w4 only: force both stages onto FP8 (e4m3) tensor cores, "
                                                     "the weights built with their e4m3 layout; not with "
                                                     "--campaign.")] = False,
    e4m3_stage: Annotated[int | None, typer.Option("--e4m3-stage", help="With --e4m3: force only this stage (1 or "
                                                                        "2), to tell their errors apart.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Run patched vs reference model graphs (GPT-OSS / DeepSeek-V3) and check logits_diff <= 0.01; exit 1 on
    any failure. With --campaign, one run per winning config, recorded in the ledger."""
    stages = _check_options(campaign, ledger, baseline, config_dir, shape, e4m3, path, e4m3_stage)
    use_interpreter_without_gpu()
    from mxmoe.tuning.guardrail import run as g

    if model not in g.FAMILIES:
        raise typer.BadParameter(f"--model {model!r}: expected one of {', '.join(g.FAMILIES)}")
    opts: dict[str, Any] = dict(layers=layers, seed=seed, small=small, max_experts=max_experts)
    rows: list[dict[str, Any]] = []
    if campaign is None:
        report = g.run_guardrail(model, path, config=config_dir, shape=shape, e4m3=e4m3, e4m3_stages=stages, **opts)
        rows.append(report.to_dict() | {"recorded": False})
    else:
        from mxmoe.tuning.ledger.store import Ledger

        with Ledger.open(ledger or DEFAULT_LEDGER) as led:
            known = {c.name for c in led.campaigns()}
            for name in (campaign, baseline):
                if name is not None and name not in known:
                    raise typer.BadParameter(f"campaign {name!r} is not in {ledger or DEFAULT_LEDGER}")
            done = g.guard_campaign(led, campaign, model, path, baseline=baseline, **opts)
        rows += [r.to_dict() | {"recorded": True, "won_tokens": list(w.tokens), "sweep_config_key": w.config_key}
                 for w, r in done]
        if not rows and baseline is not None:
            console.print(f"campaign {campaign!r}: every {model} {path.value} winner is {baseline!r}'s own config: "
                          "nothing to guard")
            return
        if not rows:
            console.print(f"[red]campaign {campaign!r} has no claimable measured layer row for {model} "
                          f"{path.value}: nothing to guard[/]")
            raise typer.Exit(1)
    _show(rows, as_json)
    if not all(r["passed"] for r in rows):
        raise typer.Exit(1)


def _check_options(campaign: str | None, ledger: FsPath | None, baseline: str | None, config_dir: FsPath | None,
                   shape: str | None, e4m3: bool, path: Path, e4m3_stage: int | None) -> tuple[int, ...]:
    """The options that only make sense together (or apart), refused before anything is built or run; returns the
    stages --e4m3 forces."""
    if campaign is not None and shape is not None:
        raise typer.BadParameter("--shape and --campaign exclude each other: the sweep rows name the shape")
    if e4m3 and (campaign is not None or path is not Path.A8W4):
        raise typer.BadParameter("--e4m3 forces a8w4's stages onto e4m3: it needs --path a8w4 and no --campaign")
    if e4m3_stage is not None and (not e4m3 or e4m3_stage not in (1, 2)):
        raise typer.BadParameter(f"--e4m3-stage {e4m3_stage}: takes 1 or 2, with --e4m3")
    if campaign is not None and config_dir is not None:
        raise typer.BadParameter("--config-dir and --campaign exclude each other: a campaign names its configs")
    if campaign is None and baseline is not None:
        raise typer.BadParameter("--baseline needs --campaign")
    if campaign is None and ledger is not None:
        raise typer.BadParameter("--ledger needs --campaign (only campaign runs are recorded)")
    if config_dir is not None and not config_dir.is_dir():
        raise typer.BadParameter(f"--config-dir {config_dir} is not a directory")
    return (1, 2) if e4m3_stage is None else (e4m3_stage,)


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:.2e}" if isinstance(v, float) else str(v)


def _show(rows: list[dict[str, Any]], as_json: bool) -> None:
    """A table of what a user acts on (model and config keys whole, never cut mid-word at 80 columns), and each
    row's diagnostics below it as one wrapped bullet."""
    if as_json:
        print(json.dumps(rows, indent=2, default=str))
        return
    table = Table(title="mxmoe guardrail (logits_diff limit 0.01)")
    table.add_column("model", no_wrap=True)
    table.add_column("path", no_wrap=True)
    table.add_column("config", min_width=9)  # key prefixes, ", "-separated: wraps between keys
    table.add_column("outcome", no_wrap=True)
    table.add_column("logits_diff", justify="right", no_wrap=True)
    for r in rows:
        colour = "green" if r["passed"] else "red"
        table.add_row(r["model"], r["path"], ", ".join(k[:8] for k in r["config_keys"]) or "-",
                      f"[{colour}]{r['outcome']}[/]", _fmt(r["logits_diff"]))
    console.print(table)
    for r in rows:
        layer_err = ", ".join(f"{x['rms_rel']:.1e}" for x in r["layers"]) or "-"
        flips = ", ".join(str(f) for f in r.get("routing_flips", [])) or "-"
        drift = ", ".join(f"{d:.0e}" for d in r.get("input_drift", [])) or "-"
        facts = (f"{r['model']} {r['path']}: free run {_fmt(r.get('logits_diff_free'))}; vs plain "
                 f"{_fmt(r['logits_diff_vs_plain'])}; fidelity {_fmt(r['fidelity'])}; routing flips {flips}; "
                 f"input drift {drift}; layer rms_rel {layer_err}; {r['seconds']:.1f} s"
                 + (f"; {r['detail']}" if r["detail"] else ""))
        for line in bullet(facts, console.width):
            console.print(line, markup=False, highlight=False, soft_wrap=True)
    if any(r["interpreter"] for r in rows):
        console.print("  (Triton interpreter: correctness only; no timing is claimed)")
