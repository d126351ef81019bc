"""The campaign report: one self-contained HTML page and its PNG plots, built from the ledger only.

No torch or triton here, and nothing is re-measured: every number on the page is a ledger row, a
spec.py formula applied to one, or a gate.py verdict. matplotlib (the `report` extra) is imported
only when plots are drawn, so `headline_markdown` and `report_bars.bars_markdown` work without it.

Sections of the page (`SECTIONS`, in this order): the `claimable_win` verdict under both profiles,
campaign-wide and per (model, path) (the claim each shipped table rests on), and the headline table; the
performance bars of issues 9 and 13, so a reader sees how far the campaign is from its targets and not only from
its baseline; latency vs T against the memory and compute floors; roofline fraction; speedup over the baseline;
the #708 workload, only when the campaign measured a #708 shape, because #708 is judged on its own shapes and
routings rather than averaged into the rest; rejections per status / reason code; provenance. A banner heads
the page when any row ran on the Triton interpreter or a fake clock. The bars and the #708 view live in
report_bars.py: targets move with their issues, the spec sections here do not.

"Best" at a grid point (model, path, routing, T) is the active measured layer row with the lowest
median among claimable rows, else among all rows (then it is drawn hollow and marked non-claimable),
the rule `gate.compare` uses.

Floors (DESIGN.md "Locked spec") need the device copy bandwidth and the dense bf16 rate measured in
the sweep's own run, and the experts the routing hit. Per row, looked up in this order:
- provenance `bandwidth_Bps` and `bf16_rate_flops` (flat keys; `floors_source` names their origin,
  "measured" when absent), or provenance `floors` = {bandwidth, rate, source} as `Floors.to_dict()`
  writes it (what tuning/worker.py stores today);
- else `build_report(bandwidth=, rate=)`, labelled "given";
- else the nominal H100 numbers of tuning/bench.py (3.0e12 B/s, 7.9e14 FLOP/s), labelled "nominal".
Experts hit: provenance `experts_hit`, else shape `experts_hit`, else `spec.expected_experts_hit`
(uniform routing), labelled "expected". A row's own `roofline_fraction` wins over a recomputed one.
"""

from __future__ import annotations

import base64
import html
import math
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path as FsPath

from mxmoe.shapes import Activation, MoEShape, Path
from mxmoe.spec import (
    PointStats,
    Profile,
    compute_floor_us,
    expected_experts_hit,
    flops,
    layer_bytes,
    memory_floor_us,
    roofline_fraction,
)
from mxmoe.tuning.bench import NOMINAL_BANDWIDTH, NOMINAL_RATE
from mxmoe.tuning.gate import Comparison, Outcome, PointVerdict, Verdict, claimable_wins, compare
from mxmoe.tuning.ledger import Ledger
from mxmoe.tuning.records import INTERPRETER, Attempt, Status, active

INTERPRETER_BANNER = "Triton interpreter rows: timings are not claims"
INTERPRETER_MARKS = frozenset({"interpreter", "fake_clock"})  # nonclaimable reasons that mean "not a GPU time"
BARS_SECTION = "Performance bars"
WORKLOAD_SECTION = "#708 workload"  # drawn only when the campaign holds rows of a #708 shape
SECTIONS = (
    "Verdict and headline",
    BARS_SECTION,
    "Latency vs T (roofline view)",
    "Roofline fraction",
    "Speedup over baseline",
    WORKLOAD_SECTION,
    "Rejections by reason",
    "Provenance",
)
PanelKey = tuple[str, str, str]  # (model, path, routing)


@dataclass(frozen=True, slots=True)
class BestPoint:
    """One campaign's best layer row at a grid point, with the floors it is judged against (us)."""

    model: str
    path: str
    routing: str
    tokens: int
    median_us: float
    ci_lo_us: float
    ci_hi_us: float
    claimable: bool
    memory_floor_us: float
    compute_floor_us: float
    roofline_fraction: float
    floors_source: str
    hits_source: str  # "routed" (the row's experts_hit) or "expected" (uniform routing)
    key: str

    @property
    def panel(self) -> PanelKey:
        return (self.model, self.path, self.routing)


@dataclass(frozen=True, slots=True)
class HeadlineRow:
    """Speedups (baseline / candidate median) of one (model, path) over every coverage point."""

    model: str
    path: str
    points: int
    geomean: float | None
    lo: float | None
    hi: float | None
    wins: int
    regressions: int
    missing: int


@dataclass(frozen=True, slots=True)
class ReportData:
    """Everything the page shows, read from the ledger once."""

    campaign: str
    baseline: str | None
    ledger_path: str
    cand_rows: tuple[Attempt, ...]
    base_rows: tuple[Attempt, ...]
    cand_best: dict[PanelKey, tuple[BestPoint, ...]]
    base_best: dict[PanelKey, tuple[BestPoint, ...]]
    verdicts: dict[Profile, Verdict]
    headline: tuple[HeadlineRow, ...]
    # per profile: ((model, path), verdict) for each (model, path) of the baseline, the claim one table rests on
    scoped: dict[Profile, tuple[tuple[tuple[str, str], Verdict], ...]] = field(default_factory=dict)

    @property
    def interpreter_rows(self) -> int:
        return sum(is_interpreter(r) for r in (*self.cand_rows, *self.base_rows))


def panel_label(key: PanelKey) -> str:
    """`model/path`, with `@routing` when it is not uniform (as PointVerdict.label writes it)."""
    model, path, routing = key
    return f"{model}/{path}" + ("" if routing == "uniform" else f"@{routing}")


def is_interpreter(row: Attempt) -> bool:
    """Did this row run on the Triton interpreter or time on a fake clock?"""
    return row.device == INTERPRETER or bool(INTERPRETER_MARKS & set(row.nonclaimable_reasons))


# ---- floors ----------------------------------------------------------------------------------------


def _positive(name: str, value: float | None) -> float | None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number or None, got {value!r}")
    return value


def row_floors(row: Attempt, bandwidth: float | None = None, rate: float | None = None) -> tuple[float, float, str]:
    """(copy bandwidth B/s, bf16 rate FLOP/s, source label) for a row: see the module docstring."""
    prov = row.provenance
    if "bandwidth_Bps" in prov and "bf16_rate_flops" in prov:
        return float(prov["bandwidth_Bps"]), float(prov["bf16_rate_flops"]), str(prov.get("floors_source", "measured"))
    nested = prov.get("floors")
    if isinstance(nested, dict) and "bandwidth" in nested and "rate" in nested:
        return float(nested["bandwidth"]), float(nested["rate"]), str(nested.get("source", "measured"))
    if bandwidth is not None and rate is not None:
        return bandwidth, rate, "given"
    if bandwidth is None and rate is None:
        return NOMINAL_BANDWIDTH, NOMINAL_RATE, "nominal"
    src = "given bandwidth, nominal rate" if rate is None else "nominal bandwidth, given rate"
    return bandwidth or NOMINAL_BANDWIDTH, rate or NOMINAL_RATE, src


def row_shape(row: Attempt) -> MoEShape:
    """The MoEShape a row was measured on, rebuilt from its stored `shape` dict."""
    names = {f.name for f in fields(MoEShape)}
    d = {k: v for k, v in row.shape.items() if k in names}
    try:
        return MoEShape(**(d | {"activation": Activation(d["activation"])}))
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"row {row.key}: shape {row.shape} is not a MoEShape.to_dict(): {exc}") from exc


def row_experts_hit(row: Attempt, shape: MoEShape) -> tuple[float, str]:
    """(experts hit, "routed" | "expected"): the row's own count where it stores one."""
    for source in (row.provenance, row.shape):
        if isinstance(source.get("experts_hit"), int | float):
            return float(source["experts_hit"]), "routed"
    return expected_experts_hit(shape, row.tokens), "expected"


def best_point(row: Attempt, bandwidth: float | None = None, rate: float | None = None) -> BestPoint:
    """A measured layer row with its memory and compute floors and roofline fraction."""
    assert row.median_us is not None and row.ci_lo_us is not None and row.ci_hi_us is not None
    shape = row_shape(row)
    bw, fl, source = row_floors(row, bandwidth, rate)
    hit, hits_source = row_experts_hit(row, shape)
    mem = memory_floor_us(layer_bytes(shape, Path(row.path), row.tokens, hit), bw)
    comp = compute_floor_us(flops(shape, row.tokens), fl)
    frac = row.roofline_fraction if row.roofline_fraction is not None else roofline_fraction(row.median_us, mem, comp)
    return BestPoint(row.model, row.path, row.routing, row.tokens, row.median_us, row.ci_lo_us, row.ci_hi_us,
                     row.claimable, mem, comp, frac, source, hits_source, row.key)


def best_layer_rows(
    rows: Iterable[Attempt], bandwidth: float | None = None, rate: float | None = None
) -> dict[PanelKey, tuple[BestPoint, ...]]:
    """Per (model, path, routing): the best active measured layer row at each T, sorted by T."""
    groups: dict[tuple[str, str, str, int], list[Attempt]] = {}
    for r in active(rows):
        if r.stage == "layer" and r.status is Status.MEASURED:
            groups.setdefault(r.point, []).append(r)
    out: dict[PanelKey, list[BestPoint]] = {}
    for pt in sorted(groups):
        best = min(groups[pt], key=lambda r: (not r.claimable, r.median_us, r.key))
        out.setdefault(pt[:3], []).append(best_point(best, bandwidth, rate))
    return {k: tuple(v) for k, v in out.items()}


# ---- headline --------------------------------------------------------------------------------------


def headline_rows(comparison: Comparison) -> tuple[HeadlineRow, ...]:
    """Per (model, path): geometric-mean, min and max speedup, wins, regressions and missing points."""
    groups: dict[tuple[str, str], list] = {}
    for p in comparison.points:
        groups.setdefault((p.model, p.path), []).append(p)
    out = []
    for (model, path), pts in sorted(groups.items()):
        sp = [p.speedup for p in pts if p.speedup is not None]
        geo = math.exp(sum(math.log(s) for s in sp) / len(sp)) if sp else None
        n = Counter(p.outcome for p in pts)
        out.append(HeadlineRow(model, path, len(pts), geo, min(sp, default=None), max(sp, default=None),
                               n[Outcome.WIN], n[Outcome.REGRESSION], n[Outcome.MISSING]))
    return tuple(out)


def _x(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}x"


HEADLINE_COLUMNS = ("model", "path", "points", "geomean speedup", "min", "max", "wins", "regressions", "missing")


def headline_cells(h: HeadlineRow) -> tuple[str, ...]:
    return (h.model, h.path, str(h.points), _x(h.geomean), _x(h.lo), _x(h.hi), str(h.wins), str(h.regressions),
            str(h.missing))


def format_headline(rows: Sequence[HeadlineRow]) -> str:
    """The headline as a GitHub Markdown table, one row per (model, path)."""
    lines = ["| " + " | ".join(HEADLINE_COLUMNS) + " |", "|---|---|" + "---:|" * (len(HEADLINE_COLUMNS) - 2)]
    lines += ["| " + " | ".join(headline_cells(h)) + " |" for h in rows]
    return "\n".join(lines) + "\n"


def headline_markdown(ledger: Ledger, campaign: str, baseline: str, profile: Profile = Profile.MXMOE) -> str:
    """Markdown headline for a README: speedup = baseline / candidate best-layer median per coverage
    point; wins and regressions under `profile`."""
    return format_headline(headline_rows(compare(ledger.attempts(campaign), ledger.attempts(baseline), profile)))


# ---- build -----------------------------------------------------------------------------------------


def _require_campaign(ledger: Ledger, name: str, role: str) -> None:
    known = [c.name for c in ledger.campaigns()]
    if name not in known:
        raise ValueError(f"{role} campaign {name!r} is not in ledger {ledger.path}; known: {known}")


def collect(
    ledger: Ledger, campaign: str, baseline: str | None, *, bandwidth: float | None = None, rate: float | None = None
) -> ReportData:
    """Read the rows, pick the best per point, and run the gate under both profiles (with a baseline)."""
    _positive("bandwidth", bandwidth)
    _positive("rate", rate)
    _require_campaign(ledger, campaign, "candidate")
    if baseline is not None:
        _require_campaign(ledger, baseline, "baseline")
    cand = tuple(ledger.attempts(campaign))
    base = tuple(ledger.attempts(baseline)) if baseline is not None else ()
    verdicts: dict[Profile, Verdict] = {}
    scoped: dict[Profile, tuple[tuple[tuple[str, str], Verdict], ...]] = {}
    if baseline is not None:
        pairs = sorted({(r.model, r.path) for r in base})
        for p in Profile:
            whole, *each = claimable_wins(ledger, campaign, baseline, p, scopes=[(None, None), *pairs],
                                          rows=(cand, base))
            verdicts[p], scoped[p] = whole, tuple(zip(pairs, each, strict=True))
    head = headline_rows(verdicts[Profile.MXMOE].comparison) if verdicts else ()
    return ReportData(campaign, baseline, ledger.path, cand, base, best_layer_rows(cand, bandwidth, rate),
                      best_layer_rows(base, bandwidth, rate), verdicts, head, scoped)


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
        from mxmoe.tuning import report_plots
    except ImportError as exc:  # matplotlib is the `report` extra
        raise ImportError(f"the report needs matplotlib: pip install 'mxmoe[report]' ({exc})") from exc
    data = collect(ledger, campaign, baseline, bandwidth=bandwidth, rate=rate)
    out = FsPath(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pngs = report_plots.render_all(data)
    for name, png in pngs.items():
        (out / name).write_bytes(png)
    index = out / "index.html"
    index.write_text(page(data, pngs), encoding="utf-8")
    return index


# ---- tallies ---------------------------------------------------------------------------------------


def status_counts(rows: Iterable[Attempt]) -> Counter[str]:
    """Active rows per status text (`illegal:<REASON>`, `unmeasured:<reason>`, `measured`, ...)."""
    return Counter(r.status_text for r in active(rows))


def _tally(values: Iterable[object]) -> str:
    counts = Counter("unknown" if v in (None, "") else str(v) for v in values)
    return ", ".join(f"{v} \u00d7{n}" for v, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))) or "-"


def _commit(row: Attempt) -> str | None:
    commit = row.provenance.get("git_commit")
    if not commit:
        return None
    dirty = row.provenance.get("git_dirty")
    return str(commit)[:12] + {True: " (dirty)", False: " (clean)"}.get(dirty, " (dirty?)")


def _protocol(row: Attempt) -> str:
    return f"{row.provenance.get('mode', '?')} / l2={row.provenance.get('l2', '?')}"


def provenance_summary(rows: Sequence[Attempt]) -> list[tuple[str, str]]:
    """(field, tally) pairs describing where one campaign's numbers came from."""
    live = active(rows)
    measured = [r for r in live if r.status is Status.MEASURED]
    nonclaim = [r for r in measured if not r.claimable]
    return [
        ("rows (active / superseded)", f"{len(live)} / {len(rows) - len(live)}"),
        ("devices", _tally(r.device for r in live)),
        ("git commits", _tally(_commit(r) for r in live)),
        ("triton", _tally(r.provenance.get("triton_version") for r in live)),
        ("torch", _tally(r.provenance.get("torch_version") for r in live)),
        ("kernel hash", _tally(r.kernel_hash for r in live)),
        ("measure mode / L2 policy", _tally(_protocol(r) for r in measured)),
        ("floors source", _tally(row_floors(r)[2] for r in measured)),
        ("measured rows: claimable / non-claimable", f"{len(measured) - len(nonclaim)} / {len(nonclaim)}"),
        ("non-claimable reasons", _tally(x for r in nonclaim for x in (r.nonclaimable_reasons or ("unflagged",)))),
    ]


# ---- HTML ------------------------------------------------------------------------------------------

_CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:0.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:0.9em}
th{background:#f3f3f3}.banner{background:#b00020;color:#fff;font-size:1.4em;
font-weight:bold;padding:0.8em;margin:1em 0;border:4px solid #600}.ok{color:#2a9d3f;font-weight:bold}
.no{color:#d62728;font-weight:bold}img{max-width:100%}code,pre{font-size:0.85em}"""


def esc(x: object) -> str:
    return html.escape(str(x), quote=True)


def html_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def html_img(name: str, pngs: dict[str, bytes]) -> str:
    if name not in pngs:
        return ""
    data = base64.b64encode(pngs[name]).decode("ascii")
    return f'<figure><img alt="{name}" src="data:image/png;base64,{data}"><figcaption>{name}</figcaption></figure>'


def html_section(title: str, *body: str) -> str:
    anchor = title.lower().replace(" ", "-").replace("(", "").replace(")", "").replace("#", "")
    return f'<section id="{esc(anchor)}"><h2>{esc(title)}</h2>' + "".join(body) + "</section>"


def verdict_html(profile: Profile, v: Verdict) -> str:
    flag = '<span class="ok">CLAIMABLE</span>' if v.claimable else '<span class="no">NOT claimable</span>'
    items = "".join(f"<li><code>{esc(r)}</code></li>" for r in v.reasons)
    reasons = f"<details open><summary>{len(v.reasons)} reason(s)</summary><ul>{items}</ul></details>" if items else ""
    return f"<h3>claimable_win, {esc(profile.value)} profile: {flag}</h3>{reasons}"


def scoped_verdict_text(v: Verdict) -> str:
    """`claimable`, or the first reason and how many more (a cell of the per-(model, path) table)."""
    if v.claimable:
        return "claimable"
    more = f" (+{len(v.reasons) - 1} more)" if len(v.reasons) > 1 else ""
    return f"no: {v.reasons[0]}{more}"


def _scoped_table(data: ReportData) -> str:
    """One row per (model, path): the claim scoped to the rows its shipped table rests on, under both profiles."""
    profiles = list(data.scoped)
    if not profiles:
        return ""
    by_pair: dict[tuple[str, str], dict[Profile, Verdict]] = {}
    for p in profiles:
        for pair, v in data.scoped[p]:
            by_pair.setdefault(pair, {})[p] = v
    rows = [(m, path, *(scoped_verdict_text(vs[p]) for p in profiles)) for (m, path), vs in sorted(by_pair.items())]
    return ("<h3>Per (model, path): the claim each table rests on (<code>mxmoe claim --each</code>)</h3>"
            + html_table(("model", "path", *(f"claimable_win ({p.value})" for p in profiles)), rows))


def _verdict_section(data: ReportData) -> str:
    if not data.verdicts:
        return html_section(SECTIONS[0], "<p>No baseline campaign given: no verdict, speedup or headline.</p>")
    parts = [verdict_html(p, v) for p, v in data.verdicts.items()]
    parts.append(_scoped_table(data))
    parts.append("<h3>Headline (speedup = baseline / candidate median; wins and regressions: mxmoe profile)</h3>")
    parts.append(html_table(HEADLINE_COLUMNS, (headline_cells(h) for h in data.headline)))
    md = esc(format_headline(data.headline))
    parts.append(f"<details><summary>Markdown for the README</summary><pre>{md}</pre></details>")
    return html_section(SECTIONS[0], *parts)


def ci_text(s: PointStats | None) -> str:
    return "-" if s is None else f"{s.median_us:.2f} [{s.ci_lo_us:.2f}, {s.ci_hi_us:.2f}]"


def speedup_text(p: PointVerdict) -> str:
    """`1.234x [1.200, 1.270]`: the speedup and its CI pair, `-` where the candidate has no row."""
    if p.speedup is None or p.speedup_ci is None:
        return "-"
    return f"{p.speedup:.3f}x [{p.speedup_ci[0]:.3f}, {p.speedup_ci[1]:.3f}]"


def _point_rows(data: ReportData) -> list[tuple[str, ...]]:
    seed = {p.label: p.outcome.value for p in data.verdicts[Profile.SEED708].comparison.points}
    return [(p.label, ci_text(p.base), ci_text(p.cand), speedup_text(p), p.outcome.value, seed[p.label],
             p.cand_config_key or "-") for p in data.verdicts[Profile.MXMOE].comparison.points]


def _speedup_section(data: ReportData, pngs: dict[str, bytes]) -> str:
    if not data.verdicts:
        return html_section(SECTIONS[4], "<p>No baseline campaign given.</p>")
    heads = ("point", "baseline us [95% CI]", "candidate us [95% CI]", "speedup [CI pair]", "mxmoe", "seed708",
             "candidate config")
    note = ("<p>Bars pair the CI ends (base_lo / cand_hi, base_hi / cand_lo). Colour: mxmoe outcome "
            "(green win, red regression, grey neutral; a red x is a point the candidate did not measure).</p>")
    return html_section(SECTIONS[4], note, html_img("speedup.png", pngs), html_table(heads, _point_rows(data)))


def _banner(data: ReportData) -> str:
    n = data.interpreter_rows
    if not n:
        return ""
    total = len(data.cand_rows) + len(data.base_rows)
    text = f"{INTERPRETER_BANNER} ({n} of {total} rows ran on the Triton interpreter or a fake clock)"
    return f'<div class="banner">{esc(text)}</div>'


def _above_roofline(data: ReportData) -> str:
    """Points faster than a floor: the floors or the clock are wrong for them, never the kernel right."""
    bad = [p for pts in data.cand_best.values() for p in pts if p.roofline_fraction > 1.0]
    if not bad:
        return ""
    items = ", ".join(f"{panel_label(p.panel)}/T={p.tokens} ({p.roofline_fraction:.2f})" for p in bad)
    return f'<p class="no">{len(bad)} point(s) above the roofline (time below a floor: check floors and clock): ' \
        f"{esc(items)}</p>"


def _provenance_section(data: ReportData) -> str:
    sides = {data.campaign: provenance_summary(data.cand_rows)}
    if data.baseline is not None:
        sides[data.baseline] = provenance_summary(data.base_rows)
    names = [name for name, _ in sides[data.campaign]]
    cells = [(name, *(dict(summary)[name] for summary in sides.values())) for name in names]
    return html_section(SECTIONS[7], html_table(("field", *sides), cells))


def page(data: ReportData, pngs: dict[str, bytes]) -> str:
    """The whole HTML page: no external references, every image inline."""
    from mxmoe.tuning import report_bars  # imports this module: loaded here, not at the top

    title = f"mxmoe report: {data.campaign}" + (f" vs {data.baseline}" if data.baseline else "")
    nominal = ("<p>Floors: the copy bandwidth and bf16 rate stored in each row's provenance, else the values "
               f"passed in ('given'), else nominal H100 numbers ('nominal': {NOMINAL_BANDWIDTH / 1e12:.1f} TB/s, "
               f"{NOMINAL_RATE / 1e12:.0f} TFLOP/s); experts hit from the row ('routed') or expected under uniform "
               "routing ('expected'). Hollow markers: the best row is non-claimable.</p>")
    counts = sorted(status_counts(data.cand_rows).items(), key=lambda kv: (-kv[1], kv[0]))
    body = [
        f"<h1>{esc(title)}</h1>",
        _banner(data),
        f"<p>Ledger <code>{esc(data.ledger_path)}</code>: {len(data.cand_rows)} candidate rows, "
        f"{len(data.base_rows)} baseline rows. Built from the ledger only; nothing re-measured.</p>",
        _verdict_section(data),
        report_bars.bars_section(data),
        html_section(SECTIONS[2], nominal, html_img("latency.png", pngs)),
        html_section(SECTIONS[3], "<p>Candidate's best layer row per point: max(memory floor, compute floor) / median "
                 "(the row's own roofline_fraction where the sweep stored one).</p>", html_img("roofline.png", pngs),
                 _above_roofline(data)),
        _speedup_section(data, pngs),
        report_bars.workload_section(data, pngs),
        html_section(SECTIONS[6], html_img("rejections.png", pngs), html_table(("status", "active rows"), counts)),
        _provenance_section(data),
    ]
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f"<style>{_CSS}</style></head><body>" + "\n".join(body) + "</body></html>\n")
