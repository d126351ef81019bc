"""How much of the e4m3 stage-1 error is x's per-token rebase? CPU, about 8 minutes and 18 GB for gpt-oss:

    PYTHONPATH=src python benchmarks/e4m3_rebase_study.py gpt-oss [small]

The guardrail's graph (its model seed 0 and token ids, real MoE dims; `small`: its tiny attention and vocab, which
fit this machine) in fp32 on the a8w4 oracle, the experts' inputs taped; per layer, stage-1 sums with MXFP8 x (the
oracle) against x rebased to one scale per token and per two shorter K chunks. Weights exact (dequantized MXFP4)
on both sides and sums in fp64, so only x's rebase differs; the weights' own rebase error is printed apart."""
import sys
import time

import torch

from mxmoe.fp8_rebase import rebase_mxfp8, rebase_weights
from mxmoe.integrations.transformers import Backend, dequantize_model_experts, patch_model, patched_modules
from mxmoe.mx import MXFormat, MXTensor, dequantize, quantize_mxfp8
from mxmoe.shapes import Path
from mxmoe.tuning.guardrail.metrics import forward
from mxmoe.tuning.guardrail.model import ExpertsTape, experts_tape, random_model, use_backend
from mxmoe.tuning.guardrail.run import _TOKEN_STREAM, BATCH, SEQ, resolve_shape

fam = sys.argv[1]
small = len(sys.argv) > 2 and sys.argv[2] == "small"
shape = resolve_shape(fam, None, small=False)  # the real MoE dims either way
t0 = time.time()
model = random_model(fam, shape, layers=2, small=small, seed=0, device="cpu", max_experts=32)
print("built", shape.name, f"{time.time()-t0:.0f}s", flush=True)
g = torch.Generator(device="cpu").manual_seed(0 ^ _TOKEN_STREAM)  # as run._run_graphs draws them
ids = torch.randint(0, model.config.vocab_size, (BATCH, SEQ), generator=g)
dequantize_model_experts(model)
patch_model(model, Path.A8W4, None)
with torch.no_grad(), use_backend(model, Backend.REFERENCE), experts_tape(model, ExpertsTape()) as tape:
    forward(model, ids)
print("forward", f"{time.time()-t0:.0f}s", len(tape.calls), "calls", flush=True)
mods = patched_modules(model)

def chunked(xq: MXTensor, chunk: int) -> torch.Tensor:
    t, k = xq.shape
    d = xq.data.view(t * (k // chunk), chunk)
    s = xq.scales.view(t * (k // chunk), chunk // 32)
    r = rebase_mxfp8(MXTensor(d, s, MXFormat.E4M3, 1, (t * (k // chunk), chunk)))
    return r.dequantize().view(t, k)

for li, ((x, tids, _tw), m) in enumerate(zip(tape.calls, mods, strict=True)):
    w = m.weights
    w13 = dequantize(w.w13).double()  # [E, 2I, H]
    w13e = rebase_weights(w.w13).dequantize().double()
    xq = quantize_mxfp8(x.float(), axis=1)
    xo = dequantize(xq).double()
    kdim = x.shape[1]
    big = next(c for c in (512, 480, 576) if kdim % c == 0)
    sm = next(c for c in (128, 96, 160) if kdim % c == 0)
    xs = {"token": rebase_mxfp8(xq).dequantize().double(), str(big): chunked(xq, big).double(),
          str(sm): chunked(xq, sm).double()}
    xerr = {k: float((v - xo).norm() / xo.norm()) for k, v in xs.items()}
    ref, outs = [], {k: [] for k in xs}
    wref = []
    for t in range(x.shape[0]):
        for e in tids[t].tolist():
            ref.append(w13[e] @ xo[t])
            wref.append(w13e[e] @ xo[t])
            for k, v in xs.items():
                outs[k].append(w13[e] @ v[t])
    ref = torch.stack(ref)
    yerr = {k: float((torch.stack(v) - ref).norm() / ref.norm()) for k, v in outs.items()}
    werr = float((torch.stack(wref) - ref).norm() / ref.norm())
    top = xo.abs().amax(1)
    grp = xo.abs().view(xo.shape[0], -1, 32).amax(2)
    spread = float(torch.log2(top[:, None] / grp.clamp_min(1e-30)).median())
    print(f"layer {li}: x rel err {xerr}; stage-1 sums rel err {yerr}; weights' rebase alone {werr:.2e}; "
          f"median log2(token top / group top) {spread:.1f}", flush=True)
