"""Running a legality validation's tasks in spawn worker processes (one CUDA context each on the GPU), so that
no compile, crash or lost context of one config can take the run down, and a deadline bounds it.

A worker whose CUDA context broke answers "retry" from then on: the pool is drained, a fresh one started and the
task resubmitted. A worker that dies breaks the pool: the tasks in flight then are rerun one at a time
(`_quarantine`), so only the config that kills a worker alone is written as worker_lost. Past the deadline the
pool is stopped and the rest written as not_run.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import time

from mxmoe.tuning.sweep.compile_check.gpu import init_worker, run_task
from mxmoe.tuning.sweep.compile_check.sample import Task


def _terminate(pool: cf.ProcessPoolExecutor) -> None:
    """Stop a pool now: cancel queued tasks and end its worker processes (ours), which may sit in a compile."""
    processes = list(getattr(pool, "_processes", {}).values())  # no public API for this in 3.11
    pool.shutdown(wait=False, cancel_futures=True)
    for p in processes:
        if p.is_alive():
            p.terminate()


def _quarantine(suspects: list[Task], ctx, initializer, fn, timeout_s: int, launch: bool, write,
                deadline: float) -> None:
    """Run the tasks that were in flight when a worker died one at a time: the one that kills a worker
    alone is written as worker_lost, the others get their real result."""
    pool = None
    for i, task in enumerate(suspects):
        if time.monotonic() > deadline:
            for t in suspects[i:]:
                write(t, {"outcome": "not_run", "error": "deadline reached in quarantine"})
            break
        pool = pool or cf.ProcessPoolExecutor(max_workers=1, mp_context=ctx, initializer=initializer)
        try:
            write(task, pool.submit(fn, task, timeout_s, launch).result(timeout=max(1.0, deadline - time.monotonic())))
        except cf.process.BrokenProcessPool:
            write(task, {"outcome": "worker_lost", "error": "the worker process died running this config alone"})
            pool.shutdown(wait=True)
            pool = None
        except cf.TimeoutError:
            _terminate(pool)
            pool = None
            write(task, {"outcome": "not_run", "error": "deadline reached in quarantine"})
    if pool is not None:
        pool.shutdown(wait=True)


def run_all(tasks: list[Task], jobs: int, timeout_s: int, deadline_s: float, launch: bool, write,
            fn=None, initializer=None) -> None:
    """Run every task in spawn workers, at most `jobs` in flight, and `write(task, result)` each one.

    A worker whose CUDA context broke answers "retry" from then on: the driver drains the pool, starts a
    fresh one and resubmits. A worker that dies breaks the pool: the tasks in flight then are rerun one
    at a time (`_quarantine`). Past `deadline_s` the pool is stopped and the rest written as not_run.
    `fn(task, timeout_s, launch) -> dict` and `initializer` default to the GPU worker (`gpu.run_task`,
    `gpu.init_worker`).
    """
    fn = fn or run_task
    initializer = initializer or init_worker
    deadline = time.monotonic() + deadline_s
    queue = list(reversed(tasks))  # pop() from the end keeps the interleaved order
    ctx = mp.get_context("spawn")
    while queue:
        pool = cf.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=initializer)
        suspects: list[Task] = []
        drain = _run_pool(pool, queue, suspects, jobs, (fn, timeout_s, launch), write, (deadline, deadline_s))
        if drain is None:  # deadline: everything not written was written as not_run
            return
        pool.shutdown(wait=True, cancel_futures=True)
        if suspects:
            print(f"a worker died: rerunning the {len(suspects)} configs in flight one at a time", flush=True)
            _quarantine(suspects, ctx, initializer, fn, timeout_s, launch, write, deadline)
        if drain and queue:
            print(f"restarting the worker pool; {len(queue)} configs left", flush=True)


def _run_pool(pool: cf.ProcessPoolExecutor, queue: list[Task], suspects: list[Task], jobs: int, call: tuple,
              write, deadlines: tuple[float, float]) -> bool | None:
    """Feed `queue` (popped from the end) to one pool until it is empty or the pool must be drained; the tasks
    in flight when a worker died go to `suspects`. True when drained early, False when done, None when the
    deadline came (the pool is stopped and every task left written as not_run)."""
    fn, timeout_s, launch = call
    deadline, deadline_s = deadlines  # monotonic time, and the run's budget for the not_run message
    inflight: dict = {}
    drain = False
    while queue or inflight:
        while queue and not drain and len(inflight) < jobs:
            task = queue.pop()
            inflight[pool.submit(fn, task, timeout_s, launch)] = task
        if not inflight:
            break
        done, _ = cf.wait(inflight, timeout=max(0.0, deadline - time.monotonic()), return_when=cf.FIRST_COMPLETED)
        if not done:  # deadline
            _terminate(pool)
            for task in [*inflight.values(), *suspects, *reversed(queue)]:
                write(task, {"outcome": "not_run", "error": f"deadline {deadline_s:.0f}s reached"})
            return None
        for fut in done:
            task = inflight.pop(fut)
            try:
                result = fut.result()
            except cf.process.BrokenProcessPool:
                suspects.append(task)
                drain = True
                continue
            if result.get("outcome") == "retry":  # CUDA context lost earlier in that worker
                queue.append(task)
                drain = True
                continue
            write(task, result)
    return drain
