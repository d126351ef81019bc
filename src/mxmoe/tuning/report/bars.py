"""The report's issue-driven views: the performance bars of issues 9 and 13, and the #708 workload section.

They sit apart from the spec sections (data.py, html.py) because they judge the campaign against
targets the issues set, which move when an issue moves, while the spec sections follow the locked spec. Nothing
is measured or re-judged here: a bar's value is a ratio of a BestPoint (floor / median), a HeadlineRow, or a
gate.claimable_win verdict already in ReportData.

A bar over a T range is judged on its worst point, so a target met on average but missed at one T is
missed. The points a range expects are those either campaign measured in that panel (the baseline's
coverage, as the gate reads it): a point the candidate lacks is named in the row, never skipped, and a
point whose best row is non-claimable cannot meet a bar.

The #708 section exists because #708 is judged on its own shapes and routings (skew changes both the
floor and the best tile), which the campaign-wide figures average away. It prints the campaign-wide
verdicts with the #708 points counted inside them, and the claim of each #708 (model, path) (ReportData.scoped,
what each #708 table rests on).

matplotlib is not imported here: html.py includes these sections in the page, plots.py
draws the figures the #708 section shows; both import this module, which imports neither (only data.py
and markup.py below it).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from mxmoe.shapes import FULL_MODELS, MODELS, PREFILL_MIN_T, WORKLOAD_708, Path
from mxmoe.spec import Profile
from mxmoe.tuning.judge.gate import Outcome, PointVerdict, Verdict
from mxmoe.tuning.ledger.store import Ledger
from mxmoe.tuning.report.data import (
    BARS_SECTION,
    WORKLOAD_SECTION,
    BestPoint,
    PanelKey,
    ReportData,
    collect,
    panel_label,
)
from mxmoe.tuning.report.markup import (
    ci_text,
    esc,
    html_img,
    html_section,
    html_table,
    scoped_verdict_text,
    speedup_text,
)

# Issue 9 (the full-expert models): decode is a weight stream, so a16w4 at T <= 16 must reach 0.80 of the
# memory floor; prefill (T >= 4096) must reach 0.60 of the dense bf16 compute floor; tuning must pay for
# itself: geometric-mean speedup over the baseline's grid >= 1.10 with no regression at any point.
ISSUE9_MODELS = FULL_MODELS
ISSUE9_PATH = Path.A16W4
DECODE_BAR_MAX_T = 16
DECODE_MEMORY_FRACTION = 0.80
PREFILL_BAR_MIN_T = PREFILL_MIN_T
PREFILL_COMPUTE_FRACTION = 0.60
TUNED_GEOMEAN_SPEEDUP = 1.10
# Issue 13 (the #708 shapes): T = 1 under 25 us for every shape and path (the reference's long small-token
# latency); T >= 4096 at 0.50 of the bf16 rate for a16w4 and a4w4 (its low MFU at large shapes); and a
# claimable win under both spec profiles.
T1_LATENCY_US = 25.0
PREFILL_708_COMPUTE_FRACTION = 0.50
PREFILL_708_PATHS = (Path.A16W4, Path.A4W4)
ROUTING_ORDER = ("uniform", "skewed")  # side by side first, the other routings after them


@dataclass(frozen=True, slots=True)
class Bar:
    """One target checked on one panel. `at` is the T the value was read at (the worst point of a range);
    `value` is None when there is nothing to judge, and `shortfall` then says why. `at_most`: the value
    must not exceed the target (latency) rather than reach it. Units: "" a fraction, "x" a speedup,
    "us" a latency, "claim" a verdict (1.0 claimable, 0.0 not)."""

    issue: int
    name: str
    panel: str
    tokens: str
    at: int | None
    value: float | None
    target: float
    unit: str
    at_most: bool
    met: bool
    shortfall: str  # "" when met, e.g. "0.37 of 0.80; candidate misses T=8"


BAR_COLUMNS = ("issue", "bar", "panel", "T", "measured", "target", "met", "shortfall")


def _fmt(v: float | None, unit: str) -> str:
    if v is None:
        return "-"
    return {"x": f"{v:.3f}x", "us": f"{v:.1f} us", "claim": "claimable" if v else "not claimable"}.get(unit, f"{v:.2f}")


def _target(b: Bar) -> str:
    t = {"x": f"{b.target:.2f}x", "us": f"{b.target:g} us", "claim": "claimable"}.get(b.unit, f"{b.target:.2f}")
    return t if b.unit == "claim" else ("<= " if b.at_most else ">= ") + t


def bar_cells(b: Bar) -> tuple[str, ...]:
    tokens = b.tokens if b.at is None or b.tokens == f"T={b.at}" else f"{b.tokens} (worst T={b.at})"
    return (str(b.issue), b.name, b.panel, tokens, _fmt(b.value, b.unit), _target(b), "yes" if b.met else "NO",
            b.shortfall or "-")


def _ts(tokens: Iterable[int]) -> str:
    return "T=" + ",".join(str(t) for t in sorted(tokens))


def _range_bar(issue: int, name: str, data: ReportData, key: PanelKey, tokens: str, in_range: Callable[[int], bool],
               value_of: Callable[[BestPoint], float], target: float, unit: str = "", at_most: bool = False) -> Bar:
    """The worst candidate point of `key` in range against `target`, naming missing and non-claimable T."""
    cand = [p for p in data.cand_best.get(key, ()) if in_range(p.tokens)]
    seen = {p.tokens for p in (*data.cand_best.get(key, ()), *data.base_best.get(key, ())) if in_range(p.tokens)}
    missing = seen - {p.tokens for p in cand}
    if not cand:
        why = f"candidate misses {_ts(missing)}" if missing else f"no point measured at {tokens}"
        return Bar(issue, name, panel_label(key), tokens, None, None, target, unit, at_most, False, why)
    worst = (max if at_most else min)(cand, key=value_of)
    value = value_of(worst)
    problems = []
    if value > target if at_most else value < target:
        problems.append(f"{_fmt(value, unit)} over {target:g} {unit}".rstrip() if at_most
                        else f"{_fmt(value, unit)} of {_fmt(target, unit)}")
    if missing:
        problems.append(f"candidate misses {_ts(missing)}")
    nonclaim = [p.tokens for p in cand if not p.claimable]
    if nonclaim:
        problems.append(f"non-claimable at {_ts(nonclaim)}")
    return Bar(issue, name, panel_label(key), tokens, worst.tokens, value, target, unit, at_most, not problems,
               "; ".join(problems))


def _panels(data: ReportData, models: Sequence[str], paths: Iterable[str] | None = None) -> list[PanelKey]:
    keep = None if paths is None else {Path(p).value for p in paths}
    return sorted(k for k in set(data.cand_best) | set(data.base_best)
                  if k[0] in models and (keep is None or k[1] in keep))


def _memory_fraction(p: BestPoint) -> float:
    return p.memory_floor_us / p.timing.median_us


def _compute_fraction(p: BestPoint) -> float:
    return p.compute_floor_us / p.timing.median_us


def _speedup_bars(data: ReportData) -> list[Bar]:
    """Issue 9's tuned-over-baseline bar per (model, path), read off the mxmoe headline."""
    heads = {(h.model, h.path): h for h in data.headline if h.model in ISSUE9_MODELS}
    pairs = {k[:2] for k in _panels(data, ISSUE9_MODELS)} | set(heads)
    name, target, out = "tuned / baseline geomean", TUNED_GEOMEAN_SPEEDUP, []
    for model, path in sorted(pairs):
        h, label = heads.get((model, path)), f"{model}/{path}"
        if h is None:
            why = "no baseline campaign" if data.baseline is None else f"baseline {data.baseline} has no {label} point"
            out.append(Bar(9, name, label, "grid", None, None, target, "x", False, False, why))
            continue
        problems = [] if h.geomean is None or h.geomean >= target else [f"{h.geomean:.3f}x of {target:.2f}x"]
        problems += [f"{h.regressions} regression(s)"] * bool(h.regressions)
        problems += [f"candidate misses {h.missing} of {h.points} point(s)"] * bool(h.missing)
        out.append(Bar(9, name, label, "grid", None, h.geomean, target, "x", False, not problems, "; ".join(problems)))
    return out


def reasons_708(v: Verdict) -> tuple[str, ...]:
    """The verdict's reasons that name a #708 point (labels are `model/path/T=..`)."""
    return tuple(r for r in v.reasons if any(f":{m}/" in r for m in WORKLOAD_708))


def _claim_bars(data: ReportData) -> list[Bar]:
    out = []
    for profile in Profile:
        name, v = f"claimable_win ({profile.value})", data.verdicts.get(profile)
        if v is None:
            out.append(Bar(13, name, "campaign-wide", "coverage", None, None, 1.0, "claim", False, False,
                           "no baseline campaign: no verdict"))
            continue
        own = reasons_708(v)
        why = "" if v.claimable else f"{len(v.reasons)} reason(s), {len(own)} on #708 points: {(own or v.reasons)[0]}"
        out.append(Bar(13, name, "campaign-wide", "coverage", None, float(v.claimable), 1.0, "claim", False,
                       v.claimable, why))
    return out


def performance_bars(data: ReportData) -> tuple[Bar, ...]:
    """Every bar of issues 9 and 13 on the panels this campaign (or its baseline) measured: issue 9 rows
    for its models, issue 13 rows only when a #708 shape is in the campaign."""
    decode, prefill = f"T<={DECODE_BAR_MAX_T}", f"T>={PREFILL_BAR_MIN_T}"
    out: list[Bar] = []
    for key in _panels(data, ISSUE9_MODELS, (ISSUE9_PATH,)):
        out.append(_range_bar(9, "decode memory-floor fraction", data, key, decode,
                              lambda t: t <= DECODE_BAR_MAX_T, _memory_fraction, DECODE_MEMORY_FRACTION))
        out.append(_range_bar(9, "prefill bf16-rate fraction", data, key, prefill,
                              lambda t: t >= PREFILL_BAR_MIN_T, _compute_fraction, PREFILL_COMPUTE_FRACTION))
    out += _speedup_bars(data)
    if not workload_shapes(data):
        return tuple(out)
    for key in _panels(data, WORKLOAD_708):
        if MODELS[key[0]].min_tokens <= 1:  # gpt-oss-3072 starts at T=256 in the #708 workload
            out.append(_range_bar(13, "T=1 latency", data, key, "T=1", lambda t: t == 1, lambda p: p.timing.median_us,
                                  T1_LATENCY_US, "us", at_most=True))
    for key in _panels(data, WORKLOAD_708, PREFILL_708_PATHS):
        out.append(_range_bar(13, "prefill bf16-rate fraction", data, key, prefill,
                              lambda t: t >= PREFILL_BAR_MIN_T, _compute_fraction, PREFILL_708_COMPUTE_FRACTION))
    return tuple(out + _claim_bars(data))


def format_bars(bars: Sequence[Bar]) -> str:
    """The bars as a GitHub Markdown table, one row per (bar, panel)."""
    lines = ["| " + " | ".join(BAR_COLUMNS) + " |", "|---:|---|---|---|---:|---:|---|---|"]
    lines += ["| " + " | ".join(bar_cells(b)) + " |" for b in bars]
    return "\n".join(lines) + "\n"


def bars_markdown(ledger: Ledger, campaign: str, baseline: str | None, *, bandwidth: float | None = None,
                  rate: float | None = None) -> str:
    """Markdown performance bars for a README or a note, from the ledger only (floors as the report reads them)."""
    return format_bars(performance_bars(collect(ledger, campaign, baseline, bandwidth=bandwidth, rate=rate)))


def bars_section(data: ReportData) -> str:
    bars = performance_bars(data)
    if not bars:
        return html_section(BARS_SECTION, "<p>No panel of an issue 9 model or a #708 shape in this campaign.</p>")
    met = sum(b.met for b in bars)
    note = (f"<p>{met} of {len(bars)} bars met. Fractions are floor / median of the candidate's best row (memory "
            "floor for decode, dense bf16 compute floor for prefill); a range is judged on its worst point, and a "
            "point the candidate lacks or measured only non-claimably fails its bar. The speedup bar is the mxmoe "
            "headline; the claim bars are the campaign-wide verdicts.</p>")
    md = f"<details><summary>Markdown for the README</summary><pre>{esc(format_bars(bars))}</pre></details>"
    return html_section(BARS_SECTION, note, html_table(BAR_COLUMNS, (bar_cells(b) for b in bars)), md)


# ---- #708 workload ---------------------------------------------------------------------------------


def workload_shapes(data: ReportData) -> tuple[str, ...]:
    """The #708 shapes the candidate campaign holds rows of (any status), in WORKLOAD_708 order."""
    held = {r.model for r in data.cand_rows}
    return tuple(m for m in WORKLOAD_708 if m in held)


def workload_best(best: dict[PanelKey, tuple[BestPoint, ...]], shape: str | None = None
                  ) -> dict[PanelKey, tuple[BestPoint, ...]]:
    """The panels of one #708 shape (every #708 shape when None)."""
    return {k: v for k, v in best.items() if (k[0] == shape if shape else k[0] in WORKLOAD_708)}


def routing_order(routings: Iterable[str]) -> tuple[str, ...]:
    rs = set(routings)
    return tuple(r for r in ROUTING_ORDER if r in rs) + tuple(sorted(rs - set(ROUTING_ORDER)))


def workload_grid(data: ReportData, shape: str) -> tuple[tuple[PanelKey, ...], int]:
    """(panels, columns): one row per path, one column per routing, so uniform and skewed sit side by side."""
    keys = set(workload_best(data.cand_best, shape)) | set(workload_best(data.base_best, shape))
    paths, routings = sorted({k[1] for k in keys}), routing_order(k[2] for k in keys)
    return tuple((shape, p, r) for p in paths for r in routings), len(routings)


def workload_png(shape: str) -> str:
    return f"latency_708_{shape}.png"


def _workload_table(data: ReportData, shape: str) -> str:
    panels, _ = workload_grid(data, shape)
    routings = routing_order(k[2] for k in panels)
    cand = {(p.path, p.routing, p.tokens): p for pts in workload_best(data.cand_best, shape).values() for p in pts}
    base_t = {(p.path, p.tokens) for pts in workload_best(data.base_best, shape).values() for p in pts}
    verdicts = {pr: {(p.model, p.path, p.routing, p.tokens): p for p in v.comparison.points}
                for pr, v in data.verdicts.items()}
    heads = ["path", "T"]
    for r in routings:
        heads += [f"{r}: candidate us [95% CI]", f"{r}: roofline", f"{r}: speedup [CI pair]", f"{r}: mxmoe / seed708"]
    rows = []
    for path, t in sorted(base_t | {(p, t) for p, _, t in cand}):
        cells = [path, str(t)]
        for r in routings:
            b = cand.get((path, r, t))
            mx = verdicts.get(Profile.MXMOE, {}).get((shape, path, r, t))
            seed = verdicts.get(Profile.SEED708, {}).get((shape, path, r, t))
            cells += ["-" if b is None else ci_text(b.timing.point_stats()),
                      "-" if b is None else f"{b.roofline_fraction:.2f}" + ("" if b.claimable else "*"),
                      "-" if mx is None else speedup_text(mx),
                      " / ".join(v.outcome.value for v in (mx, seed) if v is not None) or "-"]
        rows.append(cells)
    return html_table(heads, rows)


def workload_counts(points: Iterable[PointVerdict]) -> dict[str, int]:
    """Outcomes of the #708 points of one comparison: points, win, neutral, regression, missing."""
    pts = [p for p in points if p.model in WORKLOAD_708]
    n = Counter(p.outcome for p in pts)
    return {"points": len(pts)} | {o.value: n[o] for o in (Outcome.WIN, Outcome.NEUTRAL, Outcome.REGRESSION,
                                                          Outcome.MISSING)}


def _workload_verdicts(data: ReportData) -> str:
    if not data.verdicts:
        return "<p>No baseline campaign given: no verdict.</p>"
    note = ("<p>The campaign-wide verdicts, with the #708 points counted inside them; then the claim of each #708 "
            "(model, path), scoped to the rows its table rests on.</p>")
    heads = ("profile", "campaign-wide verdict", "#708 points", "win", "neutral", "regression", "missing",
             "reasons on #708 points")
    rows = [(p.value, "CLAIMABLE" if v.claimable else "NOT claimable", *workload_counts(v.comparison.points).values(),
             "; ".join(reasons_708(v)) or "-") for p, v in data.verdicts.items()]
    profiles = list(data.scoped)
    scoped = {p: dict(data.scoped[p]) for p in profiles}
    pairs = sorted({pair for p in profiles for pair in scoped[p] if pair[0] in WORKLOAD_708})
    per_pair = [(m, path, *(scoped_verdict_text(scoped[p][m, path]) for p in profiles)) for m, path in pairs]
    table = html_table(("model", "path", *(f"claimable_win ({p.value})" for p in profiles)), per_pair) if pairs else ""
    return note + html_table(heads, rows) + table


def workload_section(data: ReportData, pngs: dict[str, bytes]) -> str:
    """The #708 section, or "" when the campaign holds no row of a #708 shape."""
    shapes = workload_shapes(data)
    if not shapes:
        return ""
    parts = [f"<p>#708 shapes in this campaign: {esc(', '.join(shapes))}. Per shape: latency against the memory "
             "and compute floors (one row of panels per path, routings side by side), then the candidate's best "
             "median, roofline fraction (* non-claimable) and speedup over the baseline per routing.</p>"]
    for shape in shapes:
        parts += [f"<h3>{esc(shape)}</h3>", html_img(workload_png(shape), pngs), _workload_table(data, shape)]
    parts += ["<h3>Roofline fraction and speedup, #708 panels</h3>", html_img("roofline_708.png", pngs),
              html_img("speedup_708.png", pngs), "<h3>claimable_win on the #708 points</h3>",
              _workload_verdicts(data)]
    return html_section(WORKLOAD_SECTION, *parts)
