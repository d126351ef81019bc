"""measure() on a real GPU: CUDA events, graph replay, L2 defeat, NVML, and do_bench agreement.

Oracle: triton.testing.do_bench (events + 256 MB L2 clear, median) on a fixed 4096^3 bf16 matmul,
within 3%; torch.cuda._sleep's cycle count (2x the cycles, 2x the time, within 10%); and the L2
itself (a buffer that fits in L2 reads faster hot than rotated or flushed). Seen on one H100 80GB
HBM3 (2026-11-25): matmul 190.6 us vs do_bench 190.4 us; 16 MB sum hot 11.7, rotated 14.6, flushed
16.9 us, and 27.5 us with gpu_lead=False (the host's 16 us launch cost leaks into the events).
Skipped without CUDA.
"""

import os
import statistics

import pytest
import torch

from mxmoe.tuning.timing.clocks import CudaEventClock
from mxmoe.tuning.timing.gpu_state import Check, process_check, read_gpu_state
from mxmoe.tuning.timing.measure import (
    L2Policy,
    MeasureSettings,
    TimingMode,
    idle_before,
    measure,
    resolve_device,
    rotation_copies,
)

pytestmark = pytest.mark.gpu

QUICK = {"warmup_s": 0.05, "max_time_s": 1.0, "idle_sample_s": 0.0}


def quick(**kw) -> MeasureSettings:
    """Settings short enough for a test on the GPU, plus `kw`."""
    return MeasureSettings(**{**QUICK, **kw})


@pytest.fixture(scope="module", autouse=True)
def idle():
    """One idle check before this module loads the GPU (NVML's utilisation counts our kernels). Timing
    comparisons made beside other work judge the neighbours, not measure(): on a busy GPU (pytest-xdist
    workers, another job) the module is skipped, and benchmarks/gpu_pass.sh runs it alone after the rest."""
    check = idle_before(idle_sample_s=1.0)
    if not check.ok:
        pytest.skip(f"the GPU is not idle ({check.detail}): run this module alone, without xdist")
    return check


def test_events_scale_with_known_gpu_work():
    clock = CudaEventClock()
    torch.cuda._sleep(1000)  # init
    one = statistics.median(clock.time_batch(lambda i: torch.cuda._sleep(500_000), range(20)))
    two = statistics.median(clock.time_batch(lambda i: torch.cuda._sleep(1_000_000), range(20)))
    assert one > 50.0  # 500k cycles at <= 2 GHz is >= 250 us
    assert two / one == pytest.approx(2.0, rel=0.1)


def test_eager_measurement_on_the_gpu_reads_nvml(idle):
    a = torch.randn(1024, 1024, device="cuda", dtype=torch.bfloat16)
    m = measure(lambda: a @ a, quick(), idle=idle)
    assert m.mode is TimingMode.EAGER and m.clock == "cuda_event" and m.timing.n == len(m.timing.samples_us)
    assert 0 < m.timing.ci_lo_us <= m.timing.median_us <= m.timing.ci_hi_us
    assert Check.FAKE_CLOCK.value not in m.checks and Check.NVML_UNAVAILABLE.value not in m.checks
    assert m.gpu_before.available and m.gpu_before.name and m.gpu_before.sm_clock_mhz > 0
    assert m.l2_bytes and m.l2_bytes >= 40 * 2**20
    print("eager 1024^3 bf16:", m.timing.median_us, "us; checks:", m.checks, m.check_detail)


def test_graph_mode_replays_the_captured_work(idle):
    x = torch.zeros(1 << 20, device="cuda")
    eager = measure(lambda: x.add_(1.0), quick(l2="none"), idle=idle)
    x.zero_()
    m = measure(lambda: x.add_(1.0), quick(mode="graph", l2="none"), idle=idle)
    torch.cuda.synchronize()
    assert m.mode is TimingMode.GRAPH
    assert x[0].item() >= m.timing.n  # every timed replay really ran the add
    assert m.timing.median_us < 1.5 * eager.timing.median_us
    print(f"add_ 4 MB: eager {eager.timing.median_us:.2f} us, graph {m.timing.median_us:.2f} us")


def test_agrees_with_triton_do_bench_on_a_4096_cube_bf16_matmul(idle):
    triton_testing = pytest.importorskip("triton.testing")
    g = torch.Generator(device="cuda").manual_seed(0)
    a = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16, generator=g)
    b = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16, generator=g)
    ours, theirs = [], []
    for _ in range(5):  # interleaved, so a clock or temperature drift hits both sides alike
        theirs.append(1000.0 * triton_testing.do_bench(lambda: a @ b, warmup=50, rep=300, return_mode="median"))
        ours.append(measure(lambda: a @ b, quick(l2="flush"), idle=idle).timing.median_us)
    print(f"4096^3 bf16 matmul: measure {ours} us, do_bench {theirs} us")
    assert statistics.median(ours) == pytest.approx(statistics.median(theirs), rel=0.03)


def test_rotation_and_flush_defeat_l2_on_a_small_buffer(idle):
    nbytes = 16 * 2**20  # fits in the H100's 50 MB L2: hot repeats would read L2, not HBM
    n = nbytes // 4
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    sets = [(torch.randn(n, device="cuda"),) for _ in range(rotation_copies(nbytes, l2))]
    hot = measure(torch.sum, quick(l2="none"), rotate=sets[:1], idle=idle)
    rotated = measure(torch.sum, quick(l2="rotate", bytes_per_set=nbytes), rotate=sets, idle=idle)
    flushed = measure(torch.sum, quick(l2="flush"), rotate=sets[:1], idle=idle)
    starved = measure(torch.sum, quick(l2="none", gpu_lead=False), rotate=sets[:1], idle=idle)
    print(
        f"sum 16 MB: hot {hot.timing.median_us:.2f}, rotated {rotated.timing.median_us:.2f}, "
        f"flushed {flushed.timing.median_us:.2f}, hot without GPU lead {starved.timing.median_us:.2f} us; "
        f"host {hot.host_us:.1f} us/iter, lead {hot.lead_us:.1f} us"
    )
    assert rotated.l2 is L2Policy.ROTATE and Check.L2_ROTATION_SHORT.value not in rotated.checks
    assert rotated.timing.median_us > 1.15 * hot.timing.median_us
    assert flushed.timing.median_us > 1.15 * hot.timing.median_us


def test_real_nvml_state_and_our_own_process():
    torch.zeros(1, device="cuda")  # hold a CUDA context, so NVML lists this process
    _, nvml, index = resolve_device(None, None, None)  # CUDA_VISIBLE_DEVICES renumbers: find ours by UUID
    state = read_gpu_state(nvml, index)
    assert state.available and state.uuid and state.driver_version
    assert state.sm_clock_mhz and state.sm_clock_max_mhz and state.memory_total_bytes
    print("pid", os.getpid(), "NVML compute pids", state.compute_pids, "events", state.clock_events)
    print("clocks locked:", state.clocks_locked, "app", state.sm_clock_app_mhz, "now", state.sm_clock_mhz)
    assert process_check(state).ok, process_check(state).detail


def _layer(model: str, tokens: int):
    """The heuristic layer as moe() runs it, capturable (validate=False), and its weights' bytes."""
    from mxmoe.dispatch import choose_config
    from mxmoe.moe import moe
    from mxmoe.problem import make_problem
    from mxmoe.shapes import Path, get_shape

    shape = get_shape(model)
    p = make_problem(shape, Path.A16W4, tokens, seed=1, device="cuda")
    cfg = choose_config(shape, Path.A16W4, tokens)
    w = p.weights
    nbytes = sum(t.numel() * t.element_size() for t in (w.w13.data, w.w13.scales, w.w2.data, w.w2.scales))

    def run(weights=p.weights):
        return moe(p.hidden, weights, p.topk_ids, p.topk_weights, Path.A16W4, cfg, validate=False)

    return p, run, nbytes


def test_agrees_with_do_bench_and_do_bench_cudagraph_on_the_moe_layer(idle):
    """The layer (routing kernel + two stages, several launches) at a T where it runs ~1.4 ms: eager with the L2
    flushed against do_bench, graph replay without a flush against do_bench_cudagraph; both within 3%."""
    triton_testing = pytest.importorskip("triton.testing")
    _, run, _ = _layer("gpt-oss-20b", 1024)
    eager, graph, bench, bench_graph = [], [], [], []
    for _ in range(3):
        bench.append(1000.0 * triton_testing.do_bench(run, warmup=50, rep=300, return_mode="median"))
        eager.append(measure(run, quick(l2="flush"), idle=idle).timing.median_us)
        bench_graph.append(1000.0 * triton_testing.do_bench_cudagraph(run, rep=300, return_mode="median"))
        graph.append(measure(run, quick(mode="graph", l2="none"), idle=idle).timing.median_us)
    print(f"gpt-oss-20b T=1024 layer: eager {eager} vs do_bench {bench}; graph {graph} vs cudagraph {bench_graph}")
    assert statistics.median(eager) == pytest.approx(statistics.median(bench), rel=0.03)
    assert statistics.median(graph) == pytest.approx(statistics.median(bench_graph), rel=0.03)


def test_l2_effect_on_a_decode_layer_whose_weights_fit_in_l2(idle):
    """8 experts of H=2048, I=1024 (25 MB of MXFP4 weights, under the 50 MB L2) at T=1: replaying hot reads the 2
    hit experts' 6.3 MB from L2; rotating weight copies past L2, or flushing it, reads them from HBM, which must
    show beyond both confidence intervals. The rotation counts the bytes a call reads (the 2 hit experts): sized
    on all 25 MB, the H100 (2026-11-25) kept 5 copies' hit experts (32 MB) in L2 and measured 36.29 us rotated
    against 35.63 hot and 38.21 flushed."""
    from mxmoe.weights import MoEWeights

    p, run, nbytes = _layer("8,2,2048,1024", 1)
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    read = nbytes * p.shape.topk // p.shape.experts  # T=1: one token, topk distinct experts
    copies = [(MoEWeights.random(p.shape, seed=i, device="cuda"),) for i in range(rotation_copies(read, l2))]
    hot = measure(run, quick(mode="graph", l2="none"), rotate=copies[:1], idle=idle)
    rotated = measure(run, quick(mode="graph", l2="rotate", bytes_per_set=read), rotate=copies, idle=idle)
    flushed = measure(run, quick(mode="graph", l2="flush"), rotate=copies[:1], idle=idle)
    print(f"decode layer, weights {nbytes / 2**20:.1f} MiB: hot {hot.timing.median_us:.2f}, rotated "
          f"{rotated.timing.median_us:.2f} ({len(copies)} copies), flushed {flushed.timing.median_us:.2f} us")
    assert Check.L2_ROTATION_SHORT.value not in rotated.checks
    for cold in (rotated, flushed):
        assert cold.timing.ci_lo_us > hot.timing.ci_hi_us and cold.timing.median_us > 1.02 * hot.timing.median_us
