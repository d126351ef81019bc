"""The campaign report: one self-contained HTML page and its PNG plots, built from the ledger only.

No torch or triton here, and nothing is re-measured: every number on the page is a ledger row, a
spec.py formula applied to one, or a gate.py verdict. matplotlib (the `report` extra) is imported
only when plots are drawn, so `headline_markdown` and `bars.bars_markdown` work without it.

Sections of the page (`SECTIONS`, in this order): the `claimable_win` verdict under both profiles,
campaign-wide and per (model, path) (the claim each shipped table rests on), and the headline table; the
performance bars of issues 9 and 13, so a reader sees how far the campaign is from its targets and not only from
its baseline; latency vs T against the memory and compute floors (and, where the rows carry the e4m3 rate, the
FP8 compute floor as a line: the ceiling of the a8w4 e4m3 path); roofline fraction; speedup over the baseline;
the #708 workload, only when the campaign measured a #708 shape, because #708 is judged on its own shapes and
routings rather than averaged into the rest; rejections per status / reason code; provenance. A banner heads
the page when any row ran on the Triton interpreter or a fake clock. The bars and the #708 view live in
bars.py: targets move with their issues, the spec sections do not.

The modules, bottom-up (each imports only those before it, so a reader can start at the bottom; issue 25):
data.py collects the data (ReportData, floors, best rows, headline); markup.py holds the HTML
pieces; bars.py the issue-driven views; html.py renders the page and plots.py the PNGs; this
module, at the top, writes the files. It re-exports data's public names, which the CLI and callers import
from here; data.py says how a point's best row, floors and experts hit are read.
"""

from __future__ import annotations

import os
from pathlib import Path as FsPath

from mxmoe.tuning.ledger.store import Ledger
from mxmoe.tuning.report.data import (
    BARS_SECTION,
    HEADLINE_COLUMNS,
    INTERPRETER_BANNER,
    INTERPRETER_MARKS,
    NOT_A_MEASUREMENT,
    SECTIONS,
    WORKLOAD_SECTION,
    BestPoint,
    HeadlineRow,
    PanelKey,
    ReportData,
    best_layer_rows,
    best_point,
    collect,
    format_headline,
    headline_cells,
    headline_markdown,
    headline_rows,
    is_interpreter,
    panel_label,
    row_experts_hit,
    row_floors,
    row_fp8_rate,
    row_shape,
    status_counts,
)
from mxmoe.tuning.report.html import page

__all__ = [
    "build_report",
    "BARS_SECTION",
    "HEADLINE_COLUMNS",
    "INTERPRETER_BANNER",
    "INTERPRETER_MARKS",
    "NOT_A_MEASUREMENT",
    "SECTIONS",
    "WORKLOAD_SECTION",
    "BestPoint",
    "HeadlineRow",
    "PanelKey",
    "ReportData",
    "best_layer_rows",
    "best_point",
    "collect",
    "format_headline",
    "headline_cells",
    "headline_markdown",
    "headline_rows",
    "is_interpreter",
    "panel_label",
    "row_experts_hit",
    "row_floors",
    "row_fp8_rate",
    "row_shape",
    "status_counts",
]


def build_report(
    ledger: Ledger,
    campaign: str,
    baseline: str | None,
    out_dir: FsPath | str | os.PathLike[str],
    *,
    bandwidth: float | None = None,
    rate: float | None = None,
) -> FsPath:
    """Write `out_dir/index.html` (images inline as base64, so the file stands alone) and the same
    plots as PNG files beside it; return the path of index.html. Reads the ledger, measures nothing."""
    try:
        from mxmoe.tuning.report import plots
    except ImportError as exc:  # matplotlib is the `report` extra
        raise ImportError(f"the report needs matplotlib: pip install 'mxmoe[report]' ({exc})") from exc
    data = collect(ledger, campaign, baseline, bandwidth=bandwidth, rate=rate)
    out = FsPath(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pngs = plots.render_all(data)
    for name, png in pngs.items():
        (out / name).write_bytes(png)
    index = out / "index.html"
    index.write_text(page(data, pngs), encoding="utf-8")
    return index
