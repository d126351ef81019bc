"""The host executor: one worker process per visible GPU of this machine, one driver, one ledger writer.

torch-free, like the sweep driver: GPUs are listed from CUDA_VISIBLE_DEVICES or NVML (no CUDA context),
and each worker is a LocalExecutor-managed spawn process pinned to its GPU with CUDA_VISIBLE_DEVICES
(set in the child before torch loads). Without a GPU, `workers` interpreter workers run instead, so the
pool is tested on CPU. The driver waits on every worker's pipe at once and keeps one job per worker.

The pool pieces here are shared with the Ray executor:
- `JobQueue`: a job whose worker died goes back to the front, to be tried on another worker (a
  different GPU, when there is one); its second death makes it `worker_lost`. A result that is the
  job's own (measured, incorrect, compile_error, timeout...) is final, as with the local executor;
- `pool_info`: the hello the sweep sees. Its idle check is the union of every worker's (a busy GPU
  refuses the sweep), a worker on other kernel sources is what the sweep is shown (it refuses), and
  workers on GPUs of different names are refused here: every row is keyed on one device name.
A worker that cannot be restarted mid-sweep leaves the pool (its job goes back, unmarked); when none
is left, WorkerStartError stops the sweep, and a resumed sweep runs what is left.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from itertools import takewhile
from multiprocessing import connection
from typing import Any

from mxmoe.tuning.sweep.executors import (
    MAX_DEATHS,
    START_TIMEOUT_S,
    Job,
    LocalExecutor,
    TrialResult,
    WorkerConfig,
    WorkerInfo,
    WorkerStartError,
    WorkerStat,
    lost_result,
    stamp,
)
from mxmoe.tuning.timing.gpu_state import CheckResult, merge_checks
from mxmoe.tuning.timing.nvml import NvmlError, open_nvml


def visible_gpus(environ: Mapping[str, str], nvml: Any = None) -> tuple[str, ...]:
    """The GPUs a host's workers may use, as CUDA_VISIBLE_DEVICES entries: that variable's own list
    when it is set (up to a `-1`, where CUDA stops reading), else every NVML device by uuid; none
    without NVML."""
    if "CUDA_VISIBLE_DEVICES" in environ:
        entries = (e.strip() for e in environ["CUDA_VISIBLE_DEVICES"].split(","))
        return tuple(takewhile(lambda e: e not in ("", "-1"), entries))
    nvml = open_nvml() if nvml is None else nvml
    try:
        return tuple(nvml.uuid(i) for i in range(nvml.device_count()))
    except NvmlError:
        return ()


class JobQueue:
    """The jobs of a pool not yet answered, and the deaths of each (slots are worker indices)."""

    def __init__(self, jobs: Iterable[Job]) -> None:
        self._pending: deque[Job] = deque(jobs)
        self._deaths: dict[str, list[str]] = {}
        self._avoid: dict[str, set[int]] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def take(self, slot: int, live: Iterable[int]) -> Job | None:
        """The next job for worker `slot`: the first not avoiding it, or one avoiding it when no other
        live worker could take it (a one-GPU pool still retries, on a fresh process)."""
        others = set(live) - {slot}
        for i, job in enumerate(self._pending):
            avoid = self._avoid.get(job.key, set())
            if slot not in avoid or not others - avoid:
                del self._pending[i]
                return job
        return None

    def requeue(self, job: Job) -> None:
        """Back to the front, unmarked: the job was not running when its worker went (queued, or sent
        to a worker that could not restart)."""
        self._pending.appendleft(job)

    def died(self, job: Job, slot: int, text: str) -> TrialResult | None:
        """The job's worker died running it: `worker_lost` at its MAX_DEATHS-th death, else None and
        the job waits, at the front, for another worker."""
        deaths = self._deaths.setdefault(job.key, [])
        deaths.append(text)
        if len(deaths) >= MAX_DEATHS:
            return lost_result(deaths)
        self._avoid.setdefault(job.key, set()).add(slot)
        self._pending.appendleft(job)
        return None


def pool_info(hellos: Sequence[tuple[str, WorkerInfo]]) -> WorkerInfo:
    """The hello the sweep checks and keys rows on, from every worker's (label, hello)."""
    first = hellos[0][1]
    for _, info in hellos:
        if info.kernel_hash != first.kernel_hash:
            return info  # the sweep refuses: workers (or the driver) see other kernel sources
    devices = sorted({info.device for _, info in hellos})
    if len(devices) > 1:
        raise WorkerStartError(f"workers on different devices {devices}: rows are keyed on one device name; "
                               "give the sweep one kind of GPU (CUDA_VISIBLE_DEVICES)")
    idle = merge_checks(*(CheckResult(c.codes, f"{label}: {c.detail}" if c.detail else "")
                          for label, info in hellos for c in [CheckResult.from_dict(info.idle)]))
    return replace(first, idle=idle.to_dict())


@dataclass
class _Slot:
    """One worker of the pool and the job it runs (None when idle)."""

    index: int
    local: LocalExecutor
    job: Job | None = None
    deadline: float = 0.0
    note: str = ""  # why it left the pool; '' while it serves


class HostExecutor:
    """One worker per visible GPU (or `workers` interpreter workers without one). A context manager.
    `gpus` (CUDA_VISIBLE_DEVICES entries) defaults to `visible_gpus(os.environ)`."""

    def __init__(self, config: WorkerConfig, *, workers: int | None = None, timeout_s: float = 300.0,
                 start_timeout_s: float = START_TIMEOUT_S, output_dir: str | None = None,
                 gpus: Sequence[str] | None = None) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        if workers is not None and workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        gpus = tuple(visible_gpus(os.environ) if gpus is None else gpus)
        if gpus:
            n = len(gpus) if workers is None else workers
            if n > len(gpus):
                raise ValueError(f"--workers {n}: this host shows {len(gpus)} GPUs ({', '.join(gpus)})")
            pins = [({"CUDA_VISIBLE_DEVICES": g}, f"gpu{i}") for i, g in enumerate(gpus[:n])]
        else:
            pins = [({}, f"cpu{i}") for i in range(workers or 1)]
        self.timeout_s = timeout_s
        self.info: WorkerInfo | None = None
        self._slots = [_Slot(i, LocalExecutor(config, timeout_s=timeout_s, start_timeout_s=start_timeout_s,
                                              output_dir=output_dir, env=env, label=label))
                       for i, (env, label) in enumerate(pins)]

    def __enter__(self) -> HostExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def restarts(self) -> int:
        return sum(s.local.restarts for s in self._slots)

    def start(self) -> WorkerInfo:
        if self.info is None:
            try:
                for s in self._slots:  # all start at once: imports, idle checks and floors overlap
                    s.local.launch()
                self.info = pool_info([(s.local.label, s.local.start()) for s in self._slots])
            except WorkerStartError:
                self.close()
                raise
        return self.info

    def close(self) -> None:
        for s in self._slots:
            s.local.close()

    def stats(self) -> tuple[WorkerStat, ...]:
        return tuple(replace(s.local.stats()[0], note=s.note) for s in self._slots)

    # ---- jobs -------------------------------------------------------------------------------------

    def run(self, jobs: Iterable[Job]) -> Iterator[tuple[Job, TrialResult]]:
        self.start()
        queue = JobQueue(jobs)
        while True:
            self._feed(queue)
            busy = [s for s in self._slots if s.job is not None]
            if not busy:
                if queue:
                    notes = "; ".join(f"{s.local.label}: {s.note}" for s in self._slots)
                    raise WorkerStartError(f"every worker left the pool with {len(queue)} jobs to go ({notes})")
                return
            wait_s = max(0.0, min(s.deadline for s in busy) - time.monotonic())
            ready = connection.wait([s.local.conn for s in busy], timeout=wait_s)
            for s in busy:
                if s.local.conn in ready:
                    msg = s.local.recv(0.0)
                    if msg is None:
                        continue
                    outcome = s.local.on_message(s.job, msg)
                elif time.monotonic() >= s.deadline:
                    outcome = s.local.timed_out()
                else:
                    continue
                yield from self._settle(s, outcome, queue)

    def _feed(self, queue: JobQueue) -> None:
        """Give every idle worker of the pool a job, while there are jobs it may take."""
        live = [s.index for s in self._slots if not s.note]
        for s in self._slots:
            if s.job is not None or s.note:
                continue
            job = queue.take(s.index, live)
            if job is None:
                continue
            try:
                s.local.send(job)
            except WorkerStartError as exc:
                s.note = f"left the pool: could not restart ({str(exc)[:300]})"
                queue.requeue(job)
                continue
            s.local.tally.sent()
            s.job, s.deadline = job, time.monotonic() + self.timeout_s

    def _settle(self, s: _Slot, outcome: TrialResult | str | None,
                queue: JobQueue) -> Iterator[tuple[Job, TrialResult]]:
        """Act on one message of worker `s`: a phase rearms its timer; a result ends the job; a death
        sends the job to another worker, or ends it as worker_lost."""
        if outcome is None:
            s.deadline = time.monotonic() + self.timeout_s
            return
        job, s.job = s.job, None
        assert job is not None
        if isinstance(outcome, str):
            lost = queue.died(job, s.index, f"[{s.local.label}] {outcome}")
            if lost is None:
                return
            outcome = lost
        s.local.tally.done()
        yield job, stamp(outcome, s.local.info)
