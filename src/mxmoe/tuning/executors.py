"""Executors: how the sweep's jobs reach a worker and their results come back.

torch-free: the sweep driver runs here and never opens a CUDA context. The interface is small so
that `host` (one worker per GPU of a host) and `ray` (workers on a cluster) can be added beside
`LocalExecutor` without touching the sweep: the sweep calls `start()` once (the hello of the first
worker: the device every row is keyed on), then iterates `run(jobs)`, which yields one
(Job, TrialResult) per job, in any order, whatever became of the worker; the sweep alone writes the
ledger. The message types below are the worker protocol (see `worker.py`); they travel as dicts.

LocalExecutor runs one spawn-context worker process and supervises it (InlineExecutor, at the end,
runs trials in-process for debugging and fast tests):
- per-phase timeout: no message for `timeout_s` -> SIGKILL, a `timeout` result, a fresh worker;
- death (segfault, OOM kill, os._exit): a fresh worker retries the job once; a second death of that
  job is `worker_lost`. Both carry the tail of the worker's captured stdout and stderr;
- a result flagged `restart` (a CUDA error poisons the context): kept, and the worker is replaced.
A restarted worker reuses the first hello's floors and idle check.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Protocol

STDERR_TAIL_CHARS = 3000
START_TIMEOUT_S = 900.0  # first hello: imports, idle check, floors (a 1 GiB copy and a matmul)
STOP_TIMEOUT_S = 10.0
MAX_DEATHS = 2  # a job whose worker died this many times is worker_lost


def _strict(cls: type, d: Mapping[str, Any]) -> dict[str, Any]:
    unknown = set(d) - {f.name for f in fields(cls)}
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields {sorted(unknown)}")
    return dict(d)


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """What a worker needs to start. `floors` and `idle` come from the first worker's hello, so a
    restarted worker neither re-measures the floors nor takes an idle check on a GPU we just used."""

    model: str
    path: str
    argv: tuple[str, ...] = ()
    seed: int = 0
    floors: dict[str, Any] | None = None
    idle: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["argv"] = list(self.argv)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> WorkerConfig:
        d = _strict(cls, d)
        d["argv"] = tuple(d.get("argv", ()))
        return cls(**d)


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """The worker's hello: the device every row is keyed on, and what the sweep measured once."""

    pid: int
    device: str  # torch.cuda.get_device_name(), or "interpreter"
    device_uuid: str | None
    interpreter: bool
    kernel_hash: str
    triton_version: str | None
    floors: dict[str, Any]
    idle: dict[str, Any]
    limits: dict[str, Any]  # legality.DeviceLimits fields of the device (the driver has no CUDA to ask)
    provenance: dict[str, Any]  # collect_provenance at start-up, plus git_commit: for rows with no timing

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> WorkerInfo:
        return cls(**_strict(cls, d))


@dataclass(frozen=True, slots=True)
class Job:
    """One candidate: `key` is its ledger key, `config` a MoEConfig dict (both stages, always)."""

    key: str
    stage: str  # "1" | "2" | "layer"
    tokens: int
    routing: str
    config: dict[str, Any]
    config_key: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Job:
        return cls(**_strict(cls, d))


@dataclass(frozen=True, slots=True)
class TrialResult:
    """What became of a job. `status` is a records.Status text (`measured`, `unmeasured:<reason>`...)."""

    status: str
    detail: str | None = None
    median_us: float | None = None
    p95_us: float | None = None
    ci_lo_us: float | None = None
    ci_hi_us: float | None = None
    samples_us: tuple[float, ...] = ()
    tflops: float | None = None
    roofline_fraction: float | None = None
    nonclaimable_reasons: tuple[str, ...] = ()
    provenance: dict[str, Any] = field(default_factory=dict)
    device_uuid: str | None = None
    restart: bool = False

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["samples_us"] = list(self.samples_us)
        d["nonclaimable_reasons"] = list(self.nonclaimable_reasons)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrialResult:
        d = _strict(cls, d)
        d["samples_us"] = tuple(d.get("samples_us", ()))
        d["nonclaimable_reasons"] = tuple(d.get("nonclaimable_reasons", ()))
        return cls(**d)




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
    """One worker process on this machine (one GPU, or the interpreter). Use as a context manager."""

    def __init__(self, config: WorkerConfig, *, timeout_s: float = 300.0,
                 start_timeout_s: float = START_TIMEOUT_S, output_dir: str | None = None) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        self.config, self.timeout_s, self.start_timeout_s = config, timeout_s, start_timeout_s
        self.output_dir = output_dir
        self.info: WorkerInfo | None = None
        self.restarts = 0
        self._proc: _Proc | None = None
        self._ctx = multiprocessing.get_context("spawn")

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- process management -----------------------------------------------------------------------

    def _spawn(self) -> WorkerInfo:
        from mxmoe.tuning.worker import PROTOCOL_VERSION, serve

        fd, output = tempfile.mkstemp(prefix="mxmoe-worker-", suffix=".log", dir=self.output_dir)
        os.close(fd)
        parent, child = self._ctx.Pipe()
        process = self._ctx.Process(target=serve, args=(child, self.config.to_dict(), output, os.getpid()),
                                    name="mxmoe-worker", daemon=True)
        process.start()
        child.close()
        self._proc = _Proc(process, parent, output)
        msg = self._recv(self.start_timeout_s)
        if msg is None or msg.get("op") != "hello" or msg.get("protocol") != PROTOCOL_VERSION:
            why = "timed out" if msg is None else msg.get("error", f"died or spoke another protocol: {msg.get('op')}")
            detail = f"worker failed to start ({why}); output tail:\n{tail(output)}"
            self._kill()
            raise WorkerStartError(detail)
        return WorkerInfo.from_dict(msg["info"])

    def _recv(self, timeout: float) -> dict[str, Any] | None:
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

    def start(self) -> WorkerInfo:
        if self.info is None:
            self.info = self._spawn()
            self.config = replace(self.config, floors=self.info.floors, idle=self.info.idle)
        return self.info

    def _ensure(self) -> None:
        if self._proc is None:
            self._spawn()
            self.restarts += 1

    def close(self) -> None:
        proc = self._proc
        if proc is None:
            return
        with contextlib.suppress(OSError, BrokenPipeError):
            proc.conn.send({"op": "stop"})
        proc.process.join(STOP_TIMEOUT_S)
        self._kill()

    # ---- jobs -------------------------------------------------------------------------------------

    def run(self, jobs: Iterable[Job]) -> Iterator[tuple[Job, TrialResult]]:
        self.start()
        for job in jobs:
            yield job, self.run_one(job)

    def run_one(self, job: Job) -> TrialResult:
        deaths: list[str] = []
        while True:
            self._ensure()
            assert self._proc is not None
            try:
                self._proc.conn.send({"op": "run", "job": job.to_dict()})
            except (BrokenPipeError, OSError):
                self._kill()  # died while idle: not this job's doing
                continue
            outcome = self._await(job)
            if isinstance(outcome, TrialResult):
                return outcome
            deaths.append(outcome)
            if len(deaths) >= MAX_DEATHS:
                detail = f"worker died {len(deaths)} times on this job:\n" + "\n---\n".join(deaths)
                return TrialResult("worker_lost", detail=detail[-2 * STDERR_TAIL_CHARS:])

    def _await(self, job: Job) -> TrialResult | str:
        """The job's result, a timeout result, or (the worker died) its output tail."""
        phase = "sent"
        while True:
            msg = self._recv(self.timeout_s)
            if msg is None:
                text = self._kill()
                detail = f"no message for {self.timeout_s:g} s in phase {phase!r}; worker killed\n{text}"
                return TrialResult("timeout", detail=detail[-STDERR_TAIL_CHARS:])
            op = msg.get("op")
            if op == "died":
                return f"died in phase {phase!r}\n" + self._kill()
            if msg.get("key") != job.key:
                raise RuntimeError(f"worker protocol: message {msg!r} while running job {job.key}")
            if op == "phase":
                phase = msg["phase"]
            elif op == "result":
                result = TrialResult.from_dict(msg["result"])
                if result.restart:
                    self._kill()
                return result
            else:
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
            from mxmoe.tuning.worker import TrialRunner

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
