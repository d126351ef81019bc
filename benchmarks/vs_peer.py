"""mxmoe against OpenAI's triton_kernels (`matmul_ogs`, "the peer"), side by side in one process.

Per (shape, T, path, scope): each side's median time, ratio = peer_us / mxmoe_us (> 1: mxmoe faster), each
side's roofline fraction, mxmoe's config, and each side checked against an fp32 reference of its OWN weights.
- shapes: mxmoe.shapes.MODELS (`--model all`: the 8 real ones); T: mxmoe.shapes.parse_tokens (`grid` = 1..32768).
- paths: mxmoe a16w4 / a8w4 / a4w4. The peer always runs bf16 activations x MXFP4 weights: on a8w4 / a4w4 rows
  its column is its a16w4 time.
- scopes: `experts`: both sides get the same precomputed routing (the ids and weights make_problem draws) and
  the two expert GEMMs + combine are timed. `layer`: bf16 router logits -> top-k -> both GEMMs, all timed; mxmoe
  routes with route_topk_softmax, the peer with its own topk, which needs a power-of-two top-k (others skipped).
- activation: GPT-OSS shapes: swiglu_oai with biases on both sides. DeepSeek/Kimi shapes: mxmoe silu without
  bias; the peer has no plain silu epilogue, so it runs its fused swiglu with alpha=1 (silu) and a limit that
  never clamps: silu(gate) * (up + 1), the peer's own activation cost, same FLOPs. Speed is what is compared.
Method: each callable is captured in a CUDA graph (mxmoe.tuning.timing.clocks.CudaEventClock); before every replay a
256 MiB buffer is zeroed (L2 flush, outside the events); each replay has its own CUDA event pair; a measurement
is the median of >= --min-reps replays, continuing for its quarter of --max-time-s; rounds run A B A B and each
side reports the median of its two rounds' medians. Floors (mxmoe.tuning.timing.bench: measure_floors, roofline):
memory = bytes of the experts hit (MXFP4 values + scales) and activations over the measured copy bandwidth,
compute = FLOPs over the measured dense bf16 rate; roofline = max(floors) / time. Rows are appended as they
complete (a run cut off keeps them); a PNG of ratio vs T sits next to the CSV.

The peer is imported, never copied, from --peer-dir (the folder holding the package folder `triton_kernels/`).
On the GPU machine (.peers/ is git-ignored: name it in the device call's `carry`; $OUT brings the files back):
    mkdir -p .peers && cp -r ../shared/peers/triton_kernels/triton_kernels .peers/
    PYTHONPATH=src:.peers python3 benchmarks/vs_peer.py --model all --tokens grid --scope experts \
        --max-time-s 0.5 --deadline-s 500 --out-dir $OUT
Without a GPU: mxmoe alone, `tiny` shape, T = 1, 3, Triton interpreter, wall clock; every row's note says
"interpreter: not a measurement" (the path CI runs: tests/test_vs_peer.py).
"""

from __future__ import annotations

import argparse
import csv
import datetime
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path as FsPath
from types import SimpleNamespace

REPO = FsPath(__file__).resolve().parents[1]
REAL_MODELS = ("gpt-oss-20b", "gpt-oss-120b", "deepseek-v3", "kimi-k2", "deepseek-v3-tp8", "deepseek-v4-tp8",
               "kimi-k2-tp8", "gpt-oss-3072")
INTERP_TOKENS, INTERP_NOTE = (1, 3), "interpreter: not a measurement"
FLUSH_BYTES, WARM_REPLAYS, BATCH, MAX_REPS = 256 * 2**20, 3, 5, 2000
HIDDEN_STREAM = 0x5EED  # mxmoe.problem.make_problem draws the hidden states from seed ^ this
COLUMNS = ("shape", "T", "path", "scope", "mxmoe_us", "peer_us", "ratio", "mxmoe_roofline", "peer_roofline",
           "memory_floor_us", "compute_floor_us", "peer_memory_floor_us", "experts_hit", "mxmoe_rounds_us",
           "peer_rounds_us", "config", "peer_num_warps", "check", "note", "device", "torch", "triton", "commit")
HOW_TO_GET_PEER = ("  copy ../shared/peers/triton_kernels/triton_kernels to .peers/triton_kernels (git-ignored; carry "
                   ".peers)\n  and run with PYTHONPATH=src:.peers, or pass --peer-dir DIR (the folder holding "
                   "triton_kernels/)")


_OPTIONS = (  # flag, default, type, help
    ("--model", "all", str, "'all' (the 8 real shapes) or a comma list of mxmoe.shapes.MODELS names"),
    ("--tokens", "grid", str, "1,16,128 | grid | decode | prefill"),
    ("--path", "a16w4", str, "comma list of a16w4, a8w4, a4w4"),
    ("--scope", "experts", str, "comma list of experts, layer"),
    ("--max-time-s", 1.0, float, "timing budget per point (both sides, both rounds)"),
    ("--min-reps", 10, int, "replays per measurement, at least"),
    ("--deadline-s", None, float, "start no point after this many seconds"),
    ("--check-tokens", "1,128", str, "T values checked against each side's own reference"),
    ("--peer-dir", None, str, "folder holding triton_kernels/ (default .peers, else ../shared/peers/triton_kernels)"),
    ("--peer-num-warps", "auto", str, "auto (its bench: 4 if T <= 512 else 8), 4 or 8"),
    ("--out-dir", None, str, "CSV/PNG folder (default results/<device>/; without a GPU a temp dir)"),
    ("--seed", 0, int, "seed of weights, hidden states and routing"),
)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for flag, default, kind, text in _OPTIONS:
        ap.add_argument(flag, default=default, type=kind, help=text)
    return ap.parse_args(argv)


def _commit(repo: FsPath = REPO) -> str:
    """MXMOE_COMMIT when set (the device machine's copy of the tree has no .git of this checkout), else git's, with
    "-dirty" when tracked files differ from it: a stale .git under a newer tree (the device's, session 17: its CSV
    said 471f910 for a run of 0d72a8a) must not name a commit the run did not have."""
    if os.environ.get("MXMOE_COMMIT"):
        return os.environ["MXMOE_COMMIT"][:7]
    try:
        git = lambda *a: subprocess.run(["git", "-C", str(repo), *a], capture_output=True, text=True, timeout=10)  # noqa: E731
        head, status = git("rev-parse", "--short", "HEAD"), git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "nogit"
    if head.returncode != 0 or not head.stdout.strip():
        return "nogit"
    return head.stdout.strip() + ("-dirty" if status.returncode != 0 or status.stdout.strip() else "")


def _device_slug(name: str) -> str:
    """`NVIDIA H100 80GB HBM3` -> `h100`."""
    m = re.search(r"\b([A-Z]{1,2}\d{2,4}[A-Za-z]?)\b", name)
    return (m.group(1) if m else re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_")).lower()


def _gmean(xs: list[float]) -> float:
    return math.exp(sum(math.log(x) for x in xs) / len(xs))


def _fmt(x: float | None, spec: str = ".3f") -> str:
    return "" if x is None else format(x, spec)


class GraphTimer:
    """CUDA-graph replays, each after an L2 flush and inside its own event pair; median of the samples."""

    def __init__(self, min_reps: int) -> None:
        import torch

        from mxmoe.tuning.timing.clocks import CudaEventClock

        self.clock, self.min_reps = CudaEventClock(), min_reps
        buf = torch.empty(FLUSH_BYTES, dtype=torch.uint8, device="cuda")
        self.flush = lambda i: buf.zero_()

    def capture(self, fn):
        replay = self.clock.capture([fn])[0]  # warms fn up on a side stream, then captures it
        for _ in range(WARM_REPLAYS):  # the first replay uploads the graph
            replay()
        return replay

    def median_us(self, replay, budget_s: float) -> float:
        samples: list[float] = []
        t0 = time.perf_counter()
        while len(samples) < self.min_reps or (time.perf_counter() - t0 < budget_s and len(samples) < MAX_REPS):
            samples += self.clock.time_batch(lambda i: replay(), range(BATCH), before=self.flush)
        return statistics.median(samples)


# ==================================== PEER: triton_kernels (matmul_ogs) ====================================
# Everything that touches the peer is in this section: the one place to fix on the device. The calls follow its
# bench (bench/bench_mlp.py, bench/bench_utils.py, bench/distributed.py `routing`); none of its code is copied.
PEER_SWIGLU_OAI = (1.702, 7.0)  # (alpha, limit) of its swiglu for GPT-OSS
PEER_SILU_LIKE = (1.0, 1.0e30)  # silu shapes: alpha 1 (silu), a limit that never clamps; it adds 1 to `up`


def peer_import(peer_dir: FsPath):
    """The peer's entry points as a namespace, or why it cannot be imported (a str)."""
    if not (peer_dir / "triton_kernels" / "__init__.py").is_file():
        return f"no triton_kernels/ package under {peer_dir}"
    sys.path.insert(0, str(peer_dir))
    try:
        import triton_kernels.matmul_ogs as mo
        import triton_kernels.numerics_details.mxfp as mx
        import triton_kernels.swiglu as sw
        import triton_kernels.tensor as tt
        import triton_kernels.topk as tk
        from triton_kernels.tensor_details import layout
    except Exception as exc:  # any import failure means "time mxmoe alone"
        return f"{type(exc).__name__}: {exc}"
    return SimpleNamespace(
        matmul_ogs=mo.matmul_ogs, PrecisionConfig=mo.PrecisionConfig, RoutingData=mo.RoutingData,
        GatherIndx=mo.GatherIndx, ScatterIndx=mo.ScatterIndx, FnSpecs=mo.FnSpecs, FusedActivation=mo.FusedActivation,
        downcast_to_mxfp=mx.downcast_to_mxfp, upcast_from_mxfp_torch=mx.upcast_from_mxfp_torch, swiglu_fn=sw.swiglu_fn,
        FP4=tt.FP4, Tensor=tt.Tensor, Storage=tt.Storage, convert_layout=tt.convert_layout,
        wrap_torch_tensor=tt.wrap_torch_tensor, make_ragged_tensor_metadata=tt.make_ragged_tensor_metadata,
        topk=tk.topk, layout=layout)


def peer_weights(P, shape, seed: int, keep_plain: bool, device: str = "cuda") -> SimpleNamespace:
    """Random bf16 weights of the shape (~N(0, 1/K)), quantized by the peer (downcast_to_mxfp, axis=1) and laid out
    in its Hopper value layout; the scale layout per num_warps comes from peer_scales. w1 [E, H, 2I] (columns
    interleaved gate/linear, as its swiglu reads them), w2 [E, I, H]; f32 biases on GPT-OSS shapes."""
    import torch

    g = torch.Generator(device=device).manual_seed(seed + 1)
    e, h, i = shape.experts, shape.hidden, shape.inter

    def quantize(k: int, n: int):
        vals = torch.empty(e, n, k // 2, dtype=torch.uint8, device=device).transpose(1, 2)  # [E, K/2, N], K-major
        scales = torch.empty(e, n, k // 32, dtype=torch.uint8, device=device).transpose(1, 2)  # [E, K/32, N]
        step = max(1, 2**28 // (k * n))  # ~512 MB of bf16 per chunk: a whole model in bf16 does not fit
        for e0 in range(0, e, step):
            w = torch.randn(min(step, e - e0), k, n, generator=g, device=device, dtype=torch.bfloat16) * k**-0.5
            q, s = P.downcast_to_mxfp(w, torch.uint8, axis=1)
            vals[e0:e0 + step].copy_(q)
            scales[e0:e0 + step].copy_(s)
        return vals, scales

    (v1, s1), (v2, s2) = quantize(h, 2 * i), quantize(i, h)
    b1 = b2 = None
    if shape.bias:
        b1, b2 = (torch.randn(e, n, generator=g, device=device) * 0.1 for n in (2 * i, h))
    alpha, limit = PEER_SWIGLU_OAI if shape.activation.value == "swiglu_oai" else PEER_SILU_LIKE
    act = P.FusedActivation(P.FnSpecs("swiglu", P.swiglu_fn, ("alpha", "limit"), reduction_n=2), (alpha, limit))
    return SimpleNamespace(w1=_value_layout(P, v1), w2=_value_layout(P, v2), b1=b1, b2=b2, s1=s1, s2=s2, scaled={},
                           act=act, alpha=alpha, limit=limit, plain=(v1, v2) if keep_plain else None,
                           topk=shape.topk, experts=e)


def _value_layout(P, vals):
    """convert_layout(values, Hopper value layout), a few experts at a time: its bit packing holds ~8x the bytes in
    temporaries (kimi-k2's W13 whole would not fit beside mxmoe's weights). The layout permutes within an expert
    (leading dims are batch), so the stitched storage equals the whole-tensor conversion (checked on CPU)."""
    import torch

    lay, opts = P.layout.make_default_matmul_mxfp4_w_layout(mx_axis=1)
    e, step = vals.shape[0], max(1, 2**28 // (vals.shape[1] * vals.shape[2]))
    out = flip = None
    for e0 in range(0, e, step):
        part = P.convert_layout(P.wrap_torch_tensor(vals[e0:e0 + step], dtype=P.FP4), lay, **opts).storage.data
        flip = not part.is_contiguous()  # the Hopper layout stores a transposed view of a contiguous buffer
        part = part.mT if flip else part
        if out is None:
            out = torch.empty((e, *part.shape[1:]), dtype=part.dtype, device=part.device)
        out[e0:e0 + part.shape[0]].copy_(part)
    shape = [e, vals.shape[1] * 2, vals.shape[2]]  # logical [E, K, N], as wrap_torch_tensor(FP4) gives
    return P.Tensor(P.Storage(out.mT if flip else out, lay(vals.shape, **opts)), dtype=P.FP4, shape=shape)


def peer_scales(P, pw, num_warps: int):
    """(w1 scale, w2 scale) in HopperMXScaleLayout for `num_warps` (the kernel's warps and BLOCK_N follow it)."""
    if num_warps not in pw.scaled:
        lay, opts = P.layout.make_default_matmul_mxfp4_w_scale_layout(mx_axis=1, num_warps=num_warps)
        pw.scaled[num_warps] = tuple(P.convert_layout(P.wrap_torch_tensor(s), lay, **opts) for s in (pw.s1, pw.s2))
    return pw.scaled[num_warps]


def peer_routing_from_ids(P, ids, weights, n_experts: int):
    """RoutingData, GatherIndx, ScatterIndx for given top-k ids and weights (any k), built outside the timed region.
    Pair p = t*k + slot; combine (its col_sorted_indx): the pairs sorted by expert, stable; dispatch
    (row_sorted_indx): the inverse permutation; gate_scal: the weights in combine order (bench/distributed.py)."""
    import torch

    flat = ids.reshape(-1).long()
    combine = torch.argsort(flat, stable=True)
    dispatch = torch.empty_like(combine)
    dispatch[combine] = torch.arange(combine.numel(), device=combine.device)
    meta = P.make_ragged_tensor_metadata(torch.bincount(flat, minlength=n_experts).to(torch.int32), combine.numel())
    rdata = P.RoutingData(weights.reshape(-1).float()[combine], meta.slice_sizes, n_experts, ids.shape[1], meta)
    combine, dispatch = combine.to(torch.int32), dispatch.to(torch.int32)
    return rdata, P.GatherIndx(combine, dispatch), P.ScatterIndx(dispatch, combine)


def _peer_gemms(P, pw, hidden, rdata, gi, si, num_warps: int):
    """gather + W1 + fused swiglu, then W2 + bias, gammas (the routing weights) + scatter, then its k-reduce."""
    sc1, sc2 = peer_scales(P, pw, num_warps)
    x = P.matmul_ogs(hidden, pw.w1, pw.b1, rdata, gather_indx=gi, precision_config=P.PrecisionConfig(weight_scale=sc1),
                     fused_activation=pw.act)
    return P.matmul_ogs(x, pw.w2, pw.b2, rdata, scatter_indx=si, precision_config=P.PrecisionConfig(weight_scale=sc2),
                        gammas=rdata.gate_scal)


def peer_callable(P, pw, hidden, num_warps: int, routing=None, router_w=None):
    """The timed callable: scope `experts` with `routing` (from peer_routing_from_ids), scope `layer` with
    `router_w`: bf16 logits, its topk (softmax over the k, as bench/distributed.py routes), metadata, both GEMMs."""
    peer_scales(P, pw, num_warps)  # lay the scales out before capture
    if routing is not None:
        return lambda: _peer_gemms(P, pw, hidden, *routing, num_warps)

    def layer():
        sparse = P.topk(hidden @ router_w.T, pw.topk, apply_softmax=True)
        combine, dispatch = sparse.mask_metadata.col_sorted_indx, sparse.mask_metadata.row_sorted_indx
        meta = P.make_ragged_tensor_metadata(sparse.mask_metadata.col_sum, dispatch.shape[0])
        rdata = P.RoutingData(sparse.vals.flatten()[combine], meta.slice_sizes, pw.experts, pw.topk, meta)
        return _peer_gemms(P, pw, hidden, rdata, P.GatherIndx(combine, dispatch), P.ScatterIndx(dispatch, combine),
                           num_warps)

    return layer


def peer_reference(P, pw, hidden, ids, weights):
    """fp32 answer from the peer's own dequantized weights (its upcast_from_mxfp_torch), rounding where it rounds:
    the bf16 intermediate after the activation and each pair's bf16 contribution before the k-reduce."""
    import torch

    (v1, v2), k = pw.plain, ids.shape[1]
    x, out = hidden.float(), torch.zeros(hidden.shape, device=hidden.device)
    flat, wf = ids.reshape(-1).long(), weights.reshape(-1).float()
    for e in torch.unique(flat).tolist():
        pairs = torch.nonzero(flat == e).flatten()
        w1 = P.upcast_from_mxfp_torch(v1[e:e + 1], pw.s1[e:e + 1], torch.float32, axis=1)[0]  # [H, 2I]
        y = x[pairs // k] @ w1 + (0 if pw.b1 is None else pw.b1[e])
        gate, lin = y[:, 0::2].clamp(max=pw.limit), y[:, 1::2].clamp(-pw.limit, pw.limit)
        a = (gate * torch.sigmoid(pw.alpha * gate) * (lin + 1)).bfloat16().float()
        w2 = P.upcast_from_mxfp_torch(v2[e:e + 1], pw.s2[e:e + 1], torch.float32, axis=1)[0]  # [I, H]
        out.index_add_(0, pairs // k, ((a @ w2 + (0 if pw.b2 is None else pw.b2[e])) * wf[pairs, None]).bfloat16()
                       .float())
    return out
# ================================================ END PEER ================================================


def _check(name: str, out, ref, path) -> str:
    from mxmoe.tolerance import compare, lookup

    rep = compare(out, ref, lookup(path, "layer"))
    max_abs = float((out.float() - ref.float()).abs().max()) if out.shape == ref.shape else float("inf")
    return f"{name}:{'pass' if rep.ok else 'FAIL'}(max_abs={max_abs:.3g},max_rel={rep.max_rel:.2g})"


def _point(ctx, shape, weights, pw, router_w, t: int, path, scope: str) -> dict:
    """Check (at --check-tokens, scope experts) and time one (shape, T, path, scope); returns its CSV row."""
    import torch

    import mxmoe
    from mxmoe.dispatch import choose_config
    from mxmoe.moe import shape_of
    from mxmoe.problem import Problem, RoutingDist, make_routing
    from mxmoe.routing import experts_hit, route_topk_softmax
    from mxmoe.shapes import Path
    from mxmoe.tuning.timing.bench import roofline

    dev = ctx.dev
    ids, tw = make_routing(shape, t, seed=ctx.seed, device=dev)  # what make_problem(shape, path, T, seed) draws
    g = torch.Generator(device="cpu").manual_seed(ctx.seed ^ HIDDEN_STREAM)
    hidden = torch.randn(t, shape.hidden, generator=g).to(device=dev, dtype=torch.bfloat16)
    prob = Problem(shape=shape, path=path, tokens=t, seed=ctx.seed, routing=RoutingDist.UNIFORM, hidden=hidden,
                   weights=weights, topk_ids=ids, topk_weights=tw)  # make_problem's, with the weights drawn once
    cfg = choose_config(shape_of(weights, ids.shape[1]), path, t)  # what moe(config=None) launches
    notes, checks, pe_fn, nw = [] if ctx.gpu else [INTERP_NOTE], [], None, None

    def mx_layer():
        i, w = route_topk_softmax(hidden @ router_w.T, shape.topk)
        return mxmoe.moe(hidden, weights, i, w, path=path, validate=False)

    def mx_experts():
        return mxmoe.moe(hidden, weights, ids, tw, path=path, validate=False)

    mx_fn = mx_experts if scope == "experts" else mx_layer
    hit = experts_hit(ids if scope == "experts" else route_topk_softmax(hidden @ router_w.T, shape.topk)[0],
                      shape.experts)
    if pw is not None:
        nw = ctx.peer_warps or (4 if t <= 512 else 8)
        try:
            routing = peer_routing_from_ids(ctx.peer, ids, tw, shape.experts) if scope == "experts" else None
            pe_fn = peer_callable(ctx.peer, pw, hidden, nw, routing=routing, router_w=router_w)
        except Exception as exc:  # the peer failing must not stop mxmoe's row
            notes.append(f"peer setup failed: {type(exc).__name__}: {exc}"[:300])
    if scope == "layer":
        checks.append("n/a(layer: each side routes itself)")
    elif t in ctx.check_tokens:
        checks.append(_check("mxmoe", mx_fn(), prob.reference(), path))
        if pe_fn is not None and pw.plain is None:
            checks.append("peer:not_checked")
        elif pe_fn is not None:
            try:
                checks.append(_check("peer", pe_fn(), peer_reference(ctx.peer, pw, hidden, ids, tw), Path.A16W4))
            except Exception as exc:
                checks.append(f"peer:error({type(exc).__name__})")
                notes.append(f"peer check failed: {exc}"[:300])
    m_rounds, p_rounds = [], []
    if not ctx.gpu:  # the interpreter: a trivial wall clock around one warm call
        mx_fn()
        t0 = time.perf_counter()
        mx_fn()
        m_rounds.append((time.perf_counter() - t0) * 1e6)
    else:
        m_rep, p_rep = ctx.timer.capture(mx_fn), None
        if pe_fn is not None:
            try:
                p_rep = ctx.timer.capture(pe_fn)
            except Exception as exc:
                notes.append(f"peer capture failed: {type(exc).__name__}: {exc}"[:300])
        budget = ctx.max_time_s / (4 if p_rep else 2)
        for _ in range(2):  # A B A B
            m_rounds.append(ctx.timer.median_us(m_rep, budget))
            if p_rep is not None:
                p_rounds.append(ctx.timer.median_us(p_rep, budget))
        del m_rep, p_rep
    m_us, p_us = statistics.median(m_rounds), statistics.median(p_rounds) if p_rounds else None
    m_roof = roofline(shape, path, t, hit, m_us, ctx.floors)
    p_roof = roofline(shape, Path.A16W4, t, hit, p_us, ctx.floors) if p_us else None
    return {"shape": shape.name, "T": t, "path": path.value, "scope": scope, "mxmoe_us": _fmt(m_us),
            "peer_us": _fmt(p_us), "ratio": _fmt(p_us and p_us / m_us, ".4f"),
            "mxmoe_roofline": _fmt(m_roof.fraction, ".4f"), "peer_roofline": _fmt(p_roof and p_roof.fraction, ".4f"),
            "memory_floor_us": _fmt(m_roof.memory_floor_us), "compute_floor_us": _fmt(m_roof.compute_floor_us),
            "peer_memory_floor_us": _fmt(p_roof and p_roof.memory_floor_us), "experts_hit": hit,
            "mxmoe_rounds_us": ";".join(map(_fmt, m_rounds)), "peer_rounds_us": ";".join(map(_fmt, p_rounds)),
            "config": f"{cfg.stage1.short()}|{cfg.stage2.short()}", "peer_num_warps": nw or "",
            "check": ";".join(checks), "note": "; ".join(notes), **ctx.versions}


def _summary(rows: list[dict], skipped: list[str], not_run: list[str]) -> None:
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["shape"], r["path"], r["scope"]), []).append(r)
    print("\n== summary (ratio = peer_us / mxmoe_us; > 1: mxmoe faster)", flush=True)
    for (shape, path, scope), rs in groups.items():
        rr = [(float(r["ratio"]), r["T"]) for r in rs if r["ratio"]]
        if rr:
            print(f"{shape:16} {path} {scope:7}: geomean {_gmean([x for x, _ in rr]):.3f} over {len(rr)} T, "
                  f"worst {min(rr)[0]:.3f} at T={min(rr)[1]}")
        else:
            print(f"{shape:16} {path} {scope:7}: no peer times; mxmoe " + ", ".join(f"T={r['T']}: {r['mxmoe_us']} us"
                                                                                 for r in rs))
    ratios = [float(r["ratio"]) for r in rows if r["ratio"]]
    print(f"overall geomean ratio: {_gmean(ratios):.3f} over {len(ratios)} points" if ratios
          else "overall: no ratios (the peer did not run)")
    for line in skipped:
        print(f"skipped: {line}")
    if not_run:
        print(f"deadline: {len(not_run)} points not run: {', '.join(not_run)}")


def _plot(rows: list[dict], png: FsPath, label: str) -> None:
    """Ratio vs T (log2), one line per shape (per path/scope when several), a line at 1.0; mxmoe us if no ratio."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no PNG")
        return
    key = "ratio" if any(r["ratio"] for r in rows) else "mxmoe_us"
    several = len({(r["path"], r["scope"]) for r in rows}) > 1
    lines: dict[str, list[tuple[int, float]]] = {}
    for r in rows:
        if r[key]:
            lines.setdefault(r["shape"] + (f" {r['path']}/{r['scope']}" if several else ""), []).append(
                (int(r["T"]), float(r[key])))
    fig, ax = plt.subplots(figsize=(10, 6))
    for name, pts in lines.items():
        ax.plot(*zip(*sorted(pts), strict=True), marker="o", label=name)
    ax.set_xscale("log", base=2)
    if key == "ratio":
        ax.axhline(1.0, color="black", linewidth=1)
    ax.set(xlabel="T (tokens)", ylabel="peer_us / mxmoe_us (> 1: mxmoe faster)" if key == "ratio" else "mxmoe us",
           title=f"mxmoe vs triton_kernels matmul_ogs ({label})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    import torch

    gpu = torch.cuda.is_available()
    if not gpu:
        os.environ["TRITON_INTERPRET"] = "1"  # before any mxmoe kernel module is imported
        print(f"*** NO GPU: mxmoe alone, tiny shape, Triton interpreter, wall clock: {INTERP_NOTE.upper()} ***",
              flush=True)
    import triton

    from mxmoe.shapes import MODELS, Path, get_shape, model_tokens, parse_tokens
    from mxmoe.tuning.timing.bench import measure_floors
    from mxmoe.weights import MoEWeights

    start = time.monotonic()
    paths = [Path(p.strip()) for p in args.path.split(",") if p.strip()]
    scopes = [s.strip() for s in args.scope.split(",") if s.strip()]
    if bad := [s for s in scopes if s not in ("experts", "layer")]:
        raise SystemExit(f"unknown scope(s) {bad}: use experts, layer")
    names = REAL_MODELS if args.model == "all" else tuple(m.strip() for m in args.model.split(","))
    shapes = [get_shape(n) for n in names] if gpu else [MODELS["tiny"]]
    tokens = parse_tokens(args.tokens) if gpu else INTERP_TOKENS
    device, commit, dev = torch.cuda.get_device_name() if gpu else "interpreter", _commit(), "cuda" if gpu else "cpu"
    out_dir = FsPath(args.out_dir) if args.out_dir else (
        REPO / "results" / _device_slug(device) if gpu else FsPath(tempfile.mkdtemp(prefix="vs_peer_")))
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / f"{datetime.date.today():%Y-%m-%d}_vs_peer_{commit}.csv"
    peer = None
    if gpu:
        peer_dir = FsPath(args.peer_dir) if args.peer_dir else (
            REPO / ".peers" if (REPO / ".peers").is_dir() else REPO.parent / "shared" / "peers" / "triton_kernels")
        peer = peer_import(peer_dir.resolve())
        print(f"peer: triton_kernels from {peer_dir}" if not isinstance(peer, str) else
              f"peer not importable ({peer}); timing mxmoe alone. To get it:\n{HOW_TO_GET_PEER}", flush=True)
        peer = None if isinstance(peer, str) else peer
    check_tokens = {int(x) for x in args.check_tokens.split(",") if x.strip()}
    ctx = SimpleNamespace(gpu=gpu, dev=dev, seed=args.seed, peer=peer, max_time_s=args.max_time_s,
                          check_tokens=check_tokens,
                          peer_warps=None if args.peer_num_warps == "auto" else int(args.peer_num_warps),
                          timer=GraphTimer(args.min_reps) if gpu else None, floors=measure_floors(interpreter=not gpu),
                          versions={"device": device, "torch": torch.__version__, "triton": triton.__version__,
                                    "commit": commit})
    print(f"floors: {ctx.floors.bandwidth / 1e12:.2f} TB/s, {ctx.floors.rate / 1e12:.0f} TFLOP/s "
          f"({ctx.floors.source}); csv: {csv_path}", flush=True)
    rows, skipped, not_run = [], [], []
    late = lambda: args.deadline_s is not None and time.monotonic() - start > args.deadline_s
    new_file = not csv_path.exists() or csv_path.stat().st_size == 0
    with open(csv_path, "a", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        if new_file:
            writer.writeheader()
        for shape in shapes:
            ts, pow2 = model_tokens(shape, tokens), shape.topk & (shape.topk - 1) == 0
            if "layer" in scopes and not pow2:
                skipped.append(f"{shape.name} layer: top-k {shape.topk} is not a power of two (the peer's topk)")
            todo = [(t, p, s) for t in ts for p in paths for s in scopes if s == "experts" or pow2]
            if late():
                not_run += [f"{shape.name}/{p.value}/{s}/T={t}" for t, p, s in todo]
                continue
            weights, router_w, pw = MoEWeights.random(shape, seed=args.seed, device=dev), None, None
            if "layer" in scopes and pow2:
                g = torch.Generator(device="cpu").manual_seed(args.seed + 2)
                router_w = (torch.randn(shape.experts, shape.hidden, generator=g) * shape.hidden**-0.5).to(
                    device=dev, dtype=torch.bfloat16)
            if peer is not None:
                try:
                    keep = "experts" in scopes and bool(check_tokens & set(ts))  # the plain copy feeds its check
                    pw = peer_weights(peer, shape, args.seed, keep_plain=keep)
                except Exception as exc:  # time mxmoe alone for this shape
                    print(f"{shape.name}: peer weights failed ({type(exc).__name__}: {exc}); mxmoe alone", flush=True)
            for t, path, scope in todo:
                if late():
                    not_run.append(f"{shape.name}/{path.value}/{scope}/T={t}")
                    continue
                if pw is not None and t > max(check_tokens, default=0):
                    pw.plain = None  # no later check needs the plain (unswizzled) copy
                try:
                    row = _point(ctx, shape, weights, pw, router_w, t, path, scope)
                except Exception as exc:  # one failed point is a row saying so; the run goes on
                    row = dict.fromkeys(COLUMNS, "") | ctx.versions | {
                        "shape": shape.name, "T": t, "path": path.value, "scope": scope,
                        "note": f"error: {type(exc).__name__}: {exc}"[:300]}
                rows.append(row)
                writer.writerow(row)
                fh.flush()
                print(f"{shape.name} T={t} {path.value} {scope}: mxmoe {row['mxmoe_us'] or '-'} us | peer "
                      f"{row['peer_us'] or '-'} us (nw {row['peer_num_warps'] or '-'}) | ratio {row['ratio'] or '-'} "
                      f"| roofline {row['mxmoe_roofline'] or '-'}/{row['peer_roofline'] or '-'} | {row['config']} | "
                      f"{row['check']} {row['note']}", flush=True)
            del weights, pw, router_w
            if gpu:
                torch.cuda.empty_cache()
    _summary(rows, skipped, not_run)
    if rows:
        _plot(rows, csv_path.with_suffix(".png"), device if gpu else INTERP_NOTE)
    print(f"csv: {csv_path}\npng: {csv_path.with_suffix('.png')}", flush=True)
    if not gpu:
        print(f"*** {INTERP_NOTE.upper()} ***", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
