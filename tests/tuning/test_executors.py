"""Host and Ray executors: the same rows as the local executor, the same fail-closed guarantees.

Oracle: the rows the local executor writes for the same tiny space and the same injected faults
(keys, statuses, config keys: a key hashes the probe, the device name and the kernel sources, so
equal keys mean equal questions), the candidate plan's count, and the integrity scan. Faults come
from MXMOE_TEST_FAULT: `segfault_once` (one death, retried on another worker: measured) and
`segfault` (dies on every worker: worker_lost after two deaths); a Ray actor is also SIGKILLed
mid-sweep. Each sweep is the tiny shape at T=1, three layer candidates: seconds of interpreter work.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys

import pytest
from test_sweep import SPACE, ScriptedExecutor, assert_complete, plan_of, spec

from mxmoe import legality
from mxmoe.tuning.judge.gate import claimable_win
from mxmoe.tuning.ledger.records import Status, active
from mxmoe.tuning.ledger.scan import scan
from mxmoe.tuning.ledger.store import Ledger
from mxmoe.tuning.sweep.driver import SweepRefused, run_sweep
from mxmoe.tuning.sweep.executors import (
    MAX_DEATHS,
    Job,
    LocalExecutor,
    TrialResult,
    WorkerConfig,
    WorkerInfo,
    WorkerStartError,
    stamp,
)
from mxmoe.tuning.sweep.executors_host import HostExecutor, JobQueue, pool_info, visible_gpus
from mxmoe.tuning.sweep.worker import FAULT_DIR_ENV, FAULT_ENV

TIMEOUT_S = 30.0
SMALL = spec("pool", tokens=(1,), limit=3)
LAYER = [c.config.key() for c in plan_of(SMALL) if c.stage == "layer" and c.illegal is None]
ONCE, ALWAYS = LAYER[1], LAYER[2]  # dies once (measured on the retry), dies every time (worker_lost)
FAULTS = f"segfault_once:{ONCE},segfault:{ALWAYS}"
CONFIG = WorkerConfig("tiny", "a16w4", argv=SMALL.argv)


def rows_of(ledger: Ledger, campaign: str) -> dict[str, tuple[str, str, str, int]]:
    return {r.key: (r.status_text, r.config_key, r.stage, r.tokens) for r in active(ledger.attempts(campaign))}


def sweep_with_faults(make_executor, tmp_path, monkeypatch, observer=None):
    """Run SMALL under FAULTS with a fresh executor; returns (rows, report, stats, ledger path)."""
    monkeypatch.setenv(FAULT_ENV, FAULTS)
    monkeypatch.setenv(FAULT_DIR_ENV, str(tmp_path / "faults"))
    (tmp_path / "faults").mkdir(exist_ok=True)
    path = tmp_path / "l.sqlite"
    with Ledger.open(path) as led, make_executor() as ex:
        report = run_sweep(SMALL, led, ex, spaces=SPACE, observer=observer)
        assert_complete(led, SMALL)
        return rows_of(led, SMALL.campaign), report, ex.stats(), path


@pytest.fixture(scope="module")
def local_rows(tmp_path_factory):
    """The oracle: the local executor's rows for SMALL under FAULTS."""
    mp = pytest.MonkeyPatch()
    try:
        rows, _, _, _ = sweep_with_faults(lambda: LocalExecutor(CONFIG, timeout_s=TIMEOUT_S),
                                          tmp_path_factory.mktemp("local"), mp)
    finally:
        mp.undo()
    by_cfg = {cfg: status for status, cfg, _, _ in rows.values()}
    assert by_cfg[LAYER[0]] == "measured" and by_cfg[ONCE] == "measured" and by_cfg[ALWAYS] == "worker_lost"
    return rows


def assert_pool_outcome(path, stats, workers: int) -> None:
    """The `segfault` job died on two different workers; every row is in the ledger once; resuming
    adds nothing (checked by the caller with a second sweep)."""
    with Ledger.open(path) as led:
        (lost,) = [r for r in led.attempts(SMALL.campaign) if r.status is Status.WORKER_LOST]
        assert f"died {MAX_DEATHS} times" in lost.detail and "Segmentation fault" in lost.detail
        labels = [w.label for w in stats]
        assert sum(f"[{label}" in lost.detail for label in labels) == 2, lost.detail  # retried elsewhere
        assert scan(led, SMALL.campaign) == []
    assert len(stats) == workers and sum(w.rows for w in stats) == len(LAYER)


# ---- pool bookkeeping (no processes) ---------------------------------------------------------------


def test_the_pool_modules_load_neither_torch_nor_ray():
    code = ("import sys, mxmoe.tuning.sweep.executors_host, mxmoe.tuning.sweep.executors_ray; "
            "assert not {'torch', 'triton', 'ray'} & set(sys.modules), 'loaded at import'")
    subprocess.run([sys.executable, "-c", code], check=True)


def job(key: str) -> Job:
    return Job(key=key, stage="layer", tokens=1, routing="uniform", config={}, config_key=key)


def test_a_dead_job_is_retried_on_another_worker_then_lost():
    q = JobQueue([job("a"), job("b")])
    a = q.take(0, live=[0, 1])
    assert a.key == "a" and q.died(a, 0, "segv on 0") is None and len(q) == 2
    assert q.take(0, live=[0, 1]).key == "b"  # worker 0 skips the job that died on it
    again = q.take(1, live=[0, 1])
    assert again.key == "a"
    lost = q.died(again, 1, "segv on 1")
    assert lost.status == "worker_lost" and "segv on 0" in lost.detail and "segv on 1" in lost.detail
    assert len(q) == 0


def test_a_lone_worker_still_retries_and_requeued_jobs_are_unmarked():
    q = JobQueue([job("a")])
    a = q.take(0, live=[0])
    assert q.died(a, 0, "segv") is None
    assert q.take(0, live=[0]).key == "a"  # no other worker: a fresh process of this one
    q.requeue(a)  # e.g. queued on an actor that died: not its death
    b = q.take(0, live=[0])
    assert q.died(b, 0, "segv") is not None  # its second death, not its third


def hello(**kw) -> WorkerInfo:
    return dataclasses.replace(ScriptedExecutor(["measured"]).info, **kw)


def gpu_hello(device: str, uuid: str) -> WorkerInfo:
    return hello(device=device, device_uuid=uuid, interpreter=False, limits=dataclasses.asdict(legality.H100))


def test_the_pool_hello_refuses_what_any_worker_would():
    busy = {"codes": ["busy:processes"], "detail": "pid 7 on the GPU"}
    merged = pool_info([("gpu0", hello()), ("gpu1", hello(idle=busy))])
    assert merged.idle["codes"] == ["busy:processes"] and "gpu1: pid 7" in merged.idle["detail"]
    drifted = pool_info([("gpu0", hello()), ("gpu1", hello(kernel_hash="f" * 64))])
    assert drifted.kernel_hash == "f" * 64  # the sweep refuses: kernel sources differ
    with pytest.raises(WorkerStartError, match="different devices"):
        pool_info([("gpu0", hello(device="NVIDIA H100")), ("gpu1", hello(device="NVIDIA H200"))])

def test_a_busy_gpu_anywhere_in_the_pool_refuses_the_sweep(tmp_path):
    busy = {"codes": ["busy:processes"], "detail": "pid 7 on the GPU"}
    merged = pool_info([("gpu0", hello(interpreter=False)), ("gpu1", hello(idle=busy, interpreter=False))])
    with Ledger.open(tmp_path / "l.sqlite") as led:
        ex = ScriptedExecutor(["measured"])
        ex.info = merged
        with pytest.raises(SweepRefused, match="not verified idle"):
            run_sweep(spec("busy"), led, ex, spaces=SPACE)
        assert led.attempts() == []


def test_a_mixed_ray_cluster_keeps_one_kind_of_gpu():
    from mxmoe.tuning.sweep.executors_ray import pick_device

    assert pick_device(["NVIDIA H200", "NVIDIA H100", "NVIDIA H100"]) == "NVIDIA H100"  # most workers
    assert pick_device(["NVIDIA H200", "NVIDIA H100"]) == "NVIDIA H100"  # a tie: the first by name
    assert pick_device(["NVIDIA H200", "NVIDIA H100"], "NVIDIA H200") == "NVIDIA H200"
    with pytest.raises(WorkerStartError, match="no Ray worker on device 'B200'"):
        pick_device(["NVIDIA H100"], "B200")


def test_visible_gpus_and_one_pin_per_worker():
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "0,1"}) == ("0", "1")
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "GPU-a,-1,GPU-c"}) == ("GPU-a",)  # CUDA stops at -1
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == ()
    ex = HostExecutor(CONFIG, gpus=("GPU-a", "GPU-b"))
    assert [(s.local.label, s.local.env) for s in ex._slots] == [
        ("gpu0", {"CUDA_VISIBLE_DEVICES": "GPU-a"}), ("gpu1", {"CUDA_VISIBLE_DEVICES": "GPU-b"})]
    with pytest.raises(ValueError, match="shows 2 GPUs"):
        HostExecutor(CONFIG, gpus=("GPU-a", "GPU-b"), workers=3)


def test_rows_name_the_gpu_that_ran_them_and_the_gate_compares_like_with_like(tmp_path):
    """Executor-made results carry the worker's uuid; a baseline and a candidate measured on different
    GPU kinds are never compared (protocol:...:device)."""
    h100 = gpu_hello("NVIDIA H100 80GB HBM3", "GPU-1")
    assert stamp(TrialResult("timeout"), h100).device_uuid == "GPU-1"
    assert stamp(TrialResult("measured", device_uuid="GPU-2"), h100).device_uuid == "GPU-2"
    with Ledger.open(tmp_path / "l.sqlite") as led:
        for campaign, info, baseline in (("base", h100, None), ("cand", gpu_hello("NVIDIA H200", "GPU-9"), "base")):
            ex = ScriptedExecutor(["measured"])
            ex.info = info
            run_sweep(spec(campaign, baseline_only=baseline is None, baseline=baseline, limit=1), led, ex,
                      spaces=None if baseline is None else SPACE)
        assert {r.device for r in led.attempts("cand")} == {"NVIDIA H200"}
        reasons = claimable_win(led, "cand", "base").reasons
    assert any(r.startswith("protocol:") and ":device:NVIDIA H200!=NVIDIA H100 80GB HBM3" in r for r in reasons)


# ---- host: N interpreter workers --------------------------------------------------------------------


def test_host_gives_the_local_rows_and_resumes_to_nothing(tmp_path, monkeypatch, local_rows):
    make = lambda: HostExecutor(CONFIG, workers=2, timeout_s=TIMEOUT_S, gpus=())
    rows, _, stats, path = sweep_with_faults(make, tmp_path, monkeypatch)
    assert rows == local_rows
    assert_pool_outcome(path, stats, workers=2)
    with Ledger.open(path) as led, make() as ex:
        assert run_sweep(SMALL, led, ex, spaces=SPACE).written == 0


# ---- ray: a local cluster of 2 CPUs, one interpreter actor on each ---------------------------------


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'mxmoe[ray]')")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


def ray_executor():
    from mxmoe.tuning.sweep.executors_ray import RayExecutor

    return RayExecutor(CONFIG, workers=2, timeout_s=TIMEOUT_S)


def test_ray_gives_the_local_rows_and_resumes_to_nothing(ray_cluster, tmp_path, monkeypatch, local_rows):
    rows, _, stats, path = sweep_with_faults(ray_executor, tmp_path, monkeypatch)
    assert rows == local_rows
    assert_pool_outcome(path, stats, workers=2)
    assert all(w.label.startswith("ray") and "@" in w.label and not w.note for w in stats)
    with Ledger.open(path) as led, ray_executor() as ex:
        assert run_sweep(SMALL, led, ex, spaces=SPACE).written == 0


class KillFirstActor:
    """Observer that SIGKILLs one actor's process when the first row lands (its calls are in flight)."""

    def __init__(self) -> None:
        self.executor, self.killed = None, None

    def planned(self, info, total, skipped):
        pass

    def recorded(self, attempt):
        if self.killed is None and attempt.status is not Status.ILLEGAL:  # trials are in flight on both actors
            w = min(self.executor.stats(), key=lambda w: w.rows)  # not the one that answered this row
            self.killed = w.label
            os.kill(w.pid, signal.SIGKILL)


def test_ray_actor_killed_mid_sweep_retries_and_records_everything(ray_cluster, tmp_path, monkeypatch):
    monkeypatch.delenv(FAULT_ENV, raising=False)
    s = spec("actor-kill", tokens=(1, 2), limit=3)
    killer = KillFirstActor()
    with Ledger.open(tmp_path / "l.sqlite") as led:
        ex = ray_executor()
        killer.executor = ex
        with ex:
            report = run_sweep(s, led, ex, spaces=SPACE, observer=killer)
            stats = {w.label: w for w in ex.stats()}
        assert_complete(led, s)
        assert {r.status for r in led.attempts(s.campaign) if r.stage == "layer"} == {Status.MEASURED}
        assert killer.killed and "Ray worker lost" in stats[killer.killed].note
        assert sum(w.rows for w in stats.values()) == sum(n for k, n in report.counts.items()
                                                          if not k.startswith("illegal"))
        with ray_executor() as again:
            assert run_sweep(s, led, again, spaces=SPACE).written == 0


# ---- the CLI ---------------------------------------------------------------------------------------


def cli():
    import typer
    from typer.testing import CliRunner

    from mxmoe.cli.commands.sweep import register

    app = typer.Typer()
    register(app)
    return lambda *args: CliRunner().invoke(app, ["sweep", "--model", "tiny", "--tokens", "1", *args])


def test_cli_refuses_options_that_do_not_fit_and_says_how_to_get_ray(tmp_path, monkeypatch):
    run = cli()
    led = ["--campaign", "c", "--ledger", str(tmp_path / "l.sqlite")]
    bad = run(*led, "--workers", "2")
    assert bad.exit_code == 2 and "--executor host or ray" in bad.output
    bad = run(*led, "--executor", "host", "--ray-address", "auto")
    assert bad.exit_code == 2 and "--executor ray" in bad.output
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    missing = run(*led, "--executor", "ray")
    assert missing.exit_code == 2 and "pip install 'mxmoe[ray]'" in " ".join(missing.output.split())
    assert not (tmp_path / "l.sqlite").exists()


def test_cli_host_sweep_reports_throughput_per_worker(tmp_path):
    done = cli()("--campaign", "h", "--baseline-only", "--tokens", "1,2", "--ledger", str(tmp_path / "l.sqlite"),
                 "--executor", "host", "--workers", "2", "--json")
    assert done.exit_code == 0, done.output
    out = json.loads(done.stdout)
    assert out["counts"] == {"measured": 2}
    assert [w["label"] for w in out["workers"]] == ["cpu0", "cpu1"]
    assert sum(w["rows"] for w in out["workers"]) == 2 and all(w["rows_per_s"] >= 0 for w in out["workers"])
