"""Second sweep: the baseline's own config measured again (a later campaign's rows of that config) against the
baseline, point by point, judged by the spec's own win / regression predicates as if it were a candidate.

Every point the two runs disagree on "beyond the band" is a false win or a false regression the gate would see
from drift alone (the gate itself calls a point neutral when its best candidate is the baseline's config). Issue 13
asks for this list beside the A/A noise run. Prints a table; --csv writes every point.

    python benchmarks/second_sweep.py --ledger w708.sqlite --campaign h100-w708 --baseline h100-w708-base \\
        --csv results/h100/2026-11-26_w708_second_sweep.csv
"""

from __future__ import annotations

import argparse
import csv

from mxmoe.spec import Profile, is_regression, is_win
from mxmoe.tuning.judge.gate import best_row, layer_rows
from mxmoe.tuning.ledger.store import Ledger


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ledger", required=True)
    ap.add_argument("--campaign", required=True, help="the later campaign whose rows of the baseline config are read")
    ap.add_argument("--baseline", required=True)
    ap.add_argument("--csv", default=None)
    args = ap.parse_args()
    with Ledger.open(args.ledger) as led:
        base, again = layer_rows(led.attempts(args.baseline)), layer_rows(led.attempts(args.campaign))
    rows = []
    for pt in sorted(base):
        b = best_row(base[pt])
        c = best_row([r for r in again.get(pt, []) if r.config_key == b.config_key])
        if c is None:
            continue
        bs, cs = b.stats(), c.stats()
        bt, ct = b.timing, c.timing
        verdicts = {p.value: ("win" if is_win(pt[3], bs, cs, p) else "regression" if is_regression(pt[3], bs, cs, p)
                              else "agree") for p in Profile}
        rows.append({"model": pt[0], "path": pt[1], "routing": pt[2], "tokens": pt[3], "config_key": b.config_key,
                     "first_us": round(bt.median_us, 3), "second_us": round(ct.median_us, 3),
                     "rel": round(ct.median_us / bt.median_us - 1, 5),
                     "first_ci_rel": round((bt.ci_hi_us - bt.ci_lo_us) / bt.median_us, 5),
                     "second_ci_rel": round((ct.ci_hi_us - ct.ci_lo_us) / ct.median_us, 5),
                     **{f"{k}_verdict": v for k, v in verdicts.items()}})
    off = [r for r in rows if r["mxmoe_verdict"] != "agree" or r["seed708_verdict"] != "agree"]
    print(f"{len(rows)} points measured twice with the baseline's config; {len(off)} disagree beyond the band:")
    for r in off:
        print(f"  {r['model']}/{r['path']}/T={r['tokens']}: {r['first_us']:.1f} -> {r['second_us']:.1f} us "
              f"({r['rel']:+.2%}; CIs {r['first_ci_rel']:.2%}, {r['second_ci_rel']:.2%}) "
              f"mxmoe={r['mxmoe_verdict']} seed708={r['seed708_verdict']}")
    if rows:
        rels = sorted(abs(r["rel"]) for r in rows)
        print(f"|rel| median {rels[len(rels) // 2]:.2%}, max {rels[-1]:.2%}")
    if args.csv and rows:
        with open(args.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)


if __name__ == "__main__":
    main()
