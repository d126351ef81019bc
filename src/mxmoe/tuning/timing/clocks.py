"""Timing backends for `measure`: CUDA-event pairs on a GPU, and a seeded synthetic clock for CPU tests and the
interpreter sweep (its rows carry "fake_clock" and are never claimable).

torch is imported here, but CUDA is touched only when a `CudaEventClock` is built, so this module imports on a
CPU-only machine.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np
import torch

L2_FLUSH_FACTOR = 2  # the flush writes 2x L2, so no line of the previous iteration survives
_SLEEP_CALIBRATION_CYCLES = 2_000_000

Step = Callable[[int], object]


class CudaUnavailableError(RuntimeError):
    """A CUDA-event clock was asked for where torch sees no CUDA device."""


class Clock(Protocol):
    """The injectable timing backend: samples, its own time line, graph capture and L2 flushing."""

    name: str
    synthetic: bool  # True: samples are not real GPU times, so no row it makes is claimable

    def now_s(self) -> float: ...
    def time_batch(
        self, step: Step, indices: Sequence[int], before: Step | None = None, lead_us: float = 0.0
    ) -> list[float]:
        """Run step(i) for each i with `before(i)` and `lead_us` of GPU busy-wait untimed ahead of
        it; one time (us) per step."""
        ...

    def host_us(self, step: Step, indices: Sequence[int], before: Step | None = None) -> float:
        """Host (CPU) time to enqueue one iteration, untimed on the GPU, averaged over `indices`."""
        ...

    def capture(self, calls: Sequence[Callable[[], object]]) -> list[Callable[[], object]]: ...
    def l2_bytes(self) -> int | None: ...
    def flusher(self) -> Callable[[], None]: ...
    def device_uuid(self) -> str | None: ...


class CudaEventClock:
    """Per-iteration torch.cuda.Event pairs on the current stream, read after one sync per batch."""

    name = "cuda_event"
    synthetic = False

    def __init__(self, device: int | None = None) -> None:
        if not torch.cuda.is_available():
            raise CudaUnavailableError("torch sees no CUDA device; pass clock=FakeClock(...) to run on CPU")
        self.device = torch.device("cuda", torch.cuda.current_device() if device is None else device)
        self._cycles_per_us: float | None = None

    def _lead_cycles(self, lead_us: float) -> int:
        """torch.cuda._sleep cycles for `lead_us`, calibrated once per clock with an event pair."""
        if lead_us <= 0:
            return 0
        if self._cycles_per_us is None:
            with torch.cuda.device(self.device):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                torch.cuda._sleep(1000)
                start.record()
                torch.cuda._sleep(_SLEEP_CALIBRATION_CYCLES)
                end.record()
                end.synchronize()
            self._cycles_per_us = _SLEEP_CALIBRATION_CYCLES / (start.elapsed_time(end) * 1000.0)
        return int(lead_us * self._cycles_per_us)

    def now_s(self) -> float:
        return time.perf_counter()

    def time_batch(
        self, step: Step, indices: Sequence[int], before: Step | None = None, lead_us: float = 0.0
    ) -> list[float]:
        n = len(indices)
        lead = self._lead_cycles(lead_us)
        with torch.cuda.device(self.device):
            starts = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
            ends = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
            for k, i in enumerate(indices):
                if before is not None:
                    before(i)
                if lead:
                    torch.cuda._sleep(lead)
                starts[k].record()
                step(i)
                ends[k].record()
            torch.cuda.synchronize(self.device)
        return [s.elapsed_time(e) * 1000.0 for s, e in zip(starts, ends, strict=True)]

    def host_us(self, step: Step, indices: Sequence[int], before: Step | None = None) -> float:
        with torch.cuda.device(self.device):
            torch.cuda.synchronize(self.device)
            t0 = time.perf_counter()
            for i in indices:
                if before is not None:
                    before(i)
                step(i)
            host = (time.perf_counter() - t0) / max(len(indices), 1) * 1e6
            torch.cuda.synchronize(self.device)
        return host

    def capture(self, calls: Sequence[Callable[[], object]]) -> list[Callable[[], object]]:
        """One CUDAGraph per call (per rotating argument set), all in one memory pool."""
        replays: list[Callable[[], object]] = []
        pool = None
        with torch.cuda.device(self.device):
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # PyTorch's recipe: warm up on a side stream before capture
                for call in calls:
                    call()
            torch.cuda.current_stream().wait_stream(side)
            for call in calls:
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, pool=pool):
                    call()
                pool = graph.pool()
                replays.append(graph.replay)
            torch.cuda.synchronize(self.device)
        return replays

    def l2_bytes(self) -> int | None:
        return int(torch.cuda.get_device_properties(self.device).L2_cache_size)

    def flusher(self) -> Callable[[], None]:
        buf = torch.empty(L2_FLUSH_FACTOR * (self.l2_bytes() or 0), dtype=torch.int8, device=self.device)

        def flush() -> None:
            buf.zero_()

        return flush

    def device_uuid(self) -> str | None:
        uuid = getattr(torch.cuda.get_device_properties(self.device), "uuid", None)
        return None if uuid is None else str(uuid)


class FakeClock:
    """Deterministic synthetic samples: median_us * exp(rel_noise * N(0, 1)), times `outlier_factor`
    with probability `outlier_rate`. Its time line advances by each sample plus `overhead_us`, so the
    stop rule's time cap is reproducible. With execute=False the work itself is skipped (the
    interpreter sweep checks correctness once, elsewhere, and does not run a kernel per sample)."""

    name = "fake"
    synthetic = True

    def __init__(
        self,
        median_us: float = 10.0,
        rel_noise: float = 0.01,
        *,
        seed: int = 0,
        outlier_rate: float = 0.0,
        outlier_factor: float = 5.0,
        overhead_us: float = 2.0,
        l2: int | None = 50 * 2**20,
        execute: bool = True,
    ) -> None:
        if median_us <= 0 or rel_noise < 0 or not 0.0 <= outlier_rate <= 1.0:
            raise ValueError(f"bad FakeClock({median_us=}, {rel_noise=}, {outlier_rate=})")
        self.median_us, self.rel_noise = median_us, rel_noise
        self.outlier_rate, self.outlier_factor, self.overhead_us = outlier_rate, outlier_factor, overhead_us
        self.execute = execute
        self._l2 = l2
        self._rng = np.random.default_rng(seed)
        self._now_s = 0.0
        self.flushes = 0
        self.captures = 0

    def now_s(self) -> float:
        return self._now_s

    def time_batch(
        self, step: Step, indices: Sequence[int], before: Step | None = None, lead_us: float = 0.0
    ) -> list[float]:
        for i in indices:
            if before is not None:
                before(i)
            if self.execute:
                step(i)
        n = len(indices)
        x = self.median_us * np.exp(self.rel_noise * self._rng.standard_normal(n))
        x[self._rng.random(n) < self.outlier_rate] *= self.outlier_factor
        self._now_s += (float(x.sum()) + n * (self.overhead_us + lead_us)) * 1e-6
        return x.tolist()

    def host_us(self, step: Step, indices: Sequence[int], before: Step | None = None) -> float:
        for i in indices:
            if before is not None:
                before(i)
            if self.execute:
                step(i)
        self._now_s += len(indices) * self.overhead_us * 1e-6
        return self.overhead_us

    def capture(self, calls: Sequence[Callable[[], object]]) -> list[Callable[[], object]]:
        self.captures += 1
        return list(calls)

    def l2_bytes(self) -> int | None:
        return self._l2

    def flusher(self) -> Callable[[], None]:
        def flush() -> None:
            self.flushes += 1

        return flush

    def device_uuid(self) -> str | None:
        return None
