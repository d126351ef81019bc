"""The report's HTML pieces: escaping, tables, sections, inline images and the text of a CI, a speedup or a
scoped verdict.

They sit below both bars.py (whose bars and #708 sections use them) and html.py (the page, which
includes those sections), so html.py imports bars.py and bars.py never imports it back
(issue 25: the report modules read bottom-up, with no import cycle). Nothing here knows ReportData.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Sequence

from mxmoe.spec import PointStats
from mxmoe.tuning.judge.gate import PointVerdict, Verdict


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


def scoped_verdict_text(v: Verdict) -> str:
    """`claimable`, or the first reason and how many more (a cell of the per-(model, path) table)."""
    if v.claimable:
        return "claimable"
    more = f" (+{len(v.reasons) - 1} more)" if len(v.reasons) > 1 else ""
    return f"no: {v.reasons[0]}{more}"


def ci_text(s: PointStats | None) -> str:
    return "-" if s is None else f"{s.median_us:.2f} [{s.ci_lo_us:.2f}, {s.ci_hi_us:.2f}]"


def speedup_text(p: PointVerdict) -> str:
    """`1.234x [1.200, 1.270]`: the speedup and its CI pair, `-` where the candidate has no row."""
    if p.speedup is None or p.speedup_ci is None:
        return "-"
    return f"{p.speedup:.3f}x [{p.speedup_ci[0]:.3f}, {p.speedup_ci[1]:.3f}]"
