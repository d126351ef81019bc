"""Is the direct decode's stage 1 bound by its DRAM access pattern? Reads the same bytes four ways and times each.

    PYTHONPATH=src python3 benchmarks/decode_pattern.py deepseek-v4-tp8:1 deepseek-v4-tp8:1:a16w4:nmajor \
        deepseek-v3-tp8:1 kimi-k2-tp8:1 --csv out/decode_pattern.csv

Why (issue 21's decode bar, deepseek-v4-tp8 T=1 at 30.6 us against 25): stage 1 alone reads its 26.5 MB of W13 at
about 1.7 TB/s (ncu, kernels/decode.py) against the H100's ~3.0 TB/s copy, and three earlier A/Bs rule out the
usual suspects: twice the warps an SM bought nothing (the one-chain stage 1, rules.py "Also dropped"), fewer decode
instructions made it slower (wtile.py), and an L2 prefetch of W2 during stage 1 slowed the layer by about W2's
transfer time (rules.py's prefetch note), as if DRAM were already saturated. That leaves the pattern itself: a
program (pair, n tile, K split) reads per K step four 2 KB runs of the layout (gate and up, two k64 blocks each)
at a 32 KB stride, 392 programs at once. Each variant here runs stage 1's grid with no decode and no MMA, every
K step's loads issued before any is used (so bytes in flight are at least stage 1's):
  - `layout`:  stage 1's own addresses (`wtile.tile_bytes` of the gate and up tiles of each K step), scales too;
  - `values`:  the same without the scale loads;
  - `contig`:  the same number of bytes a program, but one contiguous run of its expert's bytes;
  - `nmajor`:  `layout`'s reads at the addresses of the N-major copies (`tile_bytes`' NMAJ; a row slab's K range
               contiguous: one 8 KB run a slab over the split instead of 2 KB runs a K step), over this buffer's
               blocks permuted: the same bytes, the pattern of `MoEWeights.with_decode_layout()`;
  - `copy`:    torch's copy of as many bytes (reads and writes; GB/s counts both);
  - `stage1`:  the real direct stage 1 (`decode.direct_stage1`) of the point's default config;
  - `stage2`:  the real direct stage 2 alone on stage 1's output, its W2 bytes against its time (with the GPU to
               itself, unlike in the layer, where two thirds of its programs wait for stage 1's SMs; its arrival
               counters are zeroed by a small fill kernel inside the timing, as for a stage replayed alone).
If `layout` runs near `nmajor` / `contig` and all near the copy, the pattern is not the limit and the kernel's own
schedule is; if `layout` is well below them, the N-major copies are the lever (rules.DIRECT1_N_MAJOR; the points
with `:nmajor` time the real stages on them). Graph replay, L2 flushed before each replay
(scan_v2.graph_median_us). Prints; never asserts. Needs a GPU.
"""

from __future__ import annotations

import argparse
import sys

import torch
import triton
import triton.language as tl

from mxmoe.heuristic import default_config
from mxmoe.kernels.common import KernelInput, k_range
from mxmoe.kernels.decode import _pair_expert, direct_plan, direct_stage1, direct_stage2
from mxmoe.kernels.wtile import tile_bytes

LAYOUT, VALUES, CONTIG, NMAJOR = 0, 1, 2, 3  # the read kernel's ORDER
# Registers of the read kernel: three programs an SM, as the direct stage 1's grid runs (sm_90 CPU compile at the
# deepseek-v4-tp8 T=1 tile, BN 64 BK 128 w4, 8 K steps: uncapped `layout` takes 185 registers, two programs an SM;
# capped at 168 none spills, and `values` / `contig` then keep more loads in flight, 146 / 144 against 108 / 122).
_MAXNREG = 168
_VALUES_C, _CONTIG_C, _NMAJOR_C = tl.constexpr(VALUES), tl.constexpr(CONTIG), tl.constexpr(NMAJOR)


@triton.jit
def _read_kernel(w_ptr, s_ptr, ids_ptr, out_ptr, E, H, I, N16, K64, stride_we, stride_wse,
                 TOPK: tl.constexpr, ORDER: tl.constexpr, SPLIT_K: tl.constexpr, STEPS: tl.constexpr,
                 BN: tl.constexpr, BK: tl.constexpr):
    """Program (pair, n tile) x split reads what `_direct1_kernel`'s program reads (LAYOUT; VALUES without the
    scales), as many bytes in one run (CONTIG), or its reads at the N-major copy's addresses (NMAJOR), and stores one
    xor of them (so no load is dead)."""
    num_n = tl.cdiv(I, BN)
    pair = tl.program_id(0) // num_n
    pid_n = tl.program_id(0) % num_n
    pid_k = tl.program_id(1)
    expert, _ = _pair_expert(ids_ptr, pair, E)  # the real kernel's read of the pair's expert
    w_e = w_ptr + expert * stride_we
    ws_e = s_ptr + expert * stride_wse
    NB: tl.constexpr = BN // 16
    R: tl.constexpr = BK // 64 * NB * 32
    k_first, k_len = k_range(pid_k, H, SPLIT_K, BK)  # the real kernel's split (the last may hold fewer steps)
    acc = tl.zeros([R, 16], tl.int32)
    side = tl.zeros([R, 4], tl.int32)
    for s in tl.static_range(STEPS):
        live = s * BK < k_len
        if ORDER == _CONTIG_C:  # per (n tile, k64 block) its gate then its up block, dense over the expert
            r = tl.arange(0, R)
            k64 = (k_first + s * BK) // 64 + r // (NB * 32)
            at = (pid_n * K64 + k64) * 2 * (NB * 512) + (r % (NB * 32)) * 16
            ok = (live & (k64 < K64))[:, None]
            g = tl.load(w_e + at[:, None] + tl.arange(0, 16)[None, :], mask=ok, other=0)
            u = tl.load(w_e + NB * 512 + at[:, None] + tl.arange(0, 16)[None, :], mask=ok, other=0)
            acc ^= g.to(tl.int32) ^ u.to(tl.int32)
        else:  # stage 1's own reads (tile_bytes), on the N-major copy's addresses with NMAJOR
            end = tl.where(live, I // 16, 0)
            k64_0 = (k_first + s * BK) // 64
            g, sg = tile_bytes(w_e, ws_e, pid_n * NB, end, k64_0, N16, K64, BN, BK, ORDER == _NMAJOR_C)
            u, su = tile_bytes(w_e, ws_e, (I + pid_n * BN) // 16, end + I // 16, k64_0, N16, K64, BN, BK,
                               ORDER == _NMAJOR_C)
            acc ^= g.to(tl.int32) ^ u.to(tl.int32)
            if ORDER != _VALUES_C:
                side ^= sg.to(tl.int32) ^ su.to(tl.int32)
    x = tl.xor_sum(tl.xor_sum(acc, axis=1), axis=0) ^ tl.xor_sum(tl.xor_sum(side, axis=1), axis=0)
    tl.store(out_ptr + tl.program_id(1) * tl.num_programs(0) + tl.program_id(0), x)


def _variants(p, cfg):
    """name -> (callable, bytes it reads)."""
    w, ids = p.weights.w13_sw, p.topk_ids.contiguous()
    i, h, pairs = p.weights.inter, p.weights.hidden, ids.numel()
    c = cfg.stage1
    num_n = triton.cdiv(i, c.block_n)
    steps = triton.cdiv(triton.cdiv(h, c.block_k), c.split_k)
    out = torch.empty(c.split_k * pairs * num_n, dtype=torch.int32, device=ids.device)
    value_bytes = pairs * 2 * i * w.k64 * 64 // 2  # the gate and up rows of each pair's expert over its K
    scale_bytes = value_bytes // 16

    def read(order):
        return lambda: _read_kernel[(pairs * num_n, c.split_k)](
            w.data, w.scales, ids, out, p.weights.num_experts, h, i, w.n16, w.k64, w.data.stride(0), w.scales.stride(0),
            TOPK=ids.shape[1], ORDER=order, SPLIT_K=c.split_k, STEPS=steps, BN=c.block_n, BK=c.block_k,
            num_warps=c.num_warps, maxnreg=_MAXNREG)

    src = torch.empty(value_bytes, dtype=torch.uint8, device=ids.device)
    dst = torch.empty_like(src)
    plan = direct_plan(p.topk_ids, p.weights.num_experts, 0)
    x = KernelInput(p.hidden, None, p.path)
    part = direct_stage1(x, p.weights, plan, c)  # stage 2's input, made once
    w2 = p.weights.w2_sw
    w2_bytes = pairs * w2.n16 * 16 * w2.k64 * 64 // 2
    return {"layout": (read(LAYOUT), value_bytes + scale_bytes), "values": (read(VALUES), value_bytes),
            "contig": (read(CONTIG), value_bytes), "nmajor": (read(NMAJOR), value_bytes + scale_bytes),
            "copy": (lambda: dst.copy_(src), 2 * value_bytes),
            "stage1": (lambda: direct_stage1(x, p.weights, plan, c), value_bytes + scale_bytes),
            "stage2": (lambda: direct_stage2(part, p.weights, plan, p.topk_weights, cfg.stage2, p.path, p.tokens),
                       w2_bytes + w2_bytes // 16)}


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("points", nargs="+", help="model:T[:path[:nmajor]] (a direct-decode point: T x topk <= 32; "
                    "nmajor: the real stages read the N-major copies)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--csv", default=None)
    ap.add_argument("--plain", type=int, default=0, help="run each variant N times eagerly, untimed (for ncu)")
    args = ap.parse_args(argv)
    from scan_v2 import FLUSH_BYTES, graph_median_us, point_problem, write_csv  # benchmarks/ is on sys.path

    flush = torch.empty(FLUSH_BYTES, dtype=torch.uint8, device="cuda")
    rows = []
    for spec in args.points:
        model, t, path, p = point_problem(spec)
        cfg = default_config(p.shape, path, t)
        variants = _variants(p, cfg)
        if args.plain:
            for fn, _ in variants.values():
                for _ in range(args.plain):
                    fn()
            torch.cuda.synchronize()
            continue
        times = {name: [] for name in variants}
        for _ in range(args.rounds):
            for name, (fn, _) in variants.items():
                times[name].append(graph_median_us(fn, flush))
        for name, (_, nbytes) in variants.items():
            us = sorted(times[name])[len(times[name]) // 2]
            print(f"{spec:28s} {name:7s} {us:8.2f} us  {nbytes / us / 1e3:7.1f} GB/s  "
                  f"rounds {';'.join(f'{x:.2f}' for x in times[name])}  {cfg.stage1.short()}", flush=True)
            rows.append({"point": spec, "model": model, "T": t, "path": path.value, "variant": name,
                         "us": round(us, 3), "bytes": nbytes, "gbps": round(nbytes / us / 1e3, 1),
                         "config": cfg.stage1.short()})
        p = None
        torch.cuda.empty_cache()
    write_csv(args.csv, rows)


if __name__ == "__main__":
    main(sys.argv[1:])
