"""The report's plots: matplotlib Figures (Agg, no pyplot state), rendered to PNG bytes.

Each function takes ReportData pieces and returns a Figure; `render_all` gives {file name: PNG bytes}.
The #708 section reuses the same figures on its own panels rather than drawing new kinds, so a #708
panel reads the same here as in the campaign-wide figures.
PNGs carry no Software metadata, so the same ledger gives the same bytes run to run.
"""

from __future__ import annotations

import io
import math
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

from matplotlib.figure import Figure

from mxmoe.shapes import WORKLOAD_708
from mxmoe.spec import Profile
from mxmoe.tuning.judge.gate import Outcome, PointVerdict
from mxmoe.tuning.report.bars import workload_best, workload_grid, workload_png, workload_shapes
from mxmoe.tuning.report.data import NOT_A_MEASUREMENT, panel_label, status_counts

if TYPE_CHECKING:
    from mxmoe.tuning.report.data import BestPoint, PanelKey, ReportData

OUTCOME_COLOURS = {Outcome.WIN: "#2a9d3f", Outcome.REGRESSION: "#d62728", Outcome.NEUTRAL: "#7f7f7f"}
FAKE_OUTCOMES = {Outcome.WIN: "faster", Outcome.REGRESSION: "slower", Outcome.NEUTRAL: "within noise"}
SIDE_COLOURS = {"baseline": "#1f77b4", "candidate": "#ff7f0e"}
FP8_FLOOR_LABEL, FP8_COLOUR = "FP8 compute floor", "#9467bd"  # dash-dot purple: apart from the bf16 floors' greys
PLOT_CAVEAT = f"{NOT_A_MEASUREMENT.upper()}: Triton interpreter / fake clock times"
PANEL_W, PANEL_H, MAX_COLS = 5.0, 3.6, 3


def png_bytes(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    return buf.getvalue()


def _grid(n: int, columns: int | None = None) -> tuple[Figure, list]:
    cols = max(1, min(columns or MAX_COLS, n))
    rows = max(1, math.ceil(n / cols))
    fig = Figure(figsize=(PANEL_W * cols, PANEL_H * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n] if n else axes[:1]


def _side(ax, name: str, pts: Sequence[BestPoint]) -> None:
    """Medians with CI bars; non-claimable points hollow, with their own legend entry."""
    for claimable in (True, False):
        sel = [p for p in pts if p.claimable is claimable]
        if not sel:
            continue
        ts = [p.timing for p in sel]
        err = [[t.median_us - t.ci_lo_us for t in ts], [t.ci_hi_us - t.median_us for t in ts]]
        face = SIDE_COLOURS[name] if claimable else "none"
        ax.errorbar([p.tokens for p in sel], [t.median_us for t in ts], yerr=err, fmt="o", capsize=3,
                    color=SIDE_COLOURS[name], markerfacecolor=face,
                    label=name if claimable else f"{name} (non-claimable)")
    ax.plot([p.tokens for p in pts], [p.timing.median_us for p in pts], "-", color=SIDE_COLOURS[name], alpha=0.5)


def _floors(ax, pts: Sequence[BestPoint]) -> None:
    sources = ", ".join(sorted({p.floors_source for p in pts}))
    hits = ", ".join(sorted({p.hits_source for p in pts}))
    ts = [p.tokens for p in pts]
    ax.plot(ts, [p.memory_floor_us for p in pts], "--", color="#555555",
            label=f"memory floor ({sources}; {hits} experts hit)")
    ax.plot(ts, [p.compute_floor_us for p in pts], ":", color="#000000", label=f"compute floor ({sources})")
    fp8 = [p for p in pts if p.fp8_floor_us is not None]
    if fp8:  # only where the rows carry an e4m3 rate: the a8w4 e4m3 path's ceiling, below the bf16 floor
        ax.plot([p.tokens for p in fp8], [p.fp8_floor_us for p in fp8], "-.", color=FP8_COLOUR,
                label=f"{FP8_FLOOR_LABEL} ({', '.join(sorted({p.floors_source for p in fp8}))})")


def latency_figure(cand: dict[PanelKey, tuple[BestPoint, ...]], base: dict[PanelKey, tuple[BestPoint, ...]],
                   panels: Sequence[PanelKey] | None = None, columns: int | None = None) -> Figure:
    """Latency vs T, log-log, one panel per (model, path[, routing]): best medians with 95% CIs and the
    floors (candidate's rows where it measured a T, else the baseline's). `panels` fixes the panels and
    their order (a panel neither side measured is drawn empty, so a grid of `columns` stays aligned)."""
    keys = sorted(set(cand) | set(base)) if panels is None else list(panels)
    fig, axes = _grid(len(keys), columns)
    for ax, key in zip(axes, keys, strict=False):
        ax.set(title=panel_label(key))
        if key not in cand and key not in base:
            ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
            continue
        floors = {p.tokens: p for p in base.get(key, ())} | {p.tokens: p for p in cand.get(key, ())}
        _floors(ax, [floors[t] for t in sorted(floors)])
        if key in base:
            _side(ax, "baseline", base[key])
        if key in cand:
            _side(ax, "candidate", cand[key])
        ax.set(xscale="log", yscale="log", xlabel="tokens T", ylabel="layer time (us)")
        ax.legend(fontsize=7)
    if not keys:
        axes[0].text(0.5, 0.5, "no measured layer rows", ha="center", va="center")
    return fig


def _percent(v: float) -> str:
    return f"{v:.0%}" if v >= 0.1 else f"{v * 100:.2g}%"


def roofline_heatmap(cand: dict[PanelKey, tuple[BestPoint, ...]]) -> Figure:
    """Roofline fraction of the candidate's best row, (model, path) x T; `*` marks non-claimable cells."""
    keys = sorted(cand)
    tokens = sorted({p.tokens for pts in cand.values() for p in pts})
    grid = [[math.nan] * len(tokens) for _ in keys]
    fig = Figure(figsize=(max(5.0, 0.8 * len(tokens) + 3), max(2.5, 0.5 * len(keys) + 1.5)), layout="constrained")
    ax = fig.subplots()
    for i, key in enumerate(keys):
        for p in cand[key]:
            j = tokens.index(p.tokens)
            grid[i][j] = p.roofline_fraction
            ax.text(j, i, _percent(p.roofline_fraction) + ("" if p.claimable else "*"), ha="center", va="center",
                    fontsize=8, color="white" if p.roofline_fraction < 0.6 else "black")
    top = max([1.0, *(v for row in grid for v in row if not math.isnan(v))])
    im = ax.imshow(grid or [[math.nan]], cmap="viridis", vmin=0.0, vmax=top, aspect="auto")
    ax.set_xticks(range(len(tokens)), [str(t) for t in tokens])
    ax.set_yticks(range(len(keys)), [panel_label(k) for k in keys])
    ax.set(xlabel="tokens T", title="max(floors) / best median (* non-claimable)")
    if not keys:
        ax.text(0, 0, "no measured layer rows", ha="center", va="center")
    fig.colorbar(im, ax=ax, label="fraction of the roofline")
    return fig


def outcome_label(outcome: Outcome, not_a_measurement: bool) -> str:
    """A point's legend label: the outcome, or on interpreter / fake-clock times what the numbers did, with the
    caveat ("faster (not a measurement)"): such a point is no win or regression."""
    return f"{FAKE_OUTCOMES[outcome]} ({NOT_A_MEASUREMENT})" if not_a_measurement else outcome.value


def speedup_figure(points: Sequence[PointVerdict], not_a_measurement: bool = False) -> Figure:
    """baseline / candidate median per point with the CI-pair bars, coloured by the mxmoe outcome (labelled
    `outcome_label`: no "win" on interpreter / fake-clock times)."""
    panels: dict[PanelKey, list[PointVerdict]] = {}
    for p in points:
        panels.setdefault((p.model, p.path, p.routing), []).append(p)
    fig, axes = _grid(len(panels))
    for ax, (key, pts) in zip(axes, sorted(panels.items()), strict=False):
        ax.axhline(1.0, color="#999999", linewidth=1)
        for outcome, colour in OUTCOME_COLOURS.items():
            sel = [p for p in pts if p.outcome is outcome and p.speedup is not None and p.speedup_ci is not None]
            if sel:
                err = [[p.speedup - p.speedup_ci[0] for p in sel], [p.speedup_ci[1] - p.speedup for p in sel]]
                ax.errorbar([p.tokens for p in sel], [p.speedup for p in sel], yerr=err, fmt="o", capsize=3,
                            color=colour, label=outcome_label(outcome, not_a_measurement))
        miss = [p.tokens for p in pts if p.outcome is Outcome.MISSING]
        if miss:
            ax.plot(miss, [1.0] * len(miss), "x", color="#d62728", markersize=9, label="missing")
        ax.set(xscale="log", xlabel="tokens T", ylabel="speedup (baseline / candidate)", title=panel_label(key))
        ax.legend(fontsize=7)
    if not panels:
        axes[0].text(0.5, 0.5, "no coverage points", ha="center", va="center")
    return fig


def rejections_figure(counts: Counter[str]) -> Figure:
    """Active rows per status text (`illegal:<REASON>` split by reason), most frequent on top."""
    items = sorted(counts.items(), key=lambda kv: (kv[1], kv[0]))
    fig = Figure(figsize=(7.0, max(2.0, 0.35 * len(items) + 1.0)), layout="constrained")
    ax = fig.subplots()
    colours = ["#2a9d3f" if k == "measured" else "#d62728" for k, _ in items]
    bars = ax.barh([k for k, _ in items], [v for _, v in items], color=colours)
    ax.bar_label(bars, padding=2, fontsize=8)
    ax.set(xlabel="rows", title="candidate rows per status / reason code")
    return fig


def workload_figures(data: ReportData) -> dict[str, Figure]:
    """The #708 section's figures: latency per #708 shape (paths in rows, routings side by side), and the
    roofline and speedup figures restricted to the #708 panels; none when the campaign has no #708 row."""
    shapes = workload_shapes(data)
    if not shapes:
        return {}
    figs = {}
    for shape in shapes:
        panels, columns = workload_grid(data, shape)
        figs[workload_png(shape)] = latency_figure(workload_best(data.cand_best, shape),
                                                   workload_best(data.base_best, shape), panels, columns)
    figs["roofline_708.png"] = roofline_heatmap(workload_best(data.cand_best))
    if data.verdicts:
        points = data.verdicts[Profile.MXMOE].comparison.points
        figs["speedup_708.png"] = speedup_figure([p for p in points if p.model in WORKLOAD_708],
                                                 bool(data.interpreter_rows))
    return figs


def render_all(data: ReportData) -> dict[str, bytes]:
    """{file name: PNG} for every plot the page shows."""
    figs = {
        "latency.png": latency_figure(data.cand_best, data.base_best),
        "roofline.png": roofline_heatmap(data.cand_best),
        "rejections.png": rejections_figure(status_counts(data.cand_rows)),
    }
    if data.verdicts:
        figs["speedup.png"] = speedup_figure(data.verdicts[Profile.MXMOE].comparison.points,
                                             bool(data.interpreter_rows))
    figs |= workload_figures(data)
    if data.interpreter_rows:  # interpreter / fake-clock times: every plot says so in its title
        for fig in figs.values():
            fig.suptitle(PLOT_CAVEAT, color="#d62728", fontweight="bold")
    return {name: png_bytes(fig) for name, fig in figs.items()}
