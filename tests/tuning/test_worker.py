"""The measuring worker and LocalExecutor: every way a trial can end comes back as one TrialResult.

Oracle: the status each injected fault (MXMOE_TEST_FAULT) must produce, and a real launch-wrapper
refusal (BLOCK_K=96) for compile_error; tolerance is `tolerance.lookup(path, "layer")`, applied by
the worker itself. One worker session serves the whole grid (start-up costs ~4 s of imports).
"""

from __future__ import annotations

import dataclasses

import pytest

from mxmoe.config import MoEConfig
from mxmoe.heuristic import default_config
from mxmoe.shapes import MODELS
from mxmoe.tuning.sweep.executors import Job, LocalExecutor, TrialResult, WorkerConfig, WorkerInfo
from mxmoe.tuning.sweep.worker import FAULT_DIR_ENV, FAULT_ENV, faults_for, parse_faults
from mxmoe.tuning.timing.value import Timing

TIMEOUT_S = 8.0  # a phase of a tiny trial takes < 2 s on the interpreter
HEURISTIC = default_config(MODELS["tiny"], "a16w4", 1, interpreter=True)
FAULTS = "compile:k-compile,launch:k-launch,wrong:k-wrong,cuda_fatal:k-fatal,hang:k-hang,segfault_once:k-once," \
         "segfault:k-segv"


def job(label: str, cfg: MoEConfig = HEURISTIC, tokens: int = 1) -> Job:
    """A job whose config_key is a label the fault table targets (the sweep always uses cfg.key())."""
    return Job(key=f"row-{label}", stage="layer", tokens=tokens, routing="uniform", config=cfg.to_dict(),
               config_key=label)


# ---- protocol values -------------------------------------------------------------------------------


def test_messages_round_trip_strictly():
    j = job("a")
    assert Job.from_dict(j.to_dict()) == j
    r = TrialResult("measured", timing=Timing(median_us=1.0, ci_lo_us=0.9, ci_hi_us=1.1, samples_us=(1.0,)),
                    provenance={"x": 1})
    assert TrialResult.from_dict(r.to_dict()) == r
    wire = r.to_dict()  # the timing travels as the five flat keys it always had (PROTOCOL_VERSION unchanged)
    assert "timing" not in wire and (wire["median_us"], wire["p95_us"], wire["samples_us"]) == (1.0, None, [1.0])
    assert TrialResult.from_dict({"status": "timeout"}).timing is None
    c = WorkerConfig("tiny", "a16w4", argv=("mxmoe", "sweep"))
    assert WorkerConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ValueError, match="unknown Job fields"):
        Job.from_dict({**j.to_dict(), "bonus": 1})
    with pytest.raises(ValueError, match="unknown WorkerInfo fields"):
        WorkerInfo.from_dict({"nope": 1})


def test_fault_table_parses_and_targets():
    assert parse_faults("hang:ab,wrong:*,segfault:ab") == {"ab": frozenset({"hang", "segfault"}), "*": {"wrong"}}
    assert faults_for("ab", {FAULT_ENV: "hang:ab,wrong:*"}) == {"hang", "wrong"}
    assert faults_for("zz", {FAULT_ENV: "hang:ab"}) == frozenset()
    assert faults_for("zz", {}) == frozenset()
    for bad in ("hang", "explode:ab", "hang:"):
        with pytest.raises(ValueError, match=FAULT_ENV):
            parse_faults(bad)


# ---- one worker, every outcome ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def executor(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv(FAULT_ENV, FAULTS)
    mp.setenv(FAULT_DIR_ENV, str(tmp_path_factory.mktemp("faults")))
    ex = LocalExecutor(WorkerConfig("tiny", "a16w4", argv=("pytest",)), timeout_s=TIMEOUT_S,
                       output_dir=str(tmp_path_factory.mktemp("worker-out")))
    try:
        yield ex
    finally:
        ex.close()
        mp.undo()


def test_hello_names_the_interpreter_and_nominal_floors(executor):
    info = executor.start()
    assert info.interpreter and info.device == "interpreter"
    assert info.floors["source"] == "nominal" and info.limits["interpreter"] is True
    assert info.provenance["git_commit"] and info.provenance["kernel_source_hash"] == info.kernel_hash
    assert "nvml:unavailable" in info.idle["codes"]


def test_measured_row_is_fake_and_never_claimable(executor):
    r = executor.run_one(job("k-ok"))
    assert r.status == "measured", r.detail
    assert r.timing.ci_lo_us <= r.timing.median_us <= r.timing.ci_hi_us and r.timing.n >= 30
    assert {"fake_clock", "interpreter", "floors:nominal"} <= set(r.nonclaimable_reasons)
    assert r.provenance["mode"] == "graph" and r.provenance["l2"] == "flush" and r.provenance["git_commit"]
    assert r.provenance["first_call_ms"] > 0 and r.provenance["env"][FAULT_ENV] == FAULTS
    assert r.tflops > 0 and r.roofline_fraction > 0
    again = executor.run_one(job("k-ok"))
    assert again.timing.median_us == r.timing.median_us  # the fake clock is deterministic per (config key, T)


def test_a_launch_wrapper_refusal_is_a_compile_error(executor):
    bad = MoEConfig(HEURISTIC.stage1.replace(block_k=96), HEURISTIC.stage2)  # BLOCK_K must be a multiple of 64
    r = executor.run_one(job("k-real-compile", bad))
    assert r.status == "compile_error" and "multiple of 64" in r.detail


@pytest.mark.parametrize(("label", "status", "text"), [
    ("k-compile", "compile_error", "injected compile fault"),
    ("k-launch", "launch_error", "injected launch fault"),
    ("k-wrong", "incorrect", "out of tolerance"),
])
def test_injected_failures(executor, label, status, text):
    r = executor.run_one(job(label))
    assert r.status == status and text in r.detail and not r.restart


def test_cuda_fatal_error_restarts_the_worker(executor):
    before = executor.restarts
    r = executor.run_one(job("k-fatal"))
    assert r.status == "launch_error" and r.restart and "illegal memory access" in r.detail
    assert executor.run_one(job("k-ok")).status == "measured"
    assert executor.restarts == before + 1


def test_hang_is_a_timeout_and_the_worker_is_replaced(executor):
    r = executor.run_one(job("k-hang"))
    assert r.status == "timeout" and f"no message for {TIMEOUT_S:g} s" in r.detail
    assert executor.run_one(job("k-ok")).status == "measured"


def test_one_segfault_is_retried_on_a_fresh_worker(executor):
    r = executor.run_one(job("k-once"))
    assert r.status == "measured", r.detail


def test_two_segfaults_are_worker_lost_with_the_stack(executor):
    r = executor.run_one(job("k-segv"))
    assert r.status == "worker_lost"
    assert "died 2 times" in r.detail and "Segmentation fault" in r.detail and "exit code -11" in r.detail
    ok = executor.run_one(dataclasses.replace(job("k-ok"), tokens=2))
    assert ok.status == "measured"  # the sweep goes on


def test_bench_on_the_interpreter_says_so(tmp_path):
    from mxmoe.tuning.timing.bench import read_csv_rows, run_bench, write_csv

    rows = run_bench(MODELS["tiny"], "a16w4", (1,), interpreter=True)
    (r,) = rows
    assert r.device == "interpreter" and r.floors_source == "nominal" and not r.claimable
    assert "fake_clock" in r.checks and r.layer_us > r.stage1_us > 0 and r.roofline_fraction > 0
    assert r.git_commit and r.triton_version and r.torch_version
    write_csv(rows, tmp_path / "b.csv")
    write_csv(rows, tmp_path / "b.csv")
    assert len(read_csv_rows(tmp_path / "b.csv")) == 2  # appended under one header
