"""Merge the CSVs of a vs_peer grid run in parts (a device call holds about half the grid) into one CSV and PNG.

    python benchmarks/vs_peer_merge.py part1.csv part2.csv -o results/h100/2026-12-07_vs_peer_0d72a8a.csv \\
        [--commit 0d72a8a]

Why: the grid is 8 shapes x 16 T and one device call holds about half of it, so each grid is two runs whose CSVs
must become the one committed CSV that README's table (`vs_peer_table.py`) reads. Refused: parts with different
columns, a (shape, T, path, scope) point twice, or parts from different devices or commits (unless --commit names
the tree that ran, for a device whose git was stale: vs_peer reads MXMOE_COMMIT first). Rows are ordered by the
shapes' order in mxmoe.shapes.MODELS, then T, path and scope; the PNG is vs_peer's plot of the merged rows.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections import Counter
from pathlib import Path as FsPath

from vs_peer import _plot

from mxmoe.shapes import MODELS


def merge(parts: list[list[dict]], commit: str | None = None) -> list[dict]:
    """The rows of every part as one grid (see the module docstring for what is refused)."""
    heads = {tuple(p[0]) for p in parts if p}
    if len(heads) != 1:
        raise SystemExit(f"the parts' columns differ: {sorted(heads)}")
    rows = [dict(r) for p in parts for r in p]
    for field in ("device", "commit"):
        seen = {r[field] for r in rows}
        if len(seen) > 1 and not (field == "commit" and commit):
            raise SystemExit(f"the parts come from different {field}s: {sorted(seen)} (--commit names the tree)")
    seen_points = Counter((r["shape"], r["T"], r["path"], r["scope"]) for r in rows)
    dupes = sorted(k for k, n in seen_points.items() if n > 1)
    if dupes:
        raise SystemExit(f"points in more than one part: {dupes}")
    if commit:
        for r in rows:
            r["commit"] = commit
    order = {name: i for i, name in enumerate(MODELS)}
    return sorted(rows, key=lambda r: (order.get(r["shape"], len(order)), r["shape"], int(r["T"]), r["path"],
                                       r["scope"]))


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("parts", nargs="+", help="vs_peer CSVs")
    ap.add_argument("-o", "--out", required=True, help="merged CSV (the PNG is written beside it)")
    ap.add_argument("--commit", default=None, help="the commit whose tree ran, for every row")
    args = ap.parse_args(argv)
    parts = []
    for path in args.parts:
        with open(path, newline="", encoding="utf-8") as f:
            parts.append(list(csv.DictReader(f)))
    rows = merge(parts, args.commit)
    out = FsPath(args.out)
    with open(out, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    _plot(rows, out.with_suffix(".png"), f"{rows[0]['device']} {rows[0]['commit']}")
    print(f"{len(rows)} points from {len(parts)} parts: {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
