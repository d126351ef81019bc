"""The full-coverage Pareto comparator and the one `claimable_win` gate.

No torch or triton here. Inputs are ledger rows; the verdict is a value with machine-readable
reasons, so the CLI, the report and CI all say the same thing for the same ledger.

Coverage is every (model, path, routing, tokens) point where the *baseline* has a measured row at
stage "layer": the whole layer is what users run, and per-stage rows are tuning detail. A point the
candidate did not measure blocks the claim (no cherry-picking). At each point the gate takes, per
side, the active (not superseded) measured layer row with the lowest median, preferring claimable
rows; a side with only non-claimable rows still gets a row, so the verdict says `nonclaimable:` rather
than `missing:`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from mxmoe.spec import PointStats, Profile, is_regression, is_win
from mxmoe.tuning.ledger.records import Attempt, GuardrailResult, Status, active
from mxmoe.tuning.ledger.scan import scan
from mxmoe.tuning.ledger.store import Ledger

# Top-level keys of Attempt.provenance that describe the timing protocol: when either side records
# one, both must agree (REFERENCE.md shortfall 12: candidate rows must match the baseline's protocol).
# Named as tuning/measure.py's Measurement.to_dict names them (mode: eager|graph, l2: rotate|flush|none).
PROTOCOL_KEYS = ("mode", "l2", "ci_level", "percentile_method")


class Outcome(StrEnum):
    WIN = "win"
    REGRESSION = "regression"
    NEUTRAL = "neutral"
    MISSING = "missing"  # the candidate has no measured layer row at a baseline point


@dataclass(frozen=True, slots=True)
class PointVerdict:
    """One coverage point. `speedup` = base / cand median; `speedup_ci` pairs the CI ends
    (base_lo / cand_hi, base_hi / cand_lo): the worst and best speedups the intervals allow."""

    model: str
    path: str
    routing: str
    tokens: int
    base: PointStats | None
    cand: PointStats | None
    speedup: float | None
    speedup_ci: tuple[float, float] | None
    outcome: Outcome
    cand_config_key: str | None
    base_key: str | None = None
    cand_key: str | None = None

    @property
    def label(self) -> str:
        """`model/path/T=128`, with `@routing` appended when it is not uniform."""
        suffix = "" if self.routing == "uniform" else f"@{self.routing}"
        return f"{self.model}/{self.path}/T={self.tokens}{suffix}"


@dataclass(frozen=True, slots=True)
class ParetoFront:
    """Candidate configs of one (model, path) that no other config dominates across the grid."""

    model: str
    path: str
    config_keys: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Comparison:
    profile: Profile
    points: tuple[PointVerdict, ...]
    fronts: tuple[ParetoFront, ...]

    def with_outcome(self, outcome: Outcome) -> tuple[PointVerdict, ...]:
        return tuple(p for p in self.points if p.outcome is outcome)

    @property
    def wins(self) -> tuple[PointVerdict, ...]:
        return self.with_outcome(Outcome.WIN)

    @property
    def regressions(self) -> tuple[PointVerdict, ...]:
        return self.with_outcome(Outcome.REGRESSION)

    @property
    def missing(self) -> tuple[PointVerdict, ...]:
        return self.with_outcome(Outcome.MISSING)


@dataclass(frozen=True, slots=True)
class Verdict:
    """`claimable` is True exactly when `reasons` is empty."""

    claimable: bool
    reasons: tuple[str, ...]
    comparison: Comparison


Point = tuple[str, str, str, int]  # (model, path, routing, tokens)


def layer_rows(rows: Sequence[Attempt]) -> dict[Point, list[Attempt]]:
    """The active measured layer rows per grid point: what the gate compares (per-stage rows are tuning detail)."""
    out: dict[Point, list[Attempt]] = {}
    for r in active(rows):
        if r.stage == "layer" and r.status is Status.MEASURED:
            out.setdefault(r.point, []).append(r)
    return out


def best_row(rows: Sequence[Attempt]) -> Attempt | None:
    """The row a side shows at a point: lowest median, claimable rows first; the key breaks ties so the choice is
    deterministic."""
    return min(rows, key=lambda r: (not r.claimable, r.timing.median_us, r.key), default=None)


def point_outcome(tokens: int, b: Attempt, c: Attempt, profile: Profile = Profile.MXMOE) -> Outcome:
    """The gate's verdict on one measured point, candidate row `c` against baseline row `b`: the one owner of the
    rule (the gate's comparison and export's choice of a table's configs both call it). The baseline's own config
    is neutral whatever it measured (A/A, see compare); else a regression, a win, or neutral."""
    base, cand = b.stats(), c.stats()
    assert base is not None and cand is not None  # measured rows always carry stats
    if c.config_key == b.config_key:
        return Outcome.NEUTRAL
    if is_regression(tokens, base, cand, profile):
        return Outcome.REGRESSION
    return Outcome.WIN if is_win(tokens, base, cand, profile) else Outcome.NEUTRAL


def _verdict(pt: Point, b: Attempt, c: Attempt | None, profile: Profile) -> PointVerdict:
    base = b.stats()
    if c is None:
        return PointVerdict(*pt, base, None, None, None, Outcome.MISSING, None, b.key)
    cand = c.stats()
    assert base is not None and cand is not None  # measured rows always carry stats
    speedup = base.median_us / cand.median_us
    ci = (base.ci_lo_us / cand.ci_hi_us, base.ci_hi_us / cand.ci_lo_us)
    outcome = point_outcome(pt[3], b, c, profile)
    return PointVerdict(*pt, base, cand, speedup, ci, outcome, c.config_key, b.key, c.key)


def pareto_fronts(rows: Sequence[Attempt]) -> tuple[ParetoFront, ...]:
    """Per (model, path): the configs no other config dominates.

    A dominates B when A was measured at every (routing, tokens) point B was, is no slower at any of
    them and faster at one (medians of active measured layer rows; the lowest when a config has
    several). Claimability is not considered: the front is a tuning aid, the gate judges claims.
    """
    medians: dict[tuple[str, str], dict[str, dict[tuple[str, int], float]]] = {}
    for (model, path, routing, tokens), group in layer_rows(rows).items():
        for r in group:
            cfg = medians.setdefault((model, path), {}).setdefault(r.config_key, {})
            pt = (routing, tokens)
            cfg[pt] = min(cfg.get(pt, r.timing.median_us), r.timing.median_us)

    def dominates(a: dict[tuple[str, int], float], b: dict[tuple[str, int], float]) -> bool:
        if not b.keys() <= a.keys():
            return False
        return all(a[p] <= b[p] for p in b) and any(a[p] < b[p] for p in b)

    fronts = []
    for (model, path), configs in sorted(medians.items()):
        keep = [k for k, m in configs.items() if not any(dominates(o, m) for o in configs.values())]
        fronts.append(ParetoFront(model, path, tuple(sorted(keep))))
    return tuple(fronts)


def compare(candidate: Sequence[Attempt], baseline: Sequence[Attempt], profile: Profile = Profile.MXMOE) -> Comparison:
    """Point-by-point verdicts over the baseline's coverage, and the candidate's Pareto fronts.

    A point whose best candidate row is the baseline's own config is neutral whatever the two medians say:
    the tuned table changes nothing there, so their difference is A/A drift between two runs of one kernel,
    not a win or a regression. That drift exceeds the within-run CIs: on the H100 the same config measured
    1-2% apart at T >= 8192 (power cap, temperature) and 2% at T = 128, where the regression band is 1%
    (campaigns h100-i9 and h100-w708, session 5); counted, it read as regressions, and flipped, as wins."""
    profile = Profile(profile)
    base_pts, cand_pts = layer_rows(baseline), layer_rows(candidate)
    points = []
    for pt in sorted(base_pts):
        b = best_row(base_pts[pt])
        assert b is not None  # every coverage point has at least one row
        points.append(_verdict(pt, b, best_row(cand_pts.get(pt, [])), profile))
    return Comparison(profile, tuple(points), pareto_fronts(candidate))


def _protocol_reasons(p: PointVerdict, b: Attempt, c: Attempt) -> list[str]:
    out = []
    if b.device != c.device:
        out.append(f"protocol:{p.label}:device:{c.device}!={b.device}")
    if b.shape != c.shape:
        out.append(f"protocol:{p.label}:shape")
    for k in PROTOCOL_KEYS:
        if (k in b.provenance or k in c.provenance) and b.provenance.get(k) != c.provenance.get(k):
            out.append(f"protocol:{p.label}:{k}:{c.provenance.get(k)}!={b.provenance.get(k)}")
    return out


def _config_reasons(
    guards: Sequence[GuardrailResult], cand_rows: Sequence[Attempt], wins: Sequence[PointVerdict]
) -> list[str]:
    """Every winning config must be correct wherever it ran at layer level, and have passed the e2e
    guardrail for the same model and path (a failing guardrail run blocks even beside a passing one)."""
    out: list[str] = []
    for model, path, ck in sorted({(p.model, p.path, p.cand_config_key) for p in wins}):
        assert ck is not None
        rows = [r for r in cand_rows if r.config_key == ck and r.model == model and r.path == path]
        bad = [r.key for r in rows if r.status is Status.INCORRECT]
        out += [f"incorrect:{ck}:{k}" for k in bad]
        runs = [g for g in guards if ck in g.config_keys and g.model == model and g.path == path]
        if any(not g.passed for g in runs):
            out.append(f"guardrail_failed:{ck}")
        elif not runs:
            out.append(f"no_guardrail:{ck}")
    return out


def claimable_wins(ledger: Ledger, campaign: str, baseline: str, profile: Profile = Profile.MXMOE, *,
                   scopes: Sequence[tuple[str | None, str | None]] = ((None, None),),
                   rows: tuple[Sequence[Attempt], Sequence[Attempt]] | None = None) -> list[Verdict]:
    """`claimable_win` for several (model, path) scopes of one campaign pair, reading the ledger once: a
    campaign's rows (tens of thousands of `illegal:*` rows with their provenance) take most of a claim's time.
    `rows`: (campaign rows, baseline rows) when the caller has read them already, as `scan(rows=)`."""
    cand_all, base_all = rows if rows is not None else (ledger.attempts(campaign), ledger.attempts(baseline))
    guards = ledger.guardrails(campaign)
    findings = [f"scan:{f}" for name, side in ((campaign, cand_all), (baseline, base_all))
                for f in scan(ledger, name, rows=side)]
    return [_judge(cand_all, base_all, guards, findings, Profile(profile), baseline, model, path)
            for model, path in scopes]


def claimable_win(ledger: Ledger, campaign: str, baseline: str, profile: Profile = Profile.MXMOE, *,
                  model: str | None = None, path: str | None = None) -> Verdict:
    """The one gate (DESIGN.md "Locked spec"): full coverage, no regression, at least one win, winning
    configs correct and guardrail-passed, every row used claimable and on the baseline's protocol, and
    a clean integrity scan of both campaigns. Same code for both profiles.

    `model` / `path` scope the claim to the rows of one model and / or path of both campaigns (what a
    shipped table rests on: one table per shape and path); the integrity scan stays campaign-wide."""
    return claimable_wins(ledger, campaign, baseline, profile, scopes=((model, path),))[0]


def _judge(cand_all: Sequence[Attempt], base_all: Sequence[Attempt], guards: Sequence[GuardrailResult],
           findings: Sequence[str], profile: Profile, baseline: str, model: str | None,
           path: str | None) -> Verdict:
    """The verdict of one scope, from rows already read (pure)."""
    def scoped(rows: Sequence[Attempt]) -> list[Attempt]:
        return [r for r in rows if (model is None or r.model == model) and (path is None or r.path == path)]

    cand_rows, base_rows = scoped(cand_all), scoped(base_all)
    comparison = compare(cand_rows, base_rows, profile)
    reasons: list[str] = []
    if not comparison.points:
        reasons.append(f"no_coverage:{baseline}")
    reasons += [f"missing:{p.label}" for p in comparison.missing]
    reasons += [f"regression:{p.label}:{p.speedup:.4f}x" for p in comparison.regressions]
    if comparison.points and not comparison.wins:
        reasons.append("no_win")
    by_key = {r.key: r for r in (*cand_rows, *base_rows)}
    for p in comparison.points:
        b = by_key[p.base_key] if p.base_key else None
        c = by_key[p.cand_key] if p.cand_key else None
        for r in (b, c):
            if r is not None and not r.claimable:
                reasons.append(f"nonclaimable:{r.key}:{','.join(r.nonclaimable_reasons) or 'unflagged'}")
        if b is not None and c is not None:
            reasons += _protocol_reasons(p, b, c)
    reasons += _config_reasons(guards, cand_rows, comparison.wins)
    reasons += findings
    reasons = list(dict.fromkeys(reasons))
    return Verdict(not reasons, tuple(reasons), comparison)
