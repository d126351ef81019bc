"""The report's HTML page: sections, tables, inline images and the provenance summary, from `ReportData`.

Split from `report` (which writes the files): no ledger reads, no measuring here, only rendering of what
`data.collect` gathered. It includes bars.py's sections and imports it; bars.py imports the
HTML pieces from markup.py, never this module (issue 25: no import cycle).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

from mxmoe.spec import Profile
from mxmoe.tuning.judge.gate import Verdict
from mxmoe.tuning.ledger.records import Attempt, Status, active
from mxmoe.tuning.report import bars
from mxmoe.tuning.report.data import (
    HEADLINE_COLUMNS,
    INTERPRETER_BANNER,
    NOT_A_MEASUREMENT,
    SECTIONS,
    ReportData,
    format_headline,
    headline_cells,
    panel_label,
    row_floors,
    status_counts,
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
from mxmoe.tuning.timing.bench import NOMINAL_BANDWIDTH, NOMINAL_FP8_RATE, NOMINAL_RATE


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


def verdict_html(profile: Profile, v: Verdict) -> str:
    flag = '<span class="ok">CLAIMABLE</span>' if v.claimable else '<span class="no">NOT claimable</span>'
    items = "".join(f"<li><code>{esc(r)}</code></li>" for r in v.reasons)
    reasons = f"<details open><summary>{len(v.reasons)} reason(s)</summary><ul>{items}</ul></details>" if items else ""
    return f"<h3>claimable_win, {esc(profile.value)} profile: {flag}</h3>{reasons}"


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


def _point_rows(data: ReportData) -> list[tuple[str, ...]]:
    seed = {p.label: p.outcome.value for p in data.verdicts[Profile.SEED708].comparison.points}
    return [(p.label, ci_text(p.base), ci_text(p.cand), speedup_text(p), p.outcome.value, seed[p.label],
             p.cand_config_key or "-") for p in data.verdicts[Profile.MXMOE].comparison.points]


def _speedup_section(data: ReportData, pngs: dict[str, bytes]) -> str:
    if not data.verdicts:
        return html_section(SECTIONS[4], "<p>No baseline campaign given.</p>")
    heads = ("point", "baseline us [95% CI]", "candidate us [95% CI]", "speedup [CI pair]", "mxmoe", "seed708",
             "candidate config")
    colours = ("green faster, red slower, grey within noise: interpreter / fake-clock times, not a measurement, "
               "so no point is a win or a regression" if data.interpreter_rows else
               "green win, red regression, grey neutral")
    note = ("<p>Bars pair the CI ends (base_lo / cand_hi, base_hi / cand_lo). Colour: mxmoe outcome "
            f"({colours}; a red x is a point the candidate did not measure).</p>")
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


def _fp8_note(data: ReportData) -> str:
    """The FP8 line's one sentence, only where a drawn point carries it (rows with an e4m3 rate)."""
    pts = [p for side in (data.cand_best, data.base_best) for ps in side.values() for p in ps
           if p.fp8_floor_us is not None]
    if not pts:
        return ""
    nominal = (f" Rows with nominal floors carry the nominal H100 e4m3 rate ({NOMINAL_FP8_RATE / 1e12:.0f} TFLOP/s, "
               f"{NOT_A_MEASUREMENT})."
               if any(p.floors_source == "nominal" for p in pts) else "")
    return ("<p>Dash-dot line, FP8 compute floor: the layer's FLOPs at the dense e4m3 tensor-core rate measured in "
            "the same run, the ceiling an a8w4 layer on the e4m3 path can approach; bf16-carrier kernels cannot "
            "pass the bf16 compute floor, which the roofline fraction stays judged against." + nominal + "</p>")


def _provenance_section(data: ReportData) -> str:
    sides = {data.campaign: provenance_summary(data.cand_rows)}
    if data.baseline is not None:
        sides[data.baseline] = provenance_summary(data.base_rows)
    names = [name for name, _ in sides[data.campaign]]
    cells = [(name, *(dict(summary)[name] for summary in sides.values())) for name in names]
    return html_section(SECTIONS[7], html_table(("field", *sides), cells))


def page(data: ReportData, pngs: dict[str, bytes]) -> str:
    """The whole HTML page: no external references, every image inline."""
    title = f"mxmoe report: {data.campaign}" + (f" vs {data.baseline}" if data.baseline else "")
    if data.interpreter_rows:
        title += f" ({NOT_A_MEASUREMENT})"
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
        bars.bars_section(data),
        html_section(SECTIONS[2], nominal, _fp8_note(data), html_img("latency.png", pngs)),
        html_section(SECTIONS[3], "<p>Candidate's best layer row per point: max(memory floor, compute floor) / median "
                 "(the row's own roofline_fraction where the sweep stored one).</p>", html_img("roofline.png", pngs),
                 _above_roofline(data)),
        _speedup_section(data, pngs),
        bars.workload_section(data, pngs),
        html_section(SECTIONS[6], html_img("rejections.png", pngs), html_table(("status", "active rows"), counts)),
        _provenance_section(data),
    ]
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f"<style>{_CSS}</style></head><body>" + "\n".join(body) + "</body></html>\n")
