"""The roofline bench: layer, stage 1, stage 2 and routing times per T, beside floors measured in the same run.

Axis legend: T tokens, A topk, E experts, H hidden, I inter.

Shared by `mxmoe bench`, `benchmarks/bench_moe.py` and the sweep worker (which measures its floors
here once per sweep). Floors (DESIGN.md "Locked spec"): the memory floor is the layer's bytes over the
device copy bandwidth of a 1 GiB copy counting read and write; the compute floor is its FLOPs over
the rate of an 8192^3 bf16 matmul. On the Triton interpreter nothing is timed for real: each piece
runs once (so the path is exercised), the timings come from a FakeClock, the floors are the nominal
H100 numbers below, and every row says so (non-claimable, `floors_source="nominal"`).
Beside the bf16 rate, `Floors.fp8_rate` is the dense e4m3 rate of the same-size `torch._scaled_mm` (None on a
GPU without FP8 tensor cores, or where it fails): the yardstick of the a8w4 e4m3 path, drawn by the report as
a line only; the roofline fraction stays judged against the bf16 floor.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import importlib.metadata
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

from mxmoe.shapes import MoEShape, Path
from mxmoe.spec import compute_floor_us, flops, layer_bytes, memory_floor_us, mfu, roofline_fraction, vendor_peak

COPY_BYTES = 2**30  # the copy whose read + write bytes give the bandwidth
MATMUL_N = 8192  # the square bf16 (and e4m3) matmul whose rate gives the compute floor (and the FP8 one)
FP8_CAPABILITY = (8, 9)  # sm_89 (Ada) and sm_90 (Hopper) have e4m3 tensor cores
FLOOR_WARMUP, FLOOR_ITERS = 3, 20
# Nominal H100 SXM numbers, used only where nothing can be measured (the interpreter): about what
# the 1 GiB copy (3.0 TB/s of 3.35 peak) and the 8192^3 bf16 matmul (790 of 989 TFLOP/s) reach.
NOMINAL_BANDWIDTH = 3.0e12
NOMINAL_RATE = 7.9e14
# Nominal too (not a measurement): about what the 8192^3 e4m3 x e4m3 -> bf16 _scaled_mm reaches, 2x the bf16
# rate above (of a 1979 TFLOP/s dense FP8 peak).
NOMINAL_FP8_RATE = 1.58e15
# Fake-clock timings (interpreter): a base plus a per-token cost, scaled per (config, T) by a
# deterministic factor in [0.7, 1.3), so a sweep on the interpreter is reproducible run to run.
FAKE_BASE_US, FAKE_PER_TOKEN_US = 4.0, 0.02
# The MeasureSettings fields a fake-clock timing sets: a few samples, no warm-up (the clock is synthetic anyway).
FAKE_MEASURE = {"warmup_s": 0.0, "warmup_min_iters": 1, "min_iters": 30, "max_iters": 60, "resamples": 300}


@dataclass(frozen=True, slots=True)
class Floors:
    """Device copy bandwidth (bytes/s, read + write), dense bf16 matmul rate and dense e4m3 rate (FLOP/s).

    `fp8_rate` is optional (None where unknown: no FP8 tensor cores, a failed probe, or a ledger row written
    before it existed), so a dict without it still reads back."""

    bandwidth: float
    rate: float
    source: str  # "measured" (this run, this GPU) or "nominal" (interpreter: not a measurement)
    fp8_rate: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Floors:
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown Floors fields {sorted(unknown)}")
        fp8 = d.get("fp8_rate")
        return cls(float(d["bandwidth"]), float(d["rate"]), str(d["source"]), None if fp8 is None else float(fp8))


NOMINAL_FLOORS = Floors(NOMINAL_BANDWIDTH, NOMINAL_RATE, "nominal", NOMINAL_FP8_RATE)


def fake_median_us(config_key: str, tokens: int, scale: float = 1.0) -> float:
    """The FakeClock median of a config at T: deterministic in (config_key, T), never a claim."""
    u = int(hashlib.sha256(f"{config_key}:{tokens}".encode()).hexdigest()[:8], 16) / 2**32
    return scale * (FAKE_BASE_US + FAKE_PER_TOKEN_US * tokens) * (0.7 + 0.6 * u)


def fake_seed(config_key: str, tokens: int) -> int:
    return int(hashlib.sha256(f"seed:{config_key}:{tokens}".encode()).hexdigest()[:8], 16)


def _median_us(step: Callable[[int], object], iters: int, device: Any) -> float:
    """Median CUDA-event time (us) of `step` on `device` (a torch.device), after FLOOR_WARMUP calls."""
    from statistics import median

    from mxmoe.tuning.timing.clocks import CudaEventClock

    clock = CudaEventClock(device.index)
    clock.time_batch(step, range(FLOOR_WARMUP))
    return median(clock.time_batch(step, range(iters)))


def _copy_us(device: Any) -> float:
    import torch

    src = torch.empty(COPY_BYTES, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    return _median_us(lambda i: dst.copy_(src), FLOOR_ITERS, src.device)


def _matmul_us(device: Any) -> float:
    import torch

    a = torch.randn(MATMUL_N, MATMUL_N, dtype=torch.bfloat16, device=device)
    b = torch.randn_like(a)
    return _median_us(lambda i: a @ b, FLOOR_ITERS, a.device)


def _fp8_matmul_us(device: Any) -> float | None:
    """The e4m3 x e4m3 -> bf16 `torch._scaled_mm` of `_matmul_us`'s size, timed the same way; None on a GPU
    without FP8 tensor cores or on any failure (an optional yardstick must never fail the sweep)."""
    import torch

    try:
        dev = torch.device(device)
        if not hasattr(torch, "_scaled_mm") or torch.cuda.get_device_capability(dev) < FP8_CAPABILITY:
            return None
        a = torch.randn(MATMUL_N, MATMUL_N, dtype=torch.bfloat16, device=dev).to(torch.float8_e4m3fn)
        b = torch.randn(MATMUL_N, MATMUL_N, dtype=torch.bfloat16, device=dev).to(torch.float8_e4m3fn)  # [N, K]
        bt, one = b.t(), torch.tensor(1.0, device=dev)  # _scaled_mm takes its second operand column-major
        return _median_us(lambda i: torch._scaled_mm(a, bt, scale_a=one, scale_b=one, out_dtype=torch.bfloat16),
                          FLOOR_ITERS, a.device)
    except Exception:
        return None


def _matmul_rate(us: float) -> float:
    return 2.0 * MATMUL_N**3 / (us * 1e-6)


def measure_floors(*, interpreter: bool, device: Any = "cuda") -> Floors:
    """Copy bandwidth, bf16 and (where the GPU has FP8 tensor cores) e4m3 matmul rates of this GPU, measured now;
    NOMINAL_FLOORS on the interpreter."""
    if interpreter:
        return NOMINAL_FLOORS
    copy_us, mm_us, fp8_us = _copy_us(device), _matmul_us(device), _fp8_matmul_us(device)
    return Floors(2 * COPY_BYTES / (copy_us * 1e-6), _matmul_rate(mm_us), "measured",
                  None if fp8_us is None else _matmul_rate(fp8_us))


@dataclass(frozen=True, slots=True)
class Roofline:
    memory_floor_us: float
    compute_floor_us: float
    fraction: float
    tflops: float


def roofline(shape: MoEShape, path: Path | str, tokens: int, experts_hit: int, time_us: float,
             floors: Floors) -> Roofline:
    """The layer's floors and the fraction of them a time reaches (spec.py's formulas)."""
    mem = memory_floor_us(layer_bytes(shape, Path(path), tokens, experts_hit), floors.bandwidth)
    comp = compute_floor_us(flops(shape, tokens), floors.rate)
    return Roofline(mem, comp, roofline_fraction(time_us, mem, comp), flops(shape, tokens) / (time_us * 1e-6) / 1e12)


@dataclass(frozen=True, slots=True)
class BenchRow:
    """One T of `mxmoe bench`; times are medians in microseconds."""

    model: str
    path: str
    routing: str
    tokens: int
    config_key: str
    config: str
    layer_us: float
    layer_p95_us: float
    layer_ci_lo_us: float
    layer_ci_hi_us: float
    stage1_us: float
    stage2_us: float
    routing_us: float
    experts_hit: int
    memory_floor_us: float
    compute_floor_us: float
    roofline_fraction: float
    tflops: float
    mfu: float | None
    bandwidth: float
    rate: float
    floors_source: str
    clock: str
    mode: str
    l2: str
    claimable: bool
    checks: str
    device: str
    torch_version: str | None
    triton_version: str | None
    mxmoe_version: str | None
    git_commit: str | None
    git_dirty: bool | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_versions() -> dict[str, Any]:
    """The version columns every bench-style CSV row carries (benchmarks/scan_splitk.py too)."""
    import torch

    from mxmoe._version import __version__
    from mxmoe.tuning.timing.provenance import git_info

    git = git_info()
    try:
        triton_version = importlib.metadata.version("triton")
    except importlib.metadata.PackageNotFoundError:
        triton_version = None
    return {"torch_version": str(torch.__version__), "triton_version": triton_version, "mxmoe_version": __version__,
            "git_commit": git.commit, "git_dirty": git.dirty}


Timer = Callable[[Callable[[], object], str, int, float], Any]


def layer_settings(interpreter: bool, overrides: Mapping[str, Any] | None = None) -> Any:
    """The MeasureSettings a layer (or a stage) is timed with, by the sweep's worker, `mxmoe bench`, `mxmoe noise`
    and the scans alike: graph replay with an L2 flush; on the interpreter, FAKE_MEASURE's few samples; then
    `overrides` (MeasureSettings fields, e.g. a benchmark's max_time_s)."""
    from mxmoe.tuning.timing.measurement import L2Policy, MeasureSettings, TimingMode

    fake = FAKE_MEASURE if interpreter else {}
    return MeasureSettings(mode=TimingMode.GRAPH, l2=L2Policy.FLUSH, **{**fake, **(overrides or {})})


def fake_clock(key: str, t: int, scale: float = 1.0) -> Any:
    """The interpreter's FakeClock for (config key, T): deterministic samples around `fake_median_us`."""
    from mxmoe.tuning.timing.clocks import FakeClock

    return FakeClock(fake_median_us(key, t, scale), 0.02, seed=fake_seed(key, t), execute=False)


def layer_timer(interpreter: bool, overrides: Mapping[str, Any] | None = None, idle: Any = None) -> Timer:
    """time(fn, config_key, T, scale) -> Measurement: graph replay with an L2 flush on a GPU; on the
    interpreter fn runs once for real and a FakeClock makes the samples. Shared with the benchmarks' scans,
    so every timing script measures as `mxmoe bench` does. `overrides`: see `layer_settings`; `idle`: the idle
    check taken before this process loaded the GPU (measure() takes its own when None)."""
    from mxmoe.tuning.timing.measure import measure

    settings = layer_settings(interpreter, overrides)

    def time_it(fn: Callable[[], object], key: str, t: int, scale: float) -> Any:
        if not interpreter:
            return measure(fn, settings, idle=idle)
        fn()
        return measure(fn, settings, clock=fake_clock(key, t, scale), idle=idle)

    return time_it


@dataclass(frozen=True, slots=True)
class _Point:
    """What one T's bench needs besides the timer: the run's floors, device and versions."""

    shape: MoEShape
    path: Path
    routing: str
    seed: int
    device: str
    device_name: str
    floors: Floors
    versions: Mapping[str, Any]


def _bench_point(pt: _Point, t: int, time_it: Timer) -> BenchRow:
    from mxmoe.dispatch import choose_config
    from mxmoe.layer_plan import layer_plan
    from mxmoe.moe import moe
    from mxmoe.problem import make_problem
    from mxmoe.routing import experts_hit
    from mxmoe.space import takes_e4m3

    shape, path = pt.shape, pt.path
    p = make_problem(shape, path, t, seed=pt.seed, routing=pt.routing, device=pt.device)
    if takes_e4m3(path):  # the table may have picked an e4m3 tile
        p = dataclasses.replace(p, weights=p.weights.with_e4m3())
    cfg = choose_config(shape, path, t, e4m3=p.weights.e4m3)
    key, e = cfg.key(), shape.experts
    lp = layer_plan(shape, path, cfg, t)  # each stage as moe() launches it; replayed, so no single-use counters
    x = lp.quantize(p.hidden)
    plan1, plan2 = lp.route(p.topk_ids, validate=True, counters=False)
    h = lp.stage1(x, p.weights, plan1)
    layer = time_it(lambda: moe(p.hidden, p.weights, p.topk_ids, p.topk_weights, path, cfg, validate=False),
                    key, t, 1.0)
    s1 = time_it(lambda: lp.stage1(x, p.weights, plan1), key, t, 0.6)
    s2 = time_it(lambda: lp.stage2(h, p.weights, plan1, plan2, p.topk_weights), key, t, 0.35)
    rt = time_it(lambda: lp.route(p.topk_ids), key, t, 0.05)
    hit = experts_hit(p.topk_ids, e)
    lt = layer.timing
    roof = roofline(shape, path, t, hit, lt.median_us, pt.floors)
    peak = vendor_peak(pt.device_name)
    return BenchRow(
        model=shape.name, path=path.value, routing=pt.routing, tokens=t, config_key=key,
        config=f"{cfg.stage1.short()}|{cfg.stage2.short()}", layer_us=lt.median_us,
        layer_p95_us=lt.p95_us, layer_ci_lo_us=lt.ci_lo_us, layer_ci_hi_us=lt.ci_hi_us,
        stage1_us=s1.timing.median_us, stage2_us=s2.timing.median_us, routing_us=rt.timing.median_us, experts_hit=hit,
        memory_floor_us=roof.memory_floor_us, compute_floor_us=roof.compute_floor_us,
        roofline_fraction=roof.fraction, tflops=roof.tflops,
        mfu=None if peak is None else mfu(flops(shape, t), lt.median_us, peak),
        bandwidth=pt.floors.bandwidth, rate=pt.floors.rate, floors_source=pt.floors.source, clock=layer.clock,
        mode=layer.mode.value, l2=layer.l2.value, claimable=layer.claimable, checks=",".join(layer.checks),
        device=pt.device_name, **pt.versions,
    )


def run_bench(
    shape: MoEShape,
    path: Path | str,
    tokens: Iterable[int],
    *,
    interpreter: bool,
    routing: str = "uniform",
    seed: int = 0,
    overrides: Mapping[str, Any] | None = None,
    on_row: Callable[[BenchRow], None] | None = None,
) -> list[BenchRow]:
    """Time the layer moe() would launch (dispatch's choice) at each T, its stages and the routing alone.

    Layer and stages are CUDA-graph replays with an L2 flush before each; the floors are measured
    once, here, after the idle check. The caller sets TRITON_INTERPRET before kernels are imported.
    `overrides`: MeasureSettings fields over `layer_settings` (e.g. max_time_s, min_iters).
    """
    import torch

    from mxmoe.tuning.timing.measure import idle_before

    idle = None if interpreter else idle_before()  # before this process loads the GPU
    pt = _Point(shape, Path(path), str(routing), seed, "cpu" if interpreter else "cuda",
                "interpreter" if interpreter else torch.cuda.get_device_name(),
                measure_floors(interpreter=interpreter), run_versions())
    time_it, rows = layer_timer(interpreter, overrides, idle), []
    for t in tokens:
        rows.append(_bench_point(pt, t, time_it))
        if on_row is not None:
            on_row(rows[-1])
    return rows


def write_csv(rows: Sequence[BenchRow], dest: str | os.PathLike[str], *, append: bool = True) -> int:
    """Append (or write) rows with a header when the file is new; returns the row count."""
    names = [f.name for f in fields(BenchRow)]
    new = not os.path.exists(dest) or not append
    with open(dest, "a" if append else "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=names)
        if new:
            writer.writeheader()
        writer.writerows(r.to_dict() for r in rows)
    return len(rows)


def read_csv_rows(src: str | os.PathLike[str]) -> list[dict[str, str]]:
    """The rows of a bench CSV, as strings (for reports and tests)."""
    with open(src, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))
