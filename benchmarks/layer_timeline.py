"""Kernel timeline of one layer inside CUDA-graph replays (L2 flushed before each), from CUPTI via torch.profiler.

    PYTHONPATH=src python3 benchmarks/layer_timeline.py deepseek-v3-tp8:1 deepseek-v3-tp8:1:a8w4

Why: with PDL the layer's kernels overlap, so per-kernel ncu times (serialized, each alone) do not add up to the
layer; the timeline shows where each kernel starts and ends inside the replay, and any kernel the layer launches
besides its own (a fill, a cast). Per point: each kernel of the replay after the flush, in launch order, with the
median start offset from the first kernel's start and the median duration (us). Needs a GPU.
"""

from __future__ import annotations

import collections
import statistics
import sys

import torch
from scan_v2 import FLUSH_BYTES, layer_call, point_problem

from mxmoe.heuristic import default_config

REPLAYS = 20


FLUSH_MIN_US = 20.0  # the 256 MiB flush's fill runs ~100 us; a fill the layer itself launches is far shorter


def _replay_groups(events) -> list[list]:
    """The CUDA kernel events split into replays: each replay starts after the flush's fill kernel (a fill inside
    the layer stays in its replay's group, so it shows in the timeline)."""
    groups: list[list] = []
    for e in sorted(events, key=lambda e: e.time_range.start):
        if "FillFunctor" in e.name and e.time_range.end - e.time_range.start > FLUSH_MIN_US:
            groups.append([])
        elif groups:
            groups[-1].append(e)
    return [g for g in groups if g]


def timeline(spec: str, flush: torch.Tensor) -> None:
    from torch.profiler import ProfilerActivity, profile

    from mxmoe.tuning.timing.clocks import CudaEventClock

    model, t, path, p = point_problem(spec)
    cfg = default_config(p.shape, path, t)
    replay = CudaEventClock().capture([layer_call(p, path, cfg)])[0]  # the harness clock's warm-up and capture
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(REPLAYS):
            flush.zero_()
            replay()
        torch.cuda.synchronize()
    cuda = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    groups = _replay_groups(cuda)[2:]  # the first replays warm the profiler
    starts, durs = collections.defaultdict(list), collections.defaultdict(list)
    for g in groups:
        t0 = g[0].time_range.start
        for i, e in enumerate(g):
            key = (i, e.name.split("(")[0][:60])
            starts[key].append(e.time_range.start - t0)
            durs[key].append(e.time_range.end - e.time_range.start)
    span = statistics.median(max(e.time_range.end for e in g) - g[0].time_range.start for g in groups)
    print(f"== {spec} {cfg.stage1.short()}|{cfg.stage2.short()}  span {span:.2f} us (median of {len(groups)})")
    for key in sorted(starts):
        print(f"   {key[0]:2d} {key[1]:60s} start {statistics.median(starts[key]):7.2f}  "
              f"dur {statistics.median(durs[key]):7.2f}")


def main(argv: list[str]) -> None:
    flush = torch.empty(FLUSH_BYTES, dtype=torch.uint8, device="cuda")
    for spec in argv:
        timeline(spec, flush)
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main(sys.argv[1:])
