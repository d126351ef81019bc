"""README's side-by-side table from a committed vs_peer CSV (never by hand).

    python benchmarks/vs_peer_table.py results/h100/2026-12-06_vs_peer_final.csv --path a16w4 --scope experts

Cells: mxmoe us / peer us (peer / mxmoe; above 1.00x mxmoe is faster), one row per shape at the T columns given,
then the geomean over every T of the CSV for that shape, and a summary line over all points.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from collections import defaultdict


def _geomean(xs: list[float]) -> float:
    return math.exp(sum(map(math.log, xs)) / len(xs))


def table(rows: list[dict], columns: list[int]) -> str:
    by_shape: dict[str, dict[int, dict]] = defaultdict(dict)
    for r in rows:
        by_shape[r["shape"]][int(r["T"])] = r
    head = "| shape | " + " | ".join(f"T={t}" for t in columns) + " | geomean (T) | worst |"
    lines = [head, "|---|" + "---:|" * (len(columns) + 2)]
    for shape, pts in by_shape.items():
        cells = []
        for t in columns:
            r = pts.get(t)
            cells.append("-" if r is None else
                         f"{float(r['mxmoe_us']):.0f} / {float(r['peer_us']):.0f} ({float(r['ratio']):.2f}x)")
        ratios = {t: float(r["ratio"]) for t, r in pts.items()}
        worst = min(ratios, key=ratios.get)
        tail = f" | {_geomean(list(ratios.values())):.3f}x ({len(ratios)}) | {ratios[worst]:.3f}x at T={worst} |"
        lines.append(f"| {shape} | " + " | ".join(cells) + tail)
    allr = [float(r["ratio"]) for r in rows]
    lines.append("")
    lines.append(f"All {len(allr)} points: geomean {_geomean(allr):.3f}x, {sum(x >= 1 for x in allr)} at >= 1.00x, "
                 f"worst {min(allr):.3f}x.")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv")
    ap.add_argument("--path", default="a16w4")
    ap.add_argument("--scope", default="experts")
    ap.add_argument("--columns", default="1,16,128,1024,4096,32768")
    args = ap.parse_args(argv)
    with open(args.csv, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["path"] == args.path and r["scope"] == args.scope and r["ratio"]]
    print(table(rows, [int(c) for c in args.columns.split(",")]))


if __name__ == "__main__":
    main(sys.argv[1:])
