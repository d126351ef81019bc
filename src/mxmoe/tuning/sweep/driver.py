"""The sweep driver: candidates -> legality -> worker trials -> exactly one ledger row each.

No torch or triton here, and no CUDA context ever: trials run in the executor's worker processes,
and this driver is the ledger's only writer, one transaction per row (`Ledger.record`).

- Keys: `records.attempt_key` over (campaign, model, shape, path, stage, T, routing, config key,
  kernel source hash, device, supersedes), the device being the worker's GPU name (`interpreter`
  on CPU). A candidate whose probe already has an active row under the running kernel source hash
  is skipped, so a re-run resumes and a finished sweep re-run adds nothing; a kill -9 loses at
  most the candidate in flight (SQLite WAL, one commit per row). An active row made with other
  kernel sources is re-measured by a row that supersedes it (the scan forbids two active answers
  to one probe); so is a transient failure (timeout, worker_lost, unmeasured) with `retry_failed`,
  and a measured row that GPU state made non-claimable (busy GPU, clock events) with
  `retry_nonclaimable`: those are facts about the moment, not the config, and the old row stays.
- Statuses: `illegal:<REASON>` rows are written from `legality.check` before anything compiles;
  every other status comes from the worker's `TrialResult` (see `worker.py`, `executors.py`).
- Claimable: a measured row is claimable only when its measurement and provenance checks are all
  clean on a real GPU; interpreter rows never are (fake clock, nominal floors).
- Refusals (SweepRefused, before any row; `start_checked`, which the CLI calls before it opens the ledger): a
  non-tiny model on the interpreter without `force`; a GPU not verified idle without `allow_busy`; driver and
  worker seeing different kernel sources.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from mxmoe.config import TileConfig
from mxmoe.legality import DeviceLimits
from mxmoe.shapes import Path, RoutingDist, get_shape, model_tokens
from mxmoe.source_hash import kernel_source_hash
from mxmoe.space import SPACE_NAMES
from mxmoe.tuning.ledger.records import PROBE_FIELDS, Attempt, Status, active, attempt_key, canonical_json
from mxmoe.tuning.ledger.store import Ledger
from mxmoe.tuning.sweep import candidates
from mxmoe.tuning.sweep.executors import Executor, Job, TrialResult, WorkerInfo
from mxmoe.tuning.timing.gpu_state import CheckResult, GpuBusyError, require_idle

INTERPRETER_MODELS = ("tiny", "tiny-oai")  # what the interpreter runs in seconds per call
INTERPRETER_BANNER = "Triton interpreter: fake-clock timings, not a measurement and not a claim"


class SweepRefused(RuntimeError):
    """The sweep will not start; the message says why and which flag overrides it, if any."""


@dataclass(frozen=True, slots=True)
class SweepSpec:
    """One `mxmoe sweep` invocation."""

    model: str
    path: Path
    tokens: tuple[int, ...]
    campaign: str
    stage: str = "layer"
    space: str = "default"
    baseline: str | None = None
    baseline_only: bool = False
    routing: str = "uniform"
    limit: int | None = None
    seed: int = 0
    allow_busy: bool = False
    force: bool = False
    retry_failed: bool = False
    retry_nonclaimable: bool = False
    argv: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))
        if self.stage not in candidates.SWEEP_STAGES:
            raise ValueError(f"stage={self.stage!r}; expected one of {candidates.SWEEP_STAGES}")
        if not self.campaign:
            raise ValueError("campaign must be a non-empty name")
        if self.space not in SPACE_NAMES:
            raise ValueError(f"space={self.space!r}; expected one of {SPACE_NAMES}")
        if self.routing not in {d.value for d in RoutingDist}:
            raise ValueError(f"routing={self.routing!r} is not a routing distribution; expected one of "
                             f"{', '.join(d.value for d in RoutingDist)}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit={self.limit}: candidates per T is 1 or more (leave it out for the default)")
        if not self.tokens or any(t < 1 for t in self.tokens):
            raise ValueError(f"tokens={','.join(map(str, self.tokens))}: every token count is 1 or more")
        if self.baseline is not None and self.baseline == self.campaign:
            raise ValueError(f"campaign {self.campaign!r} cannot be its own baseline")
        if self.baseline_only and self.stage != "layer":
            raise ValueError("a baseline campaign measures the layer: use stage='layer' with baseline_only")


@dataclass(frozen=True, slots=True)
class SweepReport:
    campaign: str
    device: str
    interpreter: bool
    planned: int  # candidates of this sweep, old and new
    skipped: int  # already in the ledger (resume)
    counts: Mapping[str, int] = field(default_factory=dict)  # status text -> rows written now
    restarts: int = 0

    @property
    def written(self) -> int:
        return sum(self.counts.values())


class SweepObserver(Protocol):
    """Progress hooks (the CLI draws a rich bar with them); both are optional no-ops by default."""

    def planned(self, info: WorkerInfo, total: int, skipped: int) -> None: ...
    def recorded(self, attempt: Attempt) -> None: ...


class _Quiet:
    def planned(self, info: WorkerInfo, total: int, skipped: int) -> None:
        pass

    def recorded(self, attempt: Attempt) -> None:
        pass


def _refusals(spec: SweepSpec, info: WorkerInfo, shape_name: str) -> None:
    if info.interpreter and shape_name not in INTERPRETER_MODELS and not spec.force:
        raise SweepRefused(
            f"no GPU: the Triton interpreter would take hours per candidate of {shape_name!r}; sweep one of "
            f"{', '.join(INTERPRETER_MODELS)} on this machine, or pass --force")
    if not info.interpreter:
        try:
            require_idle(CheckResult.from_dict(info.idle), allow_busy=spec.allow_busy)
        except GpuBusyError as exc:
            raise SweepRefused(f"{exc} (--allow-busy)") from exc
    if info.kernel_hash != kernel_source_hash():
        raise SweepRefused(f"the worker sees kernel sources {info.kernel_hash[:12]}, the driver "
                           f"{kernel_source_hash()[:12]}: kernels changed mid-start; run again")


def start_checked(spec: SweepSpec, executor: Executor) -> WorkerInfo:
    """Start the worker(s) and apply every refusal (SweepRefused). The CLI calls this before it opens the ledger,
    so a refused sweep leaves no ledger file and no campaign; `run_sweep` calls it again (start is idempotent)."""
    info = executor.start()
    _refusals(spec, info, get_shape(spec.model).name)
    return info


def require_baseline(ledger: Ledger, baseline: str | None) -> None:
    """A baseline names a campaign the ledger already holds (measure it first, with --baseline-only)."""
    if baseline is not None:
        ledger.require_campaign(baseline, role="baseline campaign",
                                hint="sweep the baseline first, --baseline-only")


def nothing_measured(report: SweepReport) -> str | None:
    """Why a sweep that wrote rows measured none of them (one line), or None when it measured some or wrote none."""
    if not report.written or report.counts.get(Status.MEASURED.value, 0):
        return None
    counts = ", ".join(f"{k}={v}" for k, v in sorted(report.counts.items(), key=lambda kv: (-kv[1], kv[0])))
    return (f"sweep {report.campaign} measured nothing: {report.written} of {report.written} rows failed ({counts}); "
            "the rows' detail column says why (mxmoe ledger export)")


TRANSIENT = (Status.TIMEOUT, Status.WORKER_LOST, Status.UNMEASURED)  # what retry_failed runs again


class _Rows:
    """Builds the Attempt of a candidate, with the key the sweep checked the ledger for."""

    def __init__(self, spec: SweepSpec, info: WorkerInfo, shape: Any, ledger: Ledger) -> None:
        self.spec, self.info = spec, info
        self.common = dict(campaign=spec.campaign, model=shape.name, shape=shape.to_dict(), path=spec.path.value,
                           routing=spec.routing, kernel_hash=kernel_source_hash(), device=info.device)
        self.active = {r.probe: r for r in active(ledger.attempts(spec.campaign))}
        self.supersedes: dict[str, str | None] = {}

    def _probe(self, c: candidates.Candidate) -> tuple[Any, ...]:
        values = {**self.common, "stage": c.stage, "tokens": c.tokens, "config_key": c.config.key()}
        return tuple(canonical_json(values[n]) if n == "shape" else values[n] for n in PROBE_FIELDS)

    def pending(self, c: candidates.Candidate) -> str | None:
        """The key of the row this candidate still needs, or None when the ledger already answers it."""
        old = self.active.get(self._probe(c))
        current = old is not None and old.kernel_hash == self.common["kernel_hash"]
        if current and not ((self.spec.retry_failed and old.status in TRANSIENT) or (
                self.spec.retry_nonclaimable and old.status is Status.MEASURED and not old.claimable)):
            return None
        supersedes = None if old is None else old.key
        key = attempt_key(**self.common, stage=c.stage, tokens=c.tokens, config_key=c.config.key(),
                          supersedes=supersedes)
        self.supersedes[key] = supersedes
        return key

    def make(self, key: str, c: candidates.Candidate, status_text: str, result: TrialResult | None = None,
             detail: str | None = None) -> Attempt:
        status, reason = Status.parse(status_text)
        extra: dict[str, Any] = {}
        prov = dict(self.info.provenance)
        if result is not None:
            prov = dict(result.provenance or prov)
            detail = result.detail
            if status is Status.MEASURED:
                reasons = tuple(result.nonclaimable_reasons)
                if self.info.interpreter and "interpreter" not in reasons:
                    reasons += ("interpreter",)
                extra = dict(timing=result.timing, tflops=result.tflops, roofline_fraction=result.roofline_fraction,
                             nonclaimable_reasons=reasons, claimable=not reasons)
        return Attempt.make(**self.common, status=status, reason=reason, stage=c.stage, tokens=c.tokens,
                            config=c.config.to_dict(), config_key=c.config.key(),
                            device_uuid=result.device_uuid if result else self.info.device_uuid,
                            provenance=prov, argv=self.spec.argv, detail=detail, supersedes=self.supersedes[key],
                            **extra)


def _illegal_text(c: candidates.Candidate) -> tuple[str, str]:
    v = c.illegal
    assert v is not None
    smem = "" if v.smem_bytes is None else f" (modelled shared memory {v.smem_bytes} B)"
    return f"illegal:{v.reason.value}", v.detail + smem


def run_sweep(
    spec: SweepSpec,
    ledger: Ledger,
    executor: Executor,
    *,
    observer: SweepObserver | None = None,
    spaces: Mapping[int, Sequence[TileConfig]] | None = None,
) -> SweepReport:
    """Plan, skip what the ledger holds, record illegal rows, run the rest, one row per candidate."""
    obs = observer or _Quiet()
    shape = get_shape(spec.model)
    tokens = model_tokens(shape, spec.tokens)
    if not tokens:
        raise ValueError(f"tokens={','.join(map(str, spec.tokens))}: none is measured for {shape.name} "
                         f"(it starts at T={shape.min_tokens})")
    require_baseline(ledger, spec.baseline)
    info = start_checked(spec, executor)
    ledger.add_campaign(spec.campaign, description=f"{shape.name} {spec.path.value} stage={spec.stage}",
                        baseline=spec.baseline, argv=spec.argv)
    plan = candidates.plan(shape, spec.path, tokens, stage=spec.stage, space=spec.space,
                           limits=DeviceLimits(**info.limits), interpreter=info.interpreter, limit=spec.limit,
                           baseline_only=spec.baseline_only, spaces=spaces)
    rows = _Rows(spec, info, shape, ledger)
    todo = [(k, c) for c in plan if (k := rows.pending(c)) is not None]
    obs.planned(info, len(todo), len(plan) - len(todo))
    counts: Counter[str] = Counter()

    def record(key: str, attempt: Attempt) -> None:
        assert attempt.key == key, f"row key {attempt.key} != planned key {key}"
        ledger.record(attempt, source="sweep")
        counts[attempt.status_text] += 1
        obs.recorded(attempt)

    for key, c in todo:
        if c.illegal is not None:
            status_text, detail = _illegal_text(c)
            record(key, rows.make(key, c, status_text, detail=detail))
    by_key = {k: c for k, c in todo if c.illegal is None}
    jobs = [Job(key=k, stage=c.stage, tokens=c.tokens, routing=spec.routing, config=c.config.to_dict(),
                config_key=c.config.key()) for k, c in by_key.items()]
    for job, result in executor.run(jobs):
        record(job.key, rows.make(job.key, by_key[job.key], result.status, result))
    return SweepReport(spec.campaign, info.device, info.interpreter, len(plan), len(plan) - len(todo),
                       dict(counts), getattr(executor, "restarts", 0))
