"""Executors: how the sweep's jobs reach a worker and their results come back.

torch-free: the sweep driver runs here and never opens a CUDA context. The interface is small so
that the sweep does not change with the executor: the sweep calls `start()` once (the hello every
row is keyed on: the device name, floors, provenance), then iterates `run(jobs)`, which yields one
(Job, TrialResult) per job, in any order, whatever became of the worker; the sweep alone writes the
ledger. The message types are the worker protocol (`protocol.py`, re-exported here); they travel as dicts.
This module imports `worker.py` (to name `serve` as the process target, inside the function, so the driver never
loads it at import) and never the other way round.
Three kinds (`ExecutorKind`), each with `stats()` (rows and rows/s per worker): `local`
(LocalExecutor, below: one worker process, one GPU or the interpreter), `host` (`executors_host.py`:
a LocalExecutor per visible GPU) and `ray` (`executors_ray.py`: actors that each wrap a LocalExecutor).

LocalExecutor runs one spawn-context worker process and supervises it (InlineExecutor, at the end,
runs trials in-process for debugging and fast tests):
- per-phase timeout: no message for `timeout_s` -> SIGKILL, a `timeout` result, a fresh worker;
- death (segfault, OOM kill, os._exit): a fresh worker retries the job once; a second death of that
  job is `worker_lost`. Both carry the tail of the worker's captured stdout and stderr (the pools
  retry on another worker instead: `attempt` is one try, `run_one` the local retry loop);
- a result flagged `restart` (a CUDA error poisons the context): kept, and the worker is replaced.
A restarted worker reuses the first hello's floors and idle check.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, replace
from enum import Enum
from typing import Any, Protocol

from mxmoe.tuning.sweep.protocol import PROTOCOL_VERSION, Job, TrialResult, WorkerConfig, WorkerInfo

STDERR_TAIL_CHARS = 3000
START_TIMEOUT_S = 900.0  # first hello: imports, idle check, floors (a 1 GiB copy and a matmul)
STOP_TIMEOUT_S = 10.0
MAX_DEATHS = 2  # a job whose worker died this many times is worker_lost


class WorkerStartError(RuntimeError):
    """The worker could not start (or restart): the sweep stops; resuming retries what is left."""


class Executor(Protocol):
    """What the sweep needs from an executor (local, host, ray)."""

    def start(self) -> WorkerInfo:
        """Start the worker(s) and return the hello of the first: device, floors, provenance."""
        ...

    def run(self, jobs: Iterable[Job]) -> Iterator[tuple[Job, TrialResult]]:
        """Yield exactly one result per job; never raises for a job's own failure."""
        ...

    def close(self) -> None: ...


class ExecutorUnavailableError(RuntimeError):
    """The executor asked for cannot run here (e.g. Ray is not installed); the message says how to fix it."""


@dataclass(frozen=True, slots=True)
class WorkerStat:
    """One worker's share of a sweep, for the summary: rows it answered and how fast."""

    label: str  # local | gpu0.. (host) | ray0@10.0.0.5 (ray) | cpu0.. (host without a GPU)
    device: str
    device_uuid: str | None
    pid: int | None  # the worker process (local, host) or the Ray actor's process
    rows: int
    restarts: int
    seconds: float  # from its first job sent to its last result
    note: str = ""  # why it left the pool early ('' when it served to the end)

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"rows_per_s": self.rows_per_s}


class ExecutorKind(str, Enum):
    LOCAL = "local"  # one worker process: one GPU, or the interpreter
    HOST = "host"  # one worker per visible GPU of this host (N interpreter workers without a GPU)
    RAY = "ray"  # measurement actors on a Ray cluster, one GPU each (one CPU each without GPUs)


@dataclass
class Tally:
    """A worker's running count for WorkerStat (monotonic clock)."""

    rows: int = 0
    first: float | None = None
    last: float | None = None

    def sent(self) -> None:
        if self.first is None:
            self.first = time.monotonic()

    def done(self) -> None:
        self.rows += 1
        self.last = time.monotonic()

    @property
    def seconds(self) -> float:
        return 0.0 if self.first is None or self.last is None else self.last - self.first


def lost_result(deaths: list[str]) -> TrialResult:
    """`worker_lost`: the job's worker died MAX_DEATHS times; the detail keeps every death's tail."""
    detail = f"worker died {len(deaths)} times on this job:\n" + "\n---\n".join(deaths)
    return TrialResult("worker_lost", detail=detail[-2 * STDERR_TAIL_CHARS:])


def stamp(result: TrialResult, info: WorkerInfo | None) -> TrialResult:
    """A result the executor made (timeout, worker_lost) names the GPU of the worker it was on."""
    if result.device_uuid is None and info is not None and info.device_uuid is not None:
        return replace(result, device_uuid=info.device_uuid)
    return result


def _serve_with_env(env: Mapping[str, str], conn: Any, config: dict[str, Any], output: str, parent_pid: int) -> None:
    """The worker process's target: `env` (CUDA_VISIBLE_DEVICES, forwarded MXMOE_ variables) is set
    before anything imports torch, then `worker.serve` runs."""
    os.environ.update(env)
    from mxmoe.tuning.sweep.worker import serve

    serve(conn, config, output, parent_pid)


def tail(path: str | None, chars: int = STDERR_TAIL_CHARS) -> str:
    """The last `chars` characters of a worker's captured output ('' when there is none)."""
    if not path or not os.path.exists(path):
        return ""
    with open(path, "rb") as fh:
        fh.seek(max(0, os.path.getsize(path) - chars))
        return fh.read().decode("utf-8", "replace")


@dataclass
class _Proc:
    """One incarnation of the worker: its process, the driver's end of the pipe, its output file."""

    process: Any
    conn: Any
    output: str


class LocalExecutor:
    """One worker process on this machine (one GPU, or the interpreter). Use as a context manager.
    `env` is set in the worker before torch loads (the host executor pins a GPU with it)."""

    def __init__(self, config: WorkerConfig, *, timeout_s: float = 300.0,
                 start_timeout_s: float = START_TIMEOUT_S, output_dir: str | None = None,
                 env: Mapping[str, str] | None = None, label: str = "local") -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        self.config, self.timeout_s, self.start_timeout_s = config, timeout_s, start_timeout_s
        self.output_dir, self.env, self.label = output_dir, dict(env or {}), label
        self.info: WorkerInfo | None = None
        self.restarts = 0
        self.tally = Tally()
        self._proc: _Proc | None = None
        self._phase = "sent"
        self._ctx = multiprocessing.get_context("spawn")

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- process management -----------------------------------------------------------------------

    def launch(self) -> None:
        """Start the worker process without waiting for its hello (a pool starts all, then waits)."""
        fd, output = tempfile.mkstemp(prefix="mxmoe-worker-", suffix=".log", dir=self.output_dir)
        os.close(fd)
        parent, child = self._ctx.Pipe()
        process = self._ctx.Process(target=_serve_with_env,
                                    args=(self.env, child, self.config.to_dict(), output, os.getpid()),
                                    name=f"mxmoe-worker-{self.label}", daemon=True)
        process.start()
        child.close()
        self._proc = _Proc(process, parent, output)

    def _hello(self) -> WorkerInfo:
        assert self._proc is not None
        output = self._proc.output
        msg = self.recv(self.start_timeout_s)
        if msg is None or msg.get("op") != "hello" or msg.get("protocol") != PROTOCOL_VERSION:
            why = "timed out" if msg is None else msg.get("error", f"died or spoke another protocol: {msg.get('op')}")
            detail = f"worker {self.label} failed to start ({why}); output tail:\n{tail(output)}"
            self._kill()
            raise WorkerStartError(detail)
        return WorkerInfo.from_dict(msg["info"])

    def recv(self, timeout: float) -> dict[str, Any] | None:
        """The next message, None on timeout; {"op": "died"} when the worker's end closed."""
        assert self._proc is not None
        try:
            if not self._proc.conn.poll(timeout):
                return None
            return self._proc.conn.recv()
        except (EOFError, OSError):
            return {"op": "died"}

    def _kill(self) -> str:
        """SIGKILL the current worker; returns its output tail and removes the file."""
        proc, self._proc = self._proc, None
        if proc is None:
            return ""
        if proc.process.is_alive():
            proc.process.kill()
        proc.process.join(STOP_TIMEOUT_S)
        code = proc.process.exitcode
        with contextlib.suppress(OSError):
            proc.conn.close()
        text = f"[worker pid {proc.process.pid} exit code {code}]\n{tail(proc.output)}"
        with contextlib.suppress(OSError):
            os.remove(proc.output)
        return text

    @property
    def conn(self) -> Any:
        """The driver's end of the current worker's pipe (None when no worker runs)."""
        return None if self._proc is None else self._proc.conn

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.process.pid

    def start(self) -> WorkerInfo:
        if self.info is None:
            if self._proc is None:
                self.launch()
            self.info = self._hello()
            self.config = replace(self.config, floors=self.info.floors, idle=self.info.idle)
        return self.info

    def _ensure(self) -> None:
        if self._proc is None:
            self.launch()
            self._hello()
            self.restarts += 1

    def close(self) -> None:
        proc = self._proc
        if proc is None:
            return
        with contextlib.suppress(OSError, BrokenPipeError):
            proc.conn.send({"op": "stop"})
        proc.process.join(STOP_TIMEOUT_S)
        self._kill()

    def stats(self) -> tuple[WorkerStat, ...]:
        info = self.info
        return (WorkerStat(self.label, info.device if info else "?", info.device_uuid if info else None, self.pid,
                           self.tally.rows, self.restarts, self.tally.seconds),)

    # ---- jobs -------------------------------------------------------------------------------------

    def run(self, jobs: Iterable[Job]) -> Iterator[tuple[Job, TrialResult]]:
        self.start()
        for job in jobs:
            self.tally.sent()
            result = self.run_one(job)
            self.tally.done()
            yield job, result

    def run_one(self, job: Job) -> TrialResult:
        """The job's result; a worker death is retried once on a fresh worker, then `worker_lost`."""
        deaths: list[str] = []
        while True:
            outcome = self.attempt(job)
            if isinstance(outcome, TrialResult):
                return stamp(outcome, self.info)
            deaths.append(outcome)
            if len(deaths) >= MAX_DEATHS:
                return stamp(lost_result(deaths), self.info)

    def attempt(self, job: Job) -> TrialResult | str:
        """One try: the job's result, a timeout result, or (the worker died) its output tail."""
        self.send(job)
        while True:
            msg = self.recv(self.timeout_s)
            outcome = self.timed_out() if msg is None else self.on_message(job, msg)
            if outcome is not None:
                return outcome

    def send(self, job: Job) -> None:
        """Hand `job` to the worker, starting a fresh one when there is none (WorkerStartError when it
        cannot start). A worker found dead while idle is replaced: that is not the job's doing."""
        while True:
            self._ensure()
            assert self._proc is not None
            try:
                self._proc.conn.send({"op": "run", "job": job.to_dict()})
            except (BrokenPipeError, OSError):
                self._kill()
                continue
            self._phase = "sent"
            return

    def timed_out(self) -> TrialResult:
        """No message for `timeout_s`: the worker is killed and the job is a `timeout`."""
        text = self._kill()
        detail = f"no message for {self.timeout_s:g} s in phase {self._phase!r}; worker killed\n{text}"
        return TrialResult("timeout", detail=detail[-STDERR_TAIL_CHARS:])

    def on_message(self, job: Job, msg: dict[str, Any]) -> TrialResult | str | None:
        """One message while `job` runs: None (a phase: keep waiting), its result, or the output tail
        of a worker that died."""
        op = msg.get("op")
        if op == "died":
            return f"died in phase {self._phase!r}\n" + self._kill()
        if msg.get("key") != job.key:
            raise RuntimeError(f"worker protocol: message {msg!r} while running job {job.key}")
        if op == "phase":
            self._phase = msg["phase"]
            return None
        if op == "result":
            result = TrialResult.from_dict(msg["result"])
            if result.restart:
                self._kill()
            return result
        raise RuntimeError(f"worker protocol: unknown message {msg!r}")


class InlineExecutor:
    """Trials in this very process: no isolation and no timeout (a segfault or hang takes the caller
    with it). For debugging a trial under pdb, and for CPU tests of the sweep's bookkeeping."""

    restarts = 0

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self._runner: Any = None

    def start(self) -> WorkerInfo:
        if self._runner is None:
            from mxmoe.tuning.sweep.worker import TrialRunner

            self._runner = TrialRunner.start(self.config)
        return self._runner.info

    def run(self, jobs: Iterable[Job]) -> Iterator[tuple[Job, TrialResult]]:
        self.start()
        for job in jobs:
            yield job, self._runner.run(job, lambda phase: None)

    def close(self) -> None:
        self._runner = None

    def __enter__(self) -> InlineExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
