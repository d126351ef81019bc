"""The Ray executor: measurement actors on a Ray cluster, one GPU each, results streamed to the driver.

torch-free, and Ray-free at import: `ray` loads in `require_ray()` (it is the `mxmoe[ray]` extra).

Each actor (`MeasureActor`: `num_gpus=1`, or `num_cpus=1` on a cluster without GPUs, where it runs
the interpreter) wraps a LocalExecutor, so the trial itself runs in a spawn child of the actor: a
segfault, hang or CUDA error of a trial ends the child, never the actor or the driver, exactly as
with the local executor. The driver keeps at most `in_flight` calls per actor (2: one running, one
queued, so a GPU never waits on a round trip and a large space does not flood the object store),
takes results as they come (`ray.wait`) and stays the ledger's only writer.

Failure, with the local executor's guarantees:
- the trial's child died: the actor returns its output tail; the job is retried on another actor
  (JobQueue), and a second death is `worker_lost`;
- the actor or its node died (RayActorError and kin): the actor leaves the pool; its running call
  counts as a death of that job (an actor runs its calls in order, so that is the oldest), its queued
  calls go back to the queue unmarked;
- an actor with no reply for `4 x timeout + start timeout` (its child's phases are bounded by the
  timeout, a respawn by the start timeout) is killed, as above; every actor gone: WorkerStartError.
Devices: rows are keyed on one device name (the sweep's), so of a mixed cluster the pool keeps the
actors on the most common GPU (or `device=`) and the others leave it with a note; every row carries
the uuid of the GPU that ran it. The driver's MXMOE_ variables are forwarded to the workers (fault
injection included: it is recorded in every row's provenance).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mxmoe.tuning.sweep.executors import (
    START_TIMEOUT_S,
    STDERR_TAIL_CHARS,
    STOP_TIMEOUT_S,
    ExecutorUnavailableError,
    Job,
    LocalExecutor,
    Tally,
    TrialResult,
    WorkerConfig,
    WorkerInfo,
    WorkerStartError,
    WorkerStat,
    stamp,
)
from mxmoe.tuning.sweep.executors_host import JobQueue, pool_info

RAY_INSTALL = "pip install 'mxmoe[ray]'"
IN_FLIGHT = 2  # calls per actor: one running, one queued
WAIT_S = 1.0  # ray.wait poll: how often the watchdog looks
FORWARDED_ENV = "MXMOE_"  # not TRITON_INTERPRET: a GPU worker of a CPU driver must not run the interpreter


def require_ray() -> Any:
    """The ray module, or ExecutorUnavailableError saying how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise ExecutorUnavailableError(f"--executor ray needs Ray, which is not installed here: {RAY_INSTALL}") from exc
    return ray


def forwarded_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The driver's MXMOE_ variables (fault injection...): a worker on another node must see them too."""
    return {k: v for k, v in environ.items() if k.startswith(FORWARDED_ENV)}


def pick_device(devices: Sequence[str], wanted: str | None = None) -> str:
    """The device name the pool keeps: `wanted`, else the most common one (ties: the first by name)."""
    kinds = Counter(devices)
    device = wanted or min(kinds, key=lambda d: (-kinds[d], d))
    if device not in kinds:
        raise WorkerStartError(f"no Ray worker on device {device!r}; the cluster has {dict(kinds)}")
    return device


class MeasureActor:
    """A Ray actor: one LocalExecutor (its spawn child runs the trials) on the actor's GPU."""

    def __init__(self, config: dict[str, Any], timeout_s: float, start_timeout_s: float, env: dict[str, str]) -> None:
        self.local = LocalExecutor(WorkerConfig.from_dict(config), timeout_s=timeout_s,
                                   start_timeout_s=start_timeout_s, env=env, label="ray")

    def hello(self) -> dict[str, Any]:
        import ray

        node = ray.util.get_node_ip_address()
        try:
            info = self.local.start()
        except WorkerStartError as exc:
            return {"error": str(exc), "node": node}
        return {"info": info.to_dict(), "pid": os.getpid(), "node": node}

    def run(self, job: dict[str, Any]) -> dict[str, Any]:
        """One try of the job: {"result": TrialResult}, {"died": output tail} or {"start_failed": why}."""
        try:
            outcome = self.local.attempt(Job.from_dict(job))
        except WorkerStartError as exc:
            return {"start_failed": str(exc), "restarts": self.local.restarts}
        reply = {"result": outcome.to_dict()} if isinstance(outcome, TrialResult) else {"died": outcome}
        return reply | {"restarts": self.local.restarts}

    def stop(self) -> None:
        self.local.close()


@dataclass
class _Actor:
    """The driver's view of one actor: its calls in flight, oldest (the running one) first."""

    index: int
    handle: Any
    label: str
    info: WorkerInfo | None = None
    pid: int | None = None
    calls: deque[tuple[Any, Job]] = field(default_factory=deque)
    running_since: float = 0.0
    restarts: int = 0
    tally: Tally = field(default_factory=Tally)
    note: str = ""  # why it left the pool; '' while it serves


class RayExecutor:
    """Measurement actors on a Ray cluster. Connects with `ray.init(address)` unless Ray is already
    initialised (and then leaves it running). `workers` defaults to every GPU of the cluster, or 1
    actor without GPUs. A context manager."""

    def __init__(self, config: WorkerConfig, *, workers: int | None = None, address: str | None = None,
                 timeout_s: float = 300.0, start_timeout_s: float = START_TIMEOUT_S, in_flight: int = IN_FLIGHT,
                 device: str | None = None) -> None:
        if timeout_s <= 0 or in_flight < 1 or (workers is not None and workers < 1):
            raise ValueError(f"need timeout_s > 0, in_flight >= 1, workers >= 1; got {timeout_s}, {in_flight}, "
                             f"{workers}")
        self.config, self.workers, self.address, self.device = config, workers, address, device
        self.timeout_s, self.start_timeout_s, self.in_flight = timeout_s, start_timeout_s, in_flight
        self.stuck_s = 4 * timeout_s + start_timeout_s
        self.info: WorkerInfo | None = None
        self._actors: list[_Actor] = []
        self._ray: Any = None
        self._owns_ray = False

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def restarts(self) -> int:
        return sum(a.restarts for a in self._actors)

    # ---- start and stop ---------------------------------------------------------------------------

    def _placement(self) -> tuple[int, dict[str, Any]]:
        res = self._ray.cluster_resources()
        gpus, cpus = int(res.get("GPU", 0)), int(res.get("CPU", 0))
        have, unit = (gpus, "GPU") if gpus else (cpus, "CPU")
        n = self.workers or (gpus or 1)
        if n > have:
            raise ValueError(f"--workers {n}: the Ray cluster has {have} {unit}s")
        opts = {"num_gpus": 1, "num_cpus": 1} if gpus else {"num_cpus": 1}
        return n, opts | {"max_restarts": 0, "max_task_retries": 0}

    def start(self) -> WorkerInfo:
        if self.info is not None:
            return self.info
        ray = self._ray = require_ray()
        if not ray.is_initialized():
            try:
                ray.init(address=self.address, include_dashboard=False, log_to_driver=False)
            except Exception as exc:  # noqa: BLE001 - ConnectionError, RuntimeError...: the sweep stops, says why
                raise WorkerStartError(f"could not start or reach Ray (address {self.address!r}): {exc}") from exc
            self._owns_ray = True
        try:
            self.info = self._start_actors()
        except BaseException:
            self.close()
            raise
        return self.info

    def _start_actors(self) -> WorkerInfo:
        ray = self._ray
        n, opts = self._placement()
        cls = ray.remote(MeasureActor).options(**opts)
        args = (self.config.to_dict(), self.timeout_s, self.start_timeout_s, forwarded_env(os.environ))
        self._actors = [_Actor(i, cls.remote(*args), f"ray{i}") for i in range(n)]
        refs = [a.handle.hello.remote() for a in self._actors]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=self.start_timeout_s)
        if len(ready) < len(refs):
            raise WorkerStartError(f"{len(refs) - len(ready)} of {n} Ray workers did not say hello within "
                                   f"{self.start_timeout_s:g} s (resources {opts} not free?)")
        for a, ref in zip(self._actors, refs, strict=True):
            try:
                reply = ray.get(ref)
            except ray.exceptions.RayError as exc:
                raise WorkerStartError(f"Ray worker {a.label} failed to start: {exc}") from exc
            a.label = f"ray{a.index}@{reply['node']}"
            if "error" in reply:
                raise WorkerStartError(f"{a.label}: {reply['error']}")
            a.info, a.pid = WorkerInfo.from_dict(reply["info"]), reply["pid"]
        device = pick_device([a.info.device for a in self._actors if a.info], self.device)
        for a in self._actors:
            if a.info is not None and a.info.device != device:
                self._retire(a, f"excluded: device {a.info.device!r}, the sweep runs on {device!r}")
        return pool_info([(a.label, a.info) for a in self._actors if not a.note and a.info])

    def _retire(self, a: _Actor, note: str) -> None:
        a.note = a.note or note
        with contextlib.suppress(Exception):
            self._ray.kill(a.handle, no_restart=True)

    def close(self) -> None:
        ray, self._ray = self._ray, None
        if ray is None:
            return
        live = [a for a in self._actors if not a.note]
        if live:
            with contextlib.suppress(Exception):
                ray.wait([a.handle.stop.remote() for a in live], num_returns=len(live), timeout=STOP_TIMEOUT_S)
        for a in self._actors:
            with contextlib.suppress(Exception):
                ray.kill(a.handle, no_restart=True)
        if self._owns_ray:
            ray.shutdown()
            self._owns_ray = False

    def stats(self) -> tuple[WorkerStat, ...]:
        return tuple(WorkerStat(a.label, a.info.device if a.info else "?", a.info.device_uuid if a.info else None,
                                a.pid, a.tally.rows, a.restarts, a.tally.seconds, a.note) for a in self._actors)

    # ---- jobs -------------------------------------------------------------------------------------

    def run(self, jobs: Iterable[Job]) -> Iterator[tuple[Job, TrialResult]]:
        self.start()
        queue = JobQueue(jobs)
        owner: dict[Any, _Actor] = {}
        while True:
            self._feed(queue, owner)
            if not owner:
                if queue:
                    notes = "; ".join(f"{a.label}: {a.note}" for a in self._actors)
                    raise WorkerStartError(f"every Ray worker left the pool with {len(queue)} jobs to go ({notes})")
                return
            done, _ = self._ray.wait(list(owner), num_returns=1, timeout=WAIT_S)
            for ref in done:
                actor = owner.pop(ref, None)
                if actor is not None:  # else settled already, with its actor's death
                    yield from self._settle(actor, ref, queue, owner)
            self._watchdog()

    def _feed(self, queue: JobQueue, owner: dict[Any, _Actor]) -> None:
        live = [a.index for a in self._actors if not a.note]
        for a in self._actors:
            while not a.note and len(a.calls) < self.in_flight:
                job = queue.take(a.index, live)
                if job is None:
                    break
                ref = a.handle.run.remote(job.to_dict())
                if not a.calls:
                    a.running_since = time.monotonic()
                a.calls.append((ref, job))
                owner[ref] = a
                a.tally.sent()

    def _settle(self, a: _Actor, ref: Any, queue: JobQueue,
                owner: dict[Any, _Actor]) -> Iterator[tuple[Job, TrialResult]]:
        ray = self._ray
        try:
            reply = ray.get(ref)
        except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                ray.exceptions.ObjectLostError) as exc:  # any of its refs may fail first: _lose takes the oldest
            yield from self._lose(a, f"Ray worker lost: {type(exc).__name__}", str(exc), queue, owner)
            return
        assert a.calls[0][0] == ref, "a live actor answers its calls in order"
        _, job = a.calls.popleft()
        a.running_since, a.restarts = time.monotonic(), reply.get("restarts", a.restarts)
        if "start_failed" in reply:
            queue.requeue(job)
            self._drop_calls(a, queue, owner)
            self._retire(a, f"left the pool: could not restart ({reply['start_failed'][:300]})")
            return
        if "died" in reply:
            lost = queue.died(job, a.index, f"[{a.label}] {reply['died']}")
            if lost is None:
                return
            result = lost
        else:
            result = TrialResult.from_dict(reply["result"])
        a.tally.done()
        yield job, stamp(result, a.info)

    def _drop_calls(self, a: _Actor, queue: JobQueue, owner: dict[Any, _Actor]) -> None:
        """The actor's queued calls go back to the queue, unmarked, in their order."""
        while a.calls:
            ref, job = a.calls.pop()
            owner.pop(ref, None)
            queue.requeue(job)

    def _lose(self, a: _Actor, note: str, text: str, queue: JobQueue,
              owner: dict[Any, _Actor]) -> Iterator[tuple[Job, TrialResult]]:
        """The actor is gone: its running call is a death of that job, its queued calls go back."""
        ref, job = a.calls.popleft()
        owner.pop(ref, None)
        self._drop_calls(a, queue, owner)
        self._retire(a, note)
        lost = queue.died(job, a.index, f"[{a.label}] {a.note}\n{text[-STDERR_TAIL_CHARS:]}")
        if lost is not None:
            a.tally.done()
            yield job, stamp(lost, a.info)

    def _watchdog(self) -> None:
        """Kill an actor whose running call is past `stuck_s`: its refs then fail and `_lose` runs."""
        now = time.monotonic()
        for a in self._actors:
            if a.calls and not a.note and now - a.running_since > self.stuck_s:
                self._retire(a, f"killed: no reply for {now - a.running_since:.0f} s")  # its refs fail next
