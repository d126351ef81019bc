"""The sweep: one ledger row per candidate whatever becomes of it, resumable, kill -9 safe, gate-ready.

Oracles: the candidate plan (its count is the row count a finished sweep must hold), the integrity
scan (`scan` finds nothing), SQLite's `PRAGMA integrity_check`, and `gate.claimable_win`, which must
refuse interpreter rows with `nonclaimable:` reasons. Tiny shape, a hand-built space of a few
interpreter-legal configs, T in {1, 2}: every trial is a ~1 s interpreter call.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from mxmoe import legality
from mxmoe.config import Combine, Mma, TileConfig
from mxmoe.heuristic import default_config
from mxmoe.shapes import MODELS, TOKEN_GRID, Path
from mxmoe.source_hash import kernel_source_hash
from mxmoe.tuning.judge.gate import claimable_win
from mxmoe.tuning.ledger.records import Status, active
from mxmoe.tuning.ledger.scan import scan
from mxmoe.tuning.ledger.store import Ledger
from mxmoe.tuning.sweep import candidates
from mxmoe.tuning.sweep.driver import SweepRefused, SweepSpec, run_sweep
from mxmoe.tuning.sweep.executors import InlineExecutor, LocalExecutor, TrialResult, WorkerConfig, WorkerInfo
from mxmoe.tuning.sweep.worker import FAULT_ENV
from mxmoe.tuning.timing.bench import NOMINAL_FLOORS
from mxmoe.tuning.timing.value import Timing

TINY = MODELS["tiny"]
_T = TileConfig(block_m=16, block_n=64, block_k=64, num_warps=4, num_stages=3, mma=Mma.UPCAST)
# Interpreter-legal tiles for tiny (K = 64), one dot_scaled tile (illegal there: path_unsupported) and one
# BLOCK_N that does not divide N = 64 (divisibility).
SPACE = {
    1: (_T, _T.replace(num_warps=2), _T.replace(mma=Mma.DOT_SCALED), _T.replace(block_n=128)),
    2: (_T, _T.replace(combine=Combine.SLOTS), _T.replace(block_n=128)),
}


def spec(campaign: str, **kw) -> SweepSpec:
    return SweepSpec(**{"model": "tiny", "path": Path.A16W4, "tokens": (1,), "campaign": campaign,
                        "argv": ("pytest", campaign), **kw})


def plan_of(s: SweepSpec) -> list[candidates.Candidate]:
    return candidates.plan(TINY, s.path, s.tokens, stage=s.stage, limits=legality.INTERPRETER, interpreter=True,
                           limit=s.limit, baseline_only=s.baseline_only, spaces=None if s.baseline_only else SPACE)


def assert_complete(ledger: Ledger, s: SweepSpec) -> None:
    """Active row count == candidate count, no probe twice, scan clean (a row re-measured after a
    kernel edit supersedes the old one, so this holds even if kernels/ changes during the test)."""
    rows = active(ledger.attempts(s.campaign))
    assert len(rows) == len(plan_of(s))
    assert len({r.probe for r in rows}) == len(rows)
    assert scan(ledger, s.campaign) == []


def test_the_driver_never_loads_torch():
    code = ("import sys, mxmoe.tuning.sweep.driver, mxmoe.tuning.sweep.executors, mxmoe.tuning.sweep.worker, "
            "mxmoe.tuning.judge.export, mxmoe.cli.commands.sweep; "
            "assert not {'torch', 'triton'} & set(sys.modules), 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


# ---- the plan --------------------------------------------------------------------------------------


def test_plan_puts_the_heuristic_first_and_respects_the_limit():
    h = default_config(TINY, "a16w4", 2, interpreter=True)
    plan = candidates.plan(TINY, "a16w4", (2,), limits=legality.INTERPRETER, interpreter=True, limit=3,
                           spaces=SPACE)
    layer = [c for c in plan if c.stage == "layer"]
    assert layer[0].config == h and layer[0].illegal is None  # DEGENERATE (BLOCK_K > K) is exempt for it
    assert len(layer) == 3 and all(c.illegal is None for c in layer)
    bad = Counter(c.illegal.reason.value for c in plan if c.illegal is not None)
    assert bad == {"path_unsupported": 1, "divisibility": 2}  # dot_scaled, and BLOCK_N=128 in each stage
    assert plan == candidates.plan(TINY, "a16w4", (2,), limits=legality.INTERPRETER, interpreter=True, limit=3,
                                   spaces=SPACE)  # deterministic


def test_plan_stages_pair_with_the_heuristic():
    h = default_config(TINY, "a16w4", 1, interpreter=True)
    plan = candidates.plan(TINY, "a16w4", (1,), stage="both", limits=legality.INTERPRETER, interpreter=True,
                           spaces=SPACE)
    assert {c.stage for c in plan} == {"1", "2"}
    assert all(c.config.stage2 == h.stage2 for c in plan if c.stage == "1")
    assert all(c.config.stage1 == h.stage1 for c in plan if c.stage == "2")
    base = candidates.plan(TINY, "a16w4", (1, 2), limits=legality.INTERPRETER, interpreter=True, baseline_only=True)
    assert [(c.stage, c.tokens, c.config) for c in base] == [
        ("layer", t, default_config(TINY, "a16w4", t, interpreter=True)) for t in (1, 2)]


def test_regime_neighbours_come_right_after_the_heuristic_nearest_t_first():
    """The heuristic's own configs at other grid points are the first alternatives a short campaign tries."""
    shape, t = MODELS["deepseek-v3"], 4096
    near = candidates.regime_neighbours(shape, Path.A16W4, t, legality.H100, False)
    h = default_config(shape, "a16w4", t)
    assert near and len(set(near)) == len(near)
    assert set(near) <= {default_config(shape, "a16w4", g) for g in TOKEN_GRID} - {h}
    assert near[0] == default_config(shape, "a16w4", 2048)  # the nearest grid point whose config differs
    plan = candidates.plan(shape, "a16w4", (t,), limits=legality.H100, interpreter=False, limit=len(near) + 2)
    layer = [c.config for c in plan if c.stage == "layer"]
    assert layer[: len(near) + 1] == [h, *near] and len(layer) == len(near) + 2 and len(set(layer)) == len(layer)
    # a neighbour illegal at this T is skipped: no 64- or 128-row tile at one token (DEGENERATE there)
    assert all(c.stage1.block_m <= 32 for c in candidates.regime_neighbours(shape, Path.A16W4, 1, legality.H100,
                                                                             False))


def test_default_space_plan_is_quick_and_capped_on_a_real_shape():
    t0 = time.perf_counter()
    plan = candidates.plan(MODELS["deepseek-v3"], "a16w4", (1, 128, 4096), limits=legality.H100,
                           interpreter=False)
    assert time.perf_counter() - t0 < 10
    per_t = Counter(c.tokens for c in plan if c.stage == "layer")
    assert per_t == {t: candidates.DEFAULT_LIMIT for t in (1, 128, 4096)}


# ---- every status becomes one row (scripted executor: the sweep's bookkeeping alone) ----------------


class ScriptedExecutor:
    """Executor protocol without a worker: answers each job with the status scripted for its position."""

    restarts = 0

    def __init__(self, statuses: list[str]) -> None:
        self.statuses = statuses
        self.info = WorkerInfo(
            pid=0, device="interpreter", device_uuid=None, interpreter=True, kernel_hash=kernel_source_hash(),
            triton_version="3.6.0", floors=NOMINAL_FLOORS.to_dict(), idle={"codes": [], "detail": ""},
            limits=dataclasses.asdict(legality.INTERPRETER), provenance={"git_commit": "0" * 40})

    def start(self) -> WorkerInfo:
        return self.info

    def run(self, jobs):
        for i, j in enumerate(jobs):
            status = self.statuses[i % len(self.statuses)]
            if status == "measured":
                timing = Timing(median_us=5.0, p95_us=6.0, ci_lo_us=4.9, ci_hi_us=5.1, samples_us=(5.0, 5.1))
                yield j, TrialResult(status, timing=timing, nonclaimable_reasons=("fake_clock",),
                                     provenance={"git_commit": "0" * 40, "mode": "graph", "l2": "flush"})
            else:
                yield j, TrialResult(status, detail=f"scripted {status}")

    def close(self) -> None:
        pass


STATUSES = ["measured", "compile_error", "launch_error", "incorrect", "timeout", "worker_lost", "unmeasured:problem"]


def test_every_status_is_one_row(tmp_path):
    s = spec("all", tokens=(1, 2), limit=4)
    with Ledger.open(tmp_path / "l.sqlite") as led:
        report = run_sweep(s, led, ScriptedExecutor(STATUSES), spaces=SPACE)
        assert_complete(led, s)
        rows = led.attempts("all")
        seen = {r.status_text.split(":")[0] for r in rows}
        assert seen == {s.split(":")[0] for s in STATUSES} | {"illegal"}
        assert sum(report.counts.values()) == len(rows) == report.planned
        for r in rows:
            assert not r.claimable and r.provenance["git_commit"] and r.argv == ("pytest", "all")
            if r.status is Status.ILLEGAL:
                assert r.reason in {"path_unsupported", "divisibility"} and r.detail
            elif r.status is not Status.MEASURED:
                assert r.detail == f"scripted {r.status_text}"
        measured = [r for r in rows if r.status is Status.MEASURED]
        assert measured and all(r.nonclaimable_reasons == ("fake_clock", "interpreter") for r in measured)


def test_kernel_edits_and_retries_supersede_never_duplicate(tmp_path, monkeypatch):
    s = spec("edit", limit=2)
    with Ledger.open(tmp_path / "l.sqlite") as led:
        first = run_sweep(s, led, ScriptedExecutor(["timeout", "measured"]), spaces=SPACE)
        assert run_sweep(s, led, ScriptedExecutor(["measured"]), spaces=SPACE).written == 0
        retried = run_sweep(dataclasses.replace(s, retry_failed=True), led, ScriptedExecutor(["measured"]),
                            spaces=SPACE)
        assert retried.counts == {"measured": first.counts["timeout"]}
        # the scripted rows are fake-clock rows, so all non-claimable: each measured one is timed once more
        measured = sum(r.status is Status.MEASURED for r in active(led.attempts("edit")))
        again = run_sweep(dataclasses.replace(s, retry_nonclaimable=True), led, ScriptedExecutor(["measured"]),
                          spaces=SPACE)
        assert again.counts == {"measured": measured}
        assert_complete(led, s)
        monkeypatch.setattr("mxmoe.tuning.sweep.driver.kernel_source_hash", lambda: "e" * 64)
        edited = ScriptedExecutor(["measured"])
        edited.info = dataclasses.replace(edited.info, kernel_hash="e" * 64)
        assert run_sweep(s, led, edited, spaces=SPACE).written == first.planned  # every probe re-answered
        assert run_sweep(s, led, edited, spaces=SPACE).written == 0
        assert_complete(led, s)
        rows = led.attempts("edit")
        assert len(rows) == 2 * first.planned + first.counts["timeout"] + measured
        assert all(r.kernel_hash == "e" * 64 for r in active(rows))


def test_refusals_come_before_any_row(tmp_path):
    with Ledger.open(tmp_path / "l.sqlite") as led:
        with pytest.raises(SweepRefused, match="--force"):
            run_sweep(spec("big", model="deepseek-v3"), led, ScriptedExecutor(["measured"]))
        ex = ScriptedExecutor(["measured"])
        ex.info = dataclasses.replace(ex.info, kernel_hash="f" * 64)
        with pytest.raises(SweepRefused, match="kernel sources"):
            run_sweep(spec("drift"), led, ex)
        assert led.campaigns() == [] and led.attempts() == []


# ---- real trials -----------------------------------------------------------------------------------


def test_worker_sweep_records_faults_and_resumes_to_nothing(tmp_path, monkeypatch):
    s = spec("faults", tokens=(1,), limit=3)
    layer = [c.config for c in plan_of(s) if c.stage == "layer"]
    monkeypatch.setenv(FAULT_ENV, f"wrong:{layer[1].key()},compile:{layer[2].key()}")
    with Ledger.open(tmp_path / "l.sqlite") as led:
        with LocalExecutor(WorkerConfig("tiny", "a16w4", argv=s.argv), timeout_s=30) as ex:
            report = run_sweep(s, led, ex, spaces=SPACE)
        assert_complete(led, s)
        by_cfg = {r.config_key: r for r in led.attempts("faults", stage="layer")}
        assert by_cfg[layer[0].key()].status is Status.MEASURED
        assert by_cfg[layer[1].key()].status is Status.INCORRECT and "out of tolerance" in by_cfg[layer[1].key()].detail
        assert by_cfg[layer[2].key()].status is Status.COMPILE_ERROR
        assert report.counts["illegal:path_unsupported"] == 1
        again = run_sweep(s, led, InlineExecutor(WorkerConfig("tiny", "a16w4")), spaces=SPACE)
        assert again.counts == {} and again.skipped == again.planned == len(plan_of(s))


def test_interpreter_campaigns_are_refused_by_the_gate(tmp_path):
    base = spec("base", tokens=(1, 2), baseline_only=True)
    cand = spec("cand", tokens=(1, 2), baseline="base", limit=2)
    with Ledger.open(tmp_path / "l.sqlite") as led, InlineExecutor(WorkerConfig("tiny", "a16w4")) as ex:
        run_sweep(base, led, ex)
        run_sweep(cand, led, ex, spaces=SPACE)
        assert_complete(led, base)
        assert_complete(led, cand)
        verdict = claimable_win(led, "cand", "base")
    assert not verdict.claimable
    assert len(verdict.comparison.points) == 2 and not verdict.comparison.missing
    nonclaimable = [r for r in verdict.reasons if r.startswith("nonclaimable:")]
    assert len(nonclaimable) == 4  # both sides at both points
    assert all("fake_clock" in r and "interpreter" in r for r in nonclaimable)
    assert not any(r.startswith(("scan:", "protocol:", "missing:")) for r in verdict.reasons)


# ---- kill -9 ---------------------------------------------------------------------------------------

CHILD = """
import sys
from mxmoe.tuning.sweep.executors import LocalExecutor, WorkerConfig
from mxmoe.tuning.ledger.store import Ledger
from mxmoe.tuning.sweep.driver import run_sweep
sys.path.insert(0, {tests!r})
from test_sweep import SPACE, spec
s = spec("kill", tokens=(1, 2), limit=3)
with Ledger.open({ledger!r}) as led, LocalExecutor(WorkerConfig("tiny", "a16w4", argv=s.argv), timeout_s=60) as ex:
    report = run_sweep(s, led, ex, spaces=SPACE)
print("DONE", report.written)
"""


def test_kill_9_loses_nothing_but_the_candidate_in_flight(tmp_path):
    ledger = tmp_path / "kill.sqlite"
    code = CHILD.format(tests=os.path.dirname(__file__), ledger=str(ledger))
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    rng = random.Random(7)
    counts = []
    for delay in (rng.uniform(2.0, 5.0), rng.uniform(5.0, 8.0)):
        child = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
        child.wait()
        with Ledger.open(ledger) as led:
            counts.append(len(led.attempts("kill")))
            assert led.execute("PRAGMA integrity_check")[0][0] == "ok"
            assert scan(led, "kill") == []
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    written_last = int(done.stdout.split("DONE")[1])
    with Ledger.open(ledger) as led:
        assert_complete(led, spec("kill", tokens=(1, 2), limit=3))
        total = len(led.attempts("kill"))
    assert counts == sorted(counts) and total == counts[-1] + written_last
    assert counts[0] < total, f"the first kill landed after the sweep finished: {counts}"
    print("rows after each kill", counts, "of", total)


# ---- the CLI ---------------------------------------------------------------------------------------


def test_cli_sweep_then_export(tmp_path):
    import typer
    from typer.testing import CliRunner

    from mxmoe.cli.commands.sweep import register

    app = typer.Typer()
    register(app)
    led = str(tmp_path / "cli.sqlite")
    run = CliRunner().invoke
    done = run(app, ["sweep", "--model", "tiny", "--campaign", "b", "--baseline-only", "--tokens", "1",
                     "--ledger", led, "--json"])
    assert done.exit_code == 0, done.output
    assert "Triton interpreter: fake-clock timings, not a measurement and not a claim" in done.output
    assert json.loads(done.stdout)["counts"] == {"measured": 1}  # the banner went to stderr
    refused = run(app, ["export", "b", "--ledger", led, "--out-dir", str(tmp_path / "t")])
    assert refused.exit_code == 1 and "allow-nonclaimable" in refused.output
    wrote = run(app, ["export", "b", "--ledger", led, "--out-dir", str(tmp_path / "t"), "--allow-nonclaimable",
                      "--ledger-export", str(tmp_path / "b.csv")])
    assert wrote.exit_code == 0 and "NON-CLAIMABLE" in wrote.output
    assert len(list((tmp_path / "t").glob("*device_name=interpreter.json"))) == 1
