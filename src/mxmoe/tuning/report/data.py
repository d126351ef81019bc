"""The report's data: what the page and the plots show, read from the ledger once (`collect` -> ReportData).

The bottom of the report modules (issue 25: they read bottom-up, no import cycle): markup.py (HTML
pieces), bars.py (the issue-driven views), html.py (the page), plots.py (the PNGs) and
build.py (which writes the files) import this module and it imports none of them. No torch, triton or
matplotlib here, so `headline_markdown` and `bars.bars_markdown` work without the `report` extra; nothing
is re-measured: every number is a ledger row, a spec.py formula applied to one, or a gate.py verdict.

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
The FP8 compute floor (FLOPs at the dense e4m3 rate of the same run) is drawn beside them only where a row
carries that rate: provenance `fp8_rate_flops` beside the flat keys, or `floors["fp8_rate"]`; never from the
arguments or a nominal fallback, so rows without it (older ledgers, GPUs without FP8 tensor cores) draw no FP8
line. It never enters the roofline fraction, which stays judged against the bf16 floor.
Experts hit: provenance `experts_hit`, else shape `experts_hit`, else `spec.expected_experts_hit`
(uniform routing), labelled "expected". A row's own `roofline_fraction` wins over a recomputed one.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from mxmoe.shapes import Activation, MoEShape, Path
from mxmoe.spec import (
    Profile,
    compute_floor_us,
    expected_experts_hit,
    flops,
    layer_bytes,
    memory_floor_us,
    roofline_fraction,
)
from mxmoe.tuning.judge.gate import Comparison, Outcome, Verdict, claimable_wins, compare
from mxmoe.tuning.ledger.records import INTERPRETER, Attempt, Status, active
from mxmoe.tuning.ledger.store import Ledger
from mxmoe.tuning.timing.bench import NOMINAL_BANDWIDTH, NOMINAL_RATE
from mxmoe.tuning.timing.value import Timing

NOT_A_MEASUREMENT = "not a measurement"  # the label of every interpreter / fake-clock result: console, page, plots
INTERPRETER_BANNER = f"Triton interpreter or fake clock rows: {NOT_A_MEASUREMENT}; timings are not claims"
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
    timing: Timing  # the row's, whole
    claimable: bool
    memory_floor_us: float
    compute_floor_us: float
    roofline_fraction: float
    floors_source: str
    hits_source: str  # "routed" (the row's experts_hit) or "expected" (uniform routing)
    key: str
    fp8_floor_us: float | None = None  # FLOPs at the row's e4m3 rate: a line on the plot, never in the fraction

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


def _stored_floors(row: Attempt) -> tuple[float, float, str, Any] | None:
    """(bandwidth, bf16 rate, source, e4m3 rate or None) as a row's provenance stores them, flat keys first, then
    the nested `floors` dict (`Floors.to_dict()`); None where it stores neither."""
    prov = row.provenance
    if "bandwidth_Bps" in prov and "bf16_rate_flops" in prov:
        return (float(prov["bandwidth_Bps"]), float(prov["bf16_rate_flops"]),
                str(prov.get("floors_source", "measured")), prov.get("fp8_rate_flops"))
    nested = prov.get("floors")
    if isinstance(nested, dict) and "bandwidth" in nested and "rate" in nested:
        return (float(nested["bandwidth"]), float(nested["rate"]), str(nested.get("source", "measured")),
                nested.get("fp8_rate"))
    return None


def row_floors(row: Attempt, bandwidth: float | None = None, rate: float | None = None) -> tuple[float, float, str]:
    """(copy bandwidth B/s, bf16 rate FLOP/s, source label) for a row: see the module docstring."""
    stored = _stored_floors(row)
    if stored is not None:
        return stored[:3]
    if bandwidth is not None and rate is not None:
        return bandwidth, rate, "given"
    if bandwidth is None and rate is None:
        return NOMINAL_BANDWIDTH, NOMINAL_RATE, "nominal"
    src = "given bandwidth, nominal rate" if rate is None else "nominal bandwidth, given rate"
    return bandwidth or NOMINAL_BANDWIDTH, rate or NOMINAL_RATE, src


def row_fp8_rate(row: Attempt) -> float | None:
    """The dense e4m3 rate (FLOP/s) a row's provenance stores beside its floors (`_stored_floors`); None where it
    stores none (rows from before the rate existed, GPUs without FP8 tensor cores)."""
    stored = _stored_floors(row)
    rate = None if stored is None else stored[3]
    return None if rate is None else _positive("fp8_rate", float(rate))


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
    timing = row.timing
    assert timing is not None
    shape = row_shape(row)
    bw, fl, source = row_floors(row, bandwidth, rate)
    hit, hits_source = row_experts_hit(row, shape)
    mem = memory_floor_us(layer_bytes(shape, Path(row.path), row.tokens, hit), bw)
    work = flops(shape, row.tokens)
    comp = compute_floor_us(work, fl)
    fp8 = row_fp8_rate(row)
    frac = row.roofline_fraction
    if frac is None:
        frac = roofline_fraction(timing.median_us, mem, comp)
    return BestPoint(row.model, row.path, row.routing, row.tokens, timing, row.claimable, mem, comp, frac, source,
                     hits_source, row.key, None if fp8 is None else compute_floor_us(work, fp8))


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
        best = min(groups[pt], key=lambda r: (not r.claimable, r.timing.median_us, r.key))
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


# ---- collect ---------------------------------------------------------------------------------------


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


# ---- tallies ---------------------------------------------------------------------------------------


def status_counts(rows: Iterable[Attempt]) -> Counter[str]:
    """Active rows per status text (`illegal:<REASON>`, `unmeasured:<reason>`, `measured`, ...)."""
    return Counter(r.status_text for r in active(rows))
