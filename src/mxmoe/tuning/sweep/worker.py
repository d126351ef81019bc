"""The sweep's measuring worker: a spawn process that owns one GPU (or the interpreter) and runs trials.

torch-free at import: the driver imports this module only to name `serve` as the process target;
torch, triton and CUDA load in the child alone.

The messages and the records they carry (WorkerConfig, WorkerInfo, Job, TrialResult) are protocol.py's, which
both sides import: this module never imports the driver. Each phase message restarts the driver's per-candidate
timer, so the timeout bounds one phase (the first candidate at a new T also builds the Problem and its reference).
A result with restart=True (a CUDA error that poisons the context) is the worker's last message: it exits and the
driver starts a fresh one. stdout and stderr go to a file the driver names, and faulthandler writes a
segfault's stack there, so a crash is recorded with its tail.

Compiles: Triton compiles on a config's first launch, inside the worker; the first call's wall time
is recorded apart as `first_call_ms` (compile + one run, or one run when Triton's disk cache hit),
and it is never in the samples. On the interpreter there is nothing to compile.

A trial (`TrialRunner`): build the Problem (cached per T), first call, correctness under uniform,
sentinel_padding and few_active routing with NaN-poisoned outputs, then timing. Fault injection
for tests: MXMOE_TEST_FAULT="kind:target[,kind:target]" with target a MoEConfig key or "*"; kinds in
FAULT_KINDS. It is recorded in every row's provenance env (MXMOE_ variables are), so a faulted row
is never mistaken for a real one.
"""

from __future__ import annotations

import faulthandler
import os
import threading
import time
import traceback
from collections.abc import Mapping
from typing import Any

from mxmoe.tuning.sweep.protocol import PROTOCOL_VERSION, Job, TrialResult, WorkerConfig, WorkerInfo

FAULT_ENV = "MXMOE_TEST_FAULT"
FAULT_DIR_ENV = "MXMOE_TEST_FAULT_DIR"
# segfault / segfault_once / hang: at job start; compile: the first call raises ValueError (as a
# launch wrapper refusing a config does); launch: it raises RuntimeError; cuda_fatal: it raises a
# CUDA illegal-address error (the worker restarts); wrong: the checked output is off by one.
FAULT_KINDS = ("segfault", "segfault_once", "hang", "compile", "launch", "cuda_fatal", "wrong")
_PARENT_POLL_S = 0.5
# Messages that mean the CUDA context is gone: the process must not run another candidate.
CUDA_FATAL_MARKERS = ("illegal memory access", "illegal address", "unspecified launch failure",
                      "misaligned address", "device-side assert", "an illegal instruction")


def parse_faults(spec: str | None) -> dict[str, frozenset[str]]:
    """`"hang:ab12,wrong:*"` -> {"ab12": {"hang"}, "*": {"wrong"}}; a bad entry is a ValueError."""
    out: dict[str, set[str]] = {}
    for item in (spec or "").split(","):
        if not item.strip():
            continue
        kind, sep, target = item.strip().partition(":")
        if not sep or kind not in FAULT_KINDS or not target:
            raise ValueError(f"{FAULT_ENV} entry {item!r}: expected kind:target, kind in {FAULT_KINDS}")
        out.setdefault(target, set()).add(kind)
    return {k: frozenset(v) for k, v in out.items()}


def faults_for(config_key: str, environ: Mapping[str, str] | None = None) -> frozenset[str]:
    """The injected faults that apply to one config (empty unless a test set MXMOE_TEST_FAULT)."""
    table = parse_faults((os.environ if environ is None else environ).get(FAULT_ENV))
    return table.get(config_key, frozenset()) | table.get("*", frozenset())


def start_faults(config_key: str, faults: frozenset[str]) -> None:
    """Faults that strike before any work: a segfault (once: only the first worker that meets it) or a hang."""
    if "segfault_once" in faults:
        folder = os.environ.get(FAULT_DIR_ENV)
        if not folder:
            raise ValueError(f"segfault_once needs {FAULT_DIR_ENV} (a folder to remember it struck)")
        marker = os.path.join(folder, f"segfault_once-{config_key}")
        if not os.path.exists(marker):
            open(marker, "w").close()
            faults = faults | {"segfault"}
    if "segfault" in faults:
        import signal

        os.kill(os.getpid(), signal.SIGSEGV)
    if "hang" in faults:
        while True:
            time.sleep(60)


def is_cuda_fatal(exc: BaseException) -> bool:
    text = str(exc).lower()
    return any(m in text for m in CUDA_FATAL_MARKERS)


def error_detail(exc: BaseException, limit: int = 4000) -> str:
    """The exception's type and message, then the tail of its traceback."""
    tb = "".join(traceback.format_exception(exc))
    head = f"{type(exc).__name__}: {exc}"
    return (head + "\n" + tb[-(limit - len(head)):]) if len(tb) > limit else head + "\n" + tb


def _redirect_output(path: str) -> None:
    """Point fds 1 and 2 at `path`: the driver's terminal stays clean and a crash leaves its stack there."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    faulthandler.enable()


def _watch_parent(parent: int) -> None:
    """Exit when the driver is gone (e.g. kill -9): an orphan would hold the GPU, or hang forever."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(_PARENT_POLL_S)
        os._exit(1)

    threading.Thread(target=watch, name="mxmoe-parent-watch", daemon=True).start()


def serve(conn: Any, config: dict[str, Any], output_path: str, parent_pid: int) -> None:
    """The worker process's main: hello, then one result per job until "stop" or the pipe closes."""
    _redirect_output(output_path)
    _watch_parent(parent_pid)
    try:
        runner = TrialRunner.start(WorkerConfig.from_dict(config))
    except BaseException as exc:  # noqa: BLE001 - reported to the driver, which refuses to sweep
        conn.send({"op": "fatal", "error": error_detail(exc)})
        return
    conn.send({"op": "hello", "info": runner.info.to_dict(), "protocol": PROTOCOL_VERSION})
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg.get("op") == "stop":
            return
        job = Job.from_dict(msg["job"])

        def phase(name: str, key: str = job.key) -> None:
            conn.send({"op": "phase", "key": key, "phase": name})

        result = runner.run(job, phase)
        conn.send({"op": "result", "key": job.key, "result": result.to_dict()})
        if result.restart:
            os._exit(3)  # the CUDA context is unusable; atexit handlers could hang on it


# ---- the trial ------------------------------------------------------------------------------------

ROUTINGS_CHECKED = ("uniform", "sentinel_padding", "few_active")  # issue 13: padded slots must be skipped
STAGE_TIME_SCALE = {"layer": 1.0, "1": 0.6, "2": 0.35}  # fake-clock share of each timed piece
STAGE_FLOP_SHARE = {"layer": 1.0, "1": 2 / 3, "2": 1 / 3}  # stage 1: H x 2I per pair, stage 2: I x H
PATH_DTYPES = {"a16w4": ("bfloat16", "mxfp4_e2m1"), "a8w4": ("mxfp8_e4m3", "mxfp4_e2m1"),
               "a4w4": ("mxfp4_e2m1", "mxfp4_e2m1")}


def is_compile_error(exc: BaseException) -> bool:
    """A first call that failed before any kernel ran: Triton could not build the config, or a launch
    wrapper refused it (ValueError / TypeError naming the bad lever)."""
    from triton.compiler.errors import CompilationError
    from triton.runtime.errors import OutOfResources, PTXASError

    return isinstance(exc, CompilationError | OutOfResources | PTXASError | ValueError | TypeError |
                      NotImplementedError)


class TrialRunner:
    """A worker's state: device, floors, idle check, and the Problems of the current T (a sweep sends
    its jobs grouped by T, so each Problem and reference is built once)."""

    def __init__(self, config: WorkerConfig, info: WorkerInfo, device: str) -> None:
        from mxmoe.shapes import Path, get_shape

        self.config, self.info, self.device = config, info, device
        self.shape, self.path = get_shape(config.model), Path(config.path)
        self._problems: dict[tuple[int, str], tuple[Any, Any]] = {}

    @classmethod
    def start(cls, config: WorkerConfig) -> TrialRunner:
        import dataclasses
        import importlib.metadata

        import torch

        if not torch.cuda.is_available():
            os.environ["TRITON_INTERPRET"] = "1"  # before any kernel module is imported
        interpreter = os.environ.get("TRITON_INTERPRET") == "1"
        from mxmoe import legality
        from mxmoe.shapes import get_shape
        from mxmoe.source_hash import kernel_source_hash
        from mxmoe.tuning.timing.bench import measure_floors
        from mxmoe.tuning.timing.clocks import FakeClock
        from mxmoe.tuning.timing.gpu_state import CheckResult, read_gpu_state
        from mxmoe.tuning.timing.measure import idle_before, resolve_device
        from mxmoe.tuning.timing.provenance import collect_provenance

        clock = FakeClock() if interpreter else None
        idle = CheckResult.from_dict(config.idle) if config.idle else idle_before(clock=clock)  # before GPU work
        clock, nvml, index = resolve_device(clock, None, None)
        floors = config.floors or measure_floors(interpreter=interpreter).to_dict()
        gpu = None if interpreter or index is None else read_gpu_state(nvml, index)
        if interpreter:
            limits = legality.INTERPRETER
        else:
            props = torch.cuda.get_device_properties(torch.cuda.current_device())
            limits = legality.limits_from_properties(props.name, props.shared_memory_per_block_optin,
                                                     props.multi_processor_count)
        prov = collect_provenance(argv=config.argv, seeds=[config.seed], shapes=[get_shape(config.model)],
                                  dtypes=PATH_DTYPES[config.path], gpu_state=gpu)
        info = WorkerInfo(
            pid=os.getpid(), device="interpreter" if interpreter else torch.cuda.get_device_name(),
            device_uuid=clock.device_uuid(), interpreter=interpreter, kernel_hash=kernel_source_hash(),
            triton_version=importlib.metadata.version("triton"), floors=dict(floors), idle=idle.to_dict(),
            limits=dataclasses.asdict(limits),
            provenance=prov.to_dict(),
        )
        return cls(config, info, "cpu" if interpreter else "cuda")

    # ---- pieces -----------------------------------------------------------------------------------

    def _problem(self, tokens: int, routing: str) -> tuple[Any, Any]:
        """(Problem, reference) at (T, routing); all routings of one T share one set of weights."""
        import dataclasses

        from mxmoe.problem import make_problem
        from mxmoe.space import takes_e4m3

        if any(t != tokens for t, _ in self._problems):
            self._problems.clear()
        if (tokens, routing) not in self._problems:
            p = make_problem(self.shape, self.path, tokens, seed=self.config.seed, routing=routing,
                             device=self.device)
            if self._problems:  # same seed, same weights: keep one copy on the device
                p = dataclasses.replace(p, weights=next(iter(self._problems.values()))[0].weights)
            elif takes_e4m3(self.path):
                p = dataclasses.replace(p, weights=p.weights.with_e4m3())
            self._problems[(tokens, routing)] = (p, p.reference())
        return self._problems[(tokens, routing)]

    def _sync(self) -> None:
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()

    def _check(self, job: Job, cfg: Any, faults: frozenset[str], first_out: Any) -> str | None:
        """None when correct; else the CloseReport message of the first failing run (later runs skipped)."""
        from mxmoe.tolerance import compare, lookup

        tol = lookup(self.path, "layer")
        runs: list[tuple[str, str, Any]] = [("moe()", job.routing, lambda: first_out)]
        for routing in dict.fromkeys((job.routing, *ROUTINGS_CHECKED)):
            runs.append(("poisoned", routing, lambda r=routing: _poisoned_layer(self._problem(job.tokens, r)[0], cfg)))
        for name, routing, run in runs:
            out = run().float()
            if "wrong" in faults:
                out = out + 1.0
            ref = self._problem(job.tokens, routing)[1]
            report = compare(out, ref, tol, name=f"{name} T={job.tokens} {routing}")
            if not report.ok:
                return report.message
        return None

    def _timed_fn(self, job: Job, cfg: Any, p: Any) -> Any:
        """The callable the job times: moe() for the layer, else one stage exactly as moe() launches it (the layer
        plan's pieces), routed without the single-use counters so every replay zeroes its own."""
        from mxmoe.layer_plan import layer_plan
        from mxmoe.moe import moe

        if job.stage == "layer":
            return lambda: moe(p.hidden, p.weights, p.topk_ids, p.topk_weights, p.path, cfg, validate=False)
        lp = layer_plan(p.shape, p.path, cfg, p.tokens)
        x = lp.quantize(p.hidden)
        plan1, plan2 = lp.route(p.topk_ids, counters=False)
        if job.stage == "1":
            return lambda: lp.stage1(x, p.weights, plan1)
        h = lp.stage1(x, p.weights, plan1)
        return lambda: lp.stage2(h, p.weights, plan1, plan2, p.topk_weights)

    def _measure(self, job: Job, fn: Any) -> Any:
        from mxmoe.tuning.timing.bench import fake_clock, layer_settings
        from mxmoe.tuning.timing.gpu_state import CheckResult
        from mxmoe.tuning.timing.measure import measure

        interp = self.info.interpreter
        clock = fake_clock(job.config_key, job.tokens, STAGE_TIME_SCALE[job.stage]) if interp else None
        return measure(fn, layer_settings(interp), clock=clock, idle=CheckResult.from_dict(self.info.idle))

    def _measured(self, job: Job, m: Any, first_call_ms: float) -> TrialResult:
        from mxmoe.routing import experts_hit
        from mxmoe.spec import flops
        from mxmoe.tuning.timing.bench import Floors, roofline
        from mxmoe.tuning.timing.provenance import collect_provenance, provenance_checks

        gpu = m.gpu_before if m.gpu_before.available else None
        prov = collect_provenance(argv=self.config.argv, seeds=[self.config.seed], shapes=[self.shape],
                                  dtypes=PATH_DTYPES[self.path.value], gpu_state=gpu)
        p, _ = self._problem(job.tokens, job.routing)
        hit = experts_hit(p.topk_ids, self.shape.experts)
        floors = Floors.from_dict(self.info.floors)
        roof = None
        if job.stage == "layer":
            roof = roofline(self.shape, self.path, job.tokens, hit, m.timing.median_us, floors).fraction
        measurement = m.to_dict()
        measurement.pop("samples_us")
        d = prov.to_dict() | {
            "mode": m.mode.value, "l2": m.l2.value, "ci_level": m.ci_level, "percentile_method": m.percentile_method,
            "first_call_ms": first_call_ms, "floors": floors.to_dict(), "experts_hit": hit,
            "measurement": measurement,
        }
        reasons = [*m.checks, *provenance_checks(prov)]
        if self.info.interpreter:
            reasons.append("interpreter")
        if floors.source != "measured":
            reasons.append(f"floors:{floors.source}")
        return TrialResult(
            "measured", timing=m.timing, tflops=flops(self.shape, job.tokens) * STAGE_FLOP_SHARE[job.stage]
            / (m.timing.median_us * 1e-6) / 1e12, roofline_fraction=roof,
            nonclaimable_reasons=tuple(dict.fromkeys(reasons)), provenance=d, device_uuid=self.info.device_uuid,
        )

    def _fail(self, status: str, exc: BaseException) -> TrialResult:
        return TrialResult(status, detail=error_detail(exc), provenance=self.info.provenance,
                           device_uuid=self.info.device_uuid, restart=is_cuda_fatal(exc))

    # ---- one job ------------------------------------------------------------------------------------

    def run(self, job: Job, phase: Any) -> TrialResult:
        """prepare -> compile (first call) -> check -> time; any failure ends the trial with its status."""
        from mxmoe.config import MoEConfig

        faults = faults_for(job.config_key)
        start_faults(job.config_key, faults)
        cfg = MoEConfig.from_dict(job.config)
        phase("prepare")
        try:
            p, _ = self._problem(job.tokens, job.routing)
        except Exception as exc:  # noqa: BLE001 - not the candidate's fault: recorded as unmeasured
            return self._fail("unmeasured:problem", exc)
        phase("compile")
        try:
            t0 = time.perf_counter()
            if faults & {"compile", "launch", "cuda_fatal"}:
                _raise_injected(faults)
            from mxmoe.moe import moe

            out = moe(p.hidden, p.weights, p.topk_ids, p.topk_weights, p.path, cfg)
            self._sync()
            first_call_ms = (time.perf_counter() - t0) * 1e3
        except Exception as exc:  # noqa: BLE001 - every failure becomes a row
            return self._fail("compile_error" if is_compile_error(exc) else "launch_error", exc)
        phase("check")
        try:
            bad = self._check(job, cfg, faults, out)
        except Exception as exc:  # noqa: BLE001
            return self._fail("launch_error", exc)
        if bad is not None:
            return TrialResult("incorrect", detail=bad, provenance=self.info.provenance,
                               device_uuid=self.info.device_uuid)
        phase("time")
        try:
            m = self._measure(job, self._timed_fn(job, cfg, p))
            return self._measured(job, m, first_call_ms)
        except Exception as exc:  # noqa: BLE001
            return self._fail("launch_error", exc)


def _raise_injected(faults: frozenset[str]) -> None:
    if "compile" in faults:
        raise ValueError(f"injected compile fault ({FAULT_ENV})")
    if "cuda_fatal" in faults:
        raise RuntimeError(f"CUDA error: an illegal memory access was encountered (injected by {FAULT_ENV})")
    raise RuntimeError(f"injected launch fault ({FAULT_ENV})")


def _poisoned_layer(p: Any, cfg: Any) -> Any:
    """moe() on `p` with its intermediate and combine buffers NaN-filled first: a tile the kernels skip cannot
    pass on an old answer."""
    from mxmoe.moe import moe

    return moe(p.hidden, p.weights, p.topk_ids, p.topk_weights, p.path, cfg, poison=True)
