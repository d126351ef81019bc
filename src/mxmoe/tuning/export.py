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
import os
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path as FsPath
from typing import Any

from mxmoe._version import __version__
from mxmoe.dispatch import METADATA_KEY, TABLE_SCHEMA_VERSION, table_filename
from mxmoe.shapes import Activation, MoEShape
from mxmoe.spec import Profile
from mxmoe.tuning.gate import Outcome, compare
from mxmoe.tuning.ledger import Ledger
from mxmoe.tuning.records import Attempt, Status, active, utc_now


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


def _best(rows: Sequence[Attempt]) -> dict[int, Attempt]:
    best: dict[int, Attempt] = {}
    for r in rows:
        cur = best.get(r.tokens)
        if cur is None or (r.median_us, r.key) < (cur.median_us, cur.key):
            best[r.tokens] = r
    return dict(sorted(best.items()))


def _keep_unless_won(best: dict[int, Attempt], group: Sequence[Attempt], base_rows: Sequence[Attempt]) -> dict[
        int, Attempt]:
    """At each T where the gate (mxmoe profile) sees no win over the baseline, the campaign's own row of the
    baseline's config instead of the fastest row: a table then departs from the heuristic only where a win was
    proven, not where a config merely measured within noise of it. A T whose baseline config the campaign never
    measured keeps the fastest row."""
    verdicts = {p.tokens: p for p in compare(group, base_rows, Profile.MXMOE).points}
    out = dict(best)
    for t in best:
        v = verdicts.get(t)
        if v is None or v.outcome is Outcome.WIN or v.base_key is None:
            continue
        base_cfg = next(r.config_key for r in base_rows if r.key == v.base_key)
        same = [r for r in group if r.tokens == t and r.config_key == base_cfg]
        if same:
            out[t] = min(same, key=lambda r: (r.median_us, r.key))
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
        "median_us": {str(t): r.median_us for t, r in best.items()},
    }
    if not claimable:
        meta["nonclaimable"] = True
        meta["nonclaimable_reasons"] = sorted({x for r in used for x in r.nonclaimable_reasons} or {"unflagged"})
    return meta


def _write_json(file: FsPath, data: dict[str, Any]) -> None:
    tmp = file.with_suffix(file.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, file)


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
) -> list[ExportedTable]:
    """Write one table per (device, shape, path) of `campaign`; returns what was written.

    `baseline`: the campaign the claim was judged against; each T then takes the fastest row only where it is a
    win over the baseline, and the campaign's row of the baseline's config elsewhere (`_keep_unless_won`).

    `ledger_export`: where to write the campaign's rows as CSV (recorded in every table's metadata).
    `only`: the (model, path) pairs to export, e.g. those whose scoped claim (`claimable_win(model=,
    path=)`) holds; a table for an unfinished pair would stretch its last entry over the T it never measured.
    """
    def wanted(r: Attempt) -> bool:
        return r.stage == "layer" and r.status is Status.MEASURED and r.routing == routing and (
            only is None or (r.model, r.path) in only)

    rows = [r for r in active(ledger.attempts(campaign)) if wanted(r)]
    base_rows = [r for r in active(ledger.attempts(baseline)) if wanted(r)] if baseline is not None else []
    if not rows:
        raise ExportError(f"campaign {campaign!r} has no measured layer rows at routing {routing!r}")
    usable = rows if allow_nonclaimable else [r for r in rows if r.claimable]
    if not usable:
        reasons = sorted({x for r in rows for x in r.nonclaimable_reasons})
        raise ExportError(f"campaign {campaign!r}: none of its {len(rows)} measured layer rows is claimable "
                          f"({', '.join(reasons)}); pass --allow-nonclaimable to export them stamped as such")
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
        shape = _shape(group[0])
        file = out / table_filename(shape, path, device)
        if any(w.file == file for w in written):
            raise ExportError(f"{file.name}: two shapes of the campaign share one table name (same dimensions)")
        best = _best(group)
        if baseline is not None:
            best = _keep_unless_won(best, group, [r for r in base_rows if r.device == device and r.path == path
                                                  and r.shape == group[0].shape])
        meta = _metadata(group, best, campaign, baseline, export_path, file.name)
        _write_json(file, {METADATA_KEY: meta} | {str(t): r.config for t, r in best.items()})
        written.append(ExportedTable(file, device, group[0].model, path, tuple(best), meta["claimable"]))
    return written
