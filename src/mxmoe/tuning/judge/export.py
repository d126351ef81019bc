"""Export a campaign's best measured layer configs as tuned tables that `dispatch.py` loads.

No torch or triton here. One JSON file per (device, shape, path), named by `dispatch.table_filename`,
mapping each T of the campaign's grid to the lowest-median active measured layer row's config
(ties: the smaller key). Only claimable rows are exported; `allow_nonclaimable` exports the rest too
(interpreter sweeps, dirty trees) and stamps the file `"claimable": false` with the reasons, so a
reader never mistakes it for a proven table. `_metadata` carries what dispatch checks on load
(triton version, kernel source hash) and what a reader needs to trace every entry back to its row:
the git commit(s), campaign, the ledger CSV export written beside it, and each entry's row key.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Collection, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path as FsPath
from typing import Any

from mxmoe._version import __version__
from mxmoe.dispatch import METADATA_KEY, TABLE_SCHEMA_VERSION, table_filename
from mxmoe.shapes import Activation, MoEShape
from mxmoe.tuning.judge.gate import Outcome, best_row, layer_rows, point_outcome
from mxmoe.tuning.ledger.records import Attempt, Status, active, utc_now
from mxmoe.tuning.ledger.store import Ledger


class ExportError(ValueError):
    """Nothing exportable, or rows that cannot share one table (mixed triton or kernel versions)."""


@dataclass(frozen=True, slots=True)
class ExportedTable:
    file: FsPath
    device: str
    model: str
    path: str
    tokens: tuple[int, ...]
    claimable: bool


def _shape(row: Attempt) -> MoEShape:
    d = dict(row.shape)
    d["activation"] = Activation(d["activation"])
    return MoEShape(**d)


def _one(values: set[Any], what: str, where: str) -> Any:
    if len(values) != 1:
        raise ExportError(f"{where}: rows disagree on {what} ({sorted(map(str, values))}); one table needs one")
    return next(iter(values))


def _fastest(rows: Sequence[Attempt], by: Callable[[Attempt], Hashable]) -> dict[Any, Attempt]:
    """The lowest-median row of each group `by` names (ties: the smaller key)."""
    out: dict[Any, Attempt] = {}
    for r in rows:
        k = by(r)
        if k not in out or (r.timing.median_us, r.key) < (out[k].timing.median_us, out[k].key):
            out[k] = r
    return out


def _keep_unless_won(best: dict[int, Attempt], group: Sequence[Attempt], base_rows: Sequence[Attempt],
                     routings: Sequence[str]) -> dict[int, Attempt]:
    """At each T, a config other than the baseline's only where it is proven better: a win over the baseline
    (mxmoe profile) under at least one of `routings` and a regression under none of them, measured under every
    routing the baseline has at that T; of several, the best geometric-mean speedup over those routings. Elsewhere
    the campaign's own row of the baseline's config, not a config that merely measured within noise of it. So a
    table departs from the heuristic only where a win was proven, and with several routings (`robust_over`) never
    where it would lose under any of them (the runtime cannot see the routing it will be called with). A T whose
    baseline config the campaign never measured (or that the baseline lacks) keeps the fastest row. The table's
    entry is the chosen config's row under the first routing."""
    primary = routings[0]
    base = {pt: best_row(rs) for pt, rs in layer_rows(base_rows).items()}
    cfg_rows = _fastest(group, lambda r: (r.tokens, r.routing, r.config_key))
    out = dict(best)
    for t, fastest in best.items():
        bases = {r: base.get((fastest.model, fastest.path, r, t)) for r in routings}
        bases = {r: b for r, b in bases.items() if b is not None}
        if primary not in bases:
            continue
        base_cfg = bases[primary].config_key
        if (t, primary, base_cfg) not in cfg_rows:
            continue
        scored = []
        for cfg in {k for (tt, r, k) in cfg_rows if tt == t and r == primary and k != base_cfg}:
            rows = {r: cfg_rows.get((t, r, cfg)) for r in bases}
            if any(c is None for c in rows.values()):
                continue
            outcomes = [point_outcome(t, b, rows[r]) for r, b in bases.items()]  # the gate's verdicts
            if Outcome.REGRESSION in outcomes or Outcome.WIN not in outcomes:
                continue
            ratios = [b.timing.median_us / rows[r].timing.median_us for r, b in bases.items()]
            speedup = math.prod(ratios) ** (1 / len(bases))
            scored.append((-speedup, cfg))
        out[t] = cfg_rows[(t, primary, min(scored)[1] if scored else base_cfg)]
    return out


def _metadata(group: Sequence[Attempt], best: dict[int, Attempt], campaign: str, baseline: str | None,
              ledger_export: str | None, where: str) -> dict[str, Any]:
    used = list(best.values())
    claimable = all(r.claimable for r in used)
    commits = sorted({str(r.provenance.get("git_commit")) for r in used})
    meta: dict[str, Any] = {
        "schema": TABLE_SCHEMA_VERSION,
        "triton_version": _one({r.provenance.get("triton_version") for r in used}, "triton_version", where),
        "kernel_source_hash": _one({r.kernel_hash for r in used}, "kernel_hash", where),
        "git_commit": commits[0] if len(commits) == 1 else commits,
        "campaign": campaign,
        "baseline": baseline,
        "ledger_export": ledger_export,
        "created_at": utc_now(),
        "mxmoe_version": __version__,
        "device_name": group[0].device,
        "model": group[0].model,
        "shape": group[0].shape,
        "path": group[0].path,
        "routing": group[0].routing,
        "claimable": claimable,
        "rows": {str(t): r.key for t, r in best.items()},
        "median_us": {str(t): r.timing.median_us for t, r in best.items()},
    }
    if not claimable:
        meta["nonclaimable"] = True
        meta["nonclaimable_reasons"] = sorted({x for r in used for x in r.nonclaimable_reasons} or {"unflagged"})
    return meta


def _write_json(file: FsPath, data: dict[str, Any]) -> None:
    tmp = file.with_suffix(file.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, file)


def _usable_rows(
    ledger: Ledger, campaign: str, baseline: str | None, routings: Sequence[str],
    only: Collection[tuple[str, str]] | None, allow_nonclaimable: bool,
) -> tuple[list[Attempt], list[Attempt]]:
    """The active measured layer rows a table may be built from, at `routings` and `only`'s (model, path) pairs:
    the campaign's (claimable ones unless `allow_nonclaimable`) and the baseline's. ExportError when the campaign
    has none at the first routing, or none of them is claimable."""
    def wanted(r: Attempt) -> bool:
        return r.stage == "layer" and r.status is Status.MEASURED and r.routing in routings and (
            only is None or (r.model, r.path) in only)

    rows = [r for r in active(ledger.attempts(campaign)) if wanted(r)]
    base_rows = [r for r in active(ledger.attempts(baseline)) if wanted(r)] if baseline is not None else []
    if not any(r.routing == routings[0] for r in rows):
        raise ExportError(f"campaign {campaign!r} has no measured layer rows at routing {routings[0]!r}")
    usable = rows if allow_nonclaimable else [r for r in rows if r.claimable]
    if not usable:
        reasons = sorted({x for r in rows for x in r.nonclaimable_reasons})
        raise ExportError(f"campaign {campaign!r}: none of its {len(rows)} measured layer rows is claimable "
                          f"({', '.join(reasons)}); pass --allow-nonclaimable to export them stamped as such")
    return usable, base_rows


def export_tables(
    ledger: Ledger,
    campaign: str,
    out_dir: str | os.PathLike[str],
    *,
    allow_nonclaimable: bool = False,
    routing: str = "uniform",
    ledger_export: str | os.PathLike[str] | None = None,
    only: Collection[tuple[str, str]] | None = None,
    baseline: str | None = None,
    robust_over: Sequence[str] = (),
) -> list[ExportedTable]:
    """Write one table per (device, shape, path) of `campaign`; returns what was written.

    `baseline`: the campaign the claim was judged against; each T then takes the fastest row only where it is a
    win over the baseline, and the campaign's row of the baseline's config elsewhere (`_keep_unless_won`).
    `robust_over`: more routings (e.g. "skewed") the campaign and the baseline measured; with `baseline`, a T then
    departs from the baseline's config only for a config that wins under one of the routings and regresses under
    none. The table's entries and timings stay those of `routing`.

    `ledger_export`: where to write the campaign's rows as CSV (recorded in every table's metadata).
    `only`: the (model, path) pairs to export, e.g. those whose scoped claim (`claimable_win(model=,
    path=)`) holds; a table for an unfinished pair would stretch its last entry over the T it never measured.
    """
    routings = (routing, *(r for r in dict.fromkeys(robust_over) if r != routing))
    if len(routings) > 1 and baseline is None:
        raise ExportError(f"robust_over={list(robust_over)} needs the baseline the campaign is judged against")
    usable, base_rows = _usable_rows(ledger, campaign, baseline, routings, only, allow_nonclaimable)
    export_path = None
    if ledger_export is not None:
        FsPath(ledger_export).parent.mkdir(parents=True, exist_ok=True)
        ledger.export_csv(ledger_export, campaign=campaign)
        export_path = os.fspath(ledger_export)
    groups: dict[tuple[str, str, str], list[Attempt]] = {}
    for r in usable:
        groups.setdefault((r.device, json.dumps(r.shape, sort_keys=True), r.path), []).append(r)
    out = FsPath(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for (device, _, path), group in sorted(groups.items()):
        primary = [r for r in group if r.routing == routing]
        if not primary:
            continue  # only the other routings were measured for this shape: no table to anchor
        shape = _shape(primary[0])
        file = out / table_filename(shape, path, device)
        if any(w.file == file for w in written):
            raise ExportError(f"{file.name}: two shapes of the campaign share one table name (same dimensions)")
        best = dict(sorted(_fastest(primary, lambda r: r.tokens).items()))
        if baseline is not None:
            best = _keep_unless_won(best, group, [r for r in base_rows if r.device == device and r.path == path
                                                  and r.shape == primary[0].shape], routings)
        meta = _metadata(primary, best, campaign, baseline, export_path, file.name)
        if len(routings) > 1:
            meta["robust_over"] = list(routings[1:])
        _write_json(file, {METADATA_KEY: meta} | {str(t): r.config for t, r in best.items()})
        written.append(ExportedTable(file, device, primary[0].model, path, tuple(best), meta["claimable"]))
    return written
