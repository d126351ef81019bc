"""What a legality validation prints at the end: the confusion matrix (predicted verdict x observed outcome), the
predicted-legal configs that failed, the predicted-illegal ones that ran fine, and the shared-memory model's error
against the compiler's. It prints and never asserts: tests/test_legality.py makes the claims on the committed table.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict

from mxmoe.config import TileConfig
from mxmoe.tuning.sweep.compile_check.sample import cfg_fields

FAILED = ("compile", "load", "wrapper", "launch")  # outcomes where the config did not get to run ("load",
# "wrapper": --cpu-compile only; a GPU row's "compile" includes the load, its "launch" the wrapper)
UNKNOWN = ("not_run", "timeout", "worker_lost", "harness_error")  # outcomes that say nothing about the config


def summarize_rows(rows: list[dict]) -> None:
    """Confusion matrix (predicted x observed) and the shared-memory model's error; prints, never asserts."""
    _print_matrix(rows)
    known = [r for r in rows if r["outcome"] not in UNKNOWN]
    _print_verdict_errors(known)
    _print_smem_error(known)


def _short(r: dict) -> str:
    return f"{r['shape']} {r['path']} s{r['stage']} {TileConfig.from_dict(cfg_fields(r)).short()}"


def _print_matrix(rows: list[dict]) -> None:
    matrix: dict[str, Counter] = defaultdict(Counter)
    for r in rows:
        pred = "legal" if r["predicted"] == "legal" else f"illegal:{r['reason']}"
        matrix[pred][r["outcome"]] += 1
    outcomes = sorted({o for c in matrix.values() for o in c})
    print("\nconfusion matrix: rows = predicted, columns = observed outcome")
    print(f"{'':28}" + "".join(f"{o:>12}" for o in outcomes))
    for pred in sorted(matrix):
        print(f"{pred:28}" + "".join(f"{matrix[pred][o]:>12}" for o in outcomes))


def _print_verdict_errors(known: list[dict]) -> None:
    bad_legal = [r for r in known if r["predicted"] == "legal" and r["outcome"] in FAILED]
    failures = [r for r in known if r["predicted"] == "illegal" and r["reason"] != "degenerate"]
    fine = [r for r in failures if r["outcome"] == "ok"]
    print(f"\npredicted legal but failed: {len(bad_legal)}")
    for r in bad_legal[:20]:
        print(f"  {_short(r)}: {r['outcome']} {r['error'][:160]}")
    if failures:
        print(f"predicted illegal (failure codes) that compiled and ran fine: {len(fine)}/{len(failures)} "
              f"= {100 * len(fine) / len(failures):.1f}%")
        for reason, n in Counter(r["reason"] for r in fine).most_common():
            print(f"  {reason}: {n}")


def _print_smem_error(known: list[dict]) -> None:
    errs = []
    for r in known:
        if r["compiler_smem"] not in ("", "0") and r["modelled_smem"] != "":
            cc, mod = int(r["compiler_smem"]), int(r["modelled_smem"])
            errs.append(((mod - cc) / cc, mod - cc, r))
    if not errs:
        return
    rel = [e for e, _, _ in errs]
    legal_rel = [e for e, _, r in errs if r["predicted"] == "legal"]
    print(f"\nsmem model error (modelled - compiler) / compiler over {len(errs)} compiles: "
          f"mean {statistics.mean(rel):+.3f}, median {statistics.median(rel):+.3f}, "
          f"max |err| {max(abs(e) for e in rel):.3f}, "
          f"within 10%: {sum(abs(e) <= 0.10 for e in rel)}/{len(rel)}; predicted-legal within 10%: "
          f"{sum(abs(e) <= 0.10 for e in legal_rel)}/{len(legal_rel)}")
    print("worst 10:")
    for e, d, r in sorted(errs, key=lambda x: -abs(x[0]))[:10]:
        print(f"  {e:+.3f} ({d:+7d} B) {_short(r)} compiler {r['compiler_smem']} {r['predicted']}")
