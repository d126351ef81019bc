"""How much of a grouped MoE GEMM is padding: the tile-padding bound on the roofline fraction.

A stage computes whole BLOCK_M-row tiles per expert, so an expert with n (token, slot) rows costs ceil(n / BLOCK_M)
tiles. Under make_problem's routing draws (same seed as vs_peer.py: seed = T), the padding efficiency is

    pad_eff(BLOCK_M) = sum_e n_e / sum_e BLOCK_M * ceil(n_e / BLOCK_M)

(with tail tiles an expert's remainder of at most tail_m rows costs tail_m rows instead of BLOCK_M; the layer's
pad_eff weights the heuristic's two stages by their MMA work, 2/3 and 1/3)

and a kernel whose tiles run at a fraction f of the dense bf16 rate reaches at most f * pad_eff of it on the layer.
Given a vs_peer.py CSV, each point's roofline / pad_eff is the f the kernel reached on the rows it computed (where
the compute floor is the larger floor; points bound by the memory floor are marked).

At the 0d72a8a grid with the tail rule (results/h100/2026-12-07_padding_bound_0d72a8a.txt): layer pad_eff at T =
4096 is 0.67-0.89 and roof/pad still 0.65-0.72 at every full-expert prefill point, so even without any padding
T = 4096-8192 would sit at 0.65-0.72 x pad_eff: issue 21's 0.60 there needs a faster main loop, not only tails.

Why it matters (H100, vs_peer grid at 47d08b3): on the full-expert shapes from T = 4096 up, roofline / pad_eff is
0.64-0.72 at every point, the same as at T = 32768 where padding is under 6%: the prefill gap at T = 4096
(0.45-0.47 of dense bf16, the peer alike) is the routing's padding at BLOCK_M 128 (pad_eff 0.67-0.68), not a
slower main loop. Smaller tiles pad less but amortise each weight tile's decode over fewer rows.

    python benchmarks/padding_bound.py --model deepseek-v3,kimi-k2 --tokens 1024,4096,8192
    python benchmarks/padding_bound.py --model all --tokens prefill --csv results/h100/2026-12-06_vs_peer_47d08b3.csv

CPU only (routing draws and counting); prints a table, never asserts.
"""

from __future__ import annotations

import argparse
import csv
import sys

import torch

from mxmoe.heuristic import default_config, padded_rows
from mxmoe.problem import make_routing
from mxmoe.shapes import MODELS, parse_tokens

BLOCKS = (32, 64, 128, 256)
REAL = ("gpt-oss-20b", "gpt-oss-120b", "deepseek-v3", "kimi-k2", "deepseek-v3-tp8", "deepseek-v4-tp8", "kimi-k2-tp8",
        "gpt-oss-3072")


def computed_rows(counts: torch.Tensor, block_m: int, tail_m: int = 0) -> int:
    """Rows a stage computes for per-expert row counts `counts` (heuristic.padded_rows per expert: whole BLOCK_M
    tiles, and with tail tiles a remainder of at most tail_m rows on one tail_m-row tile, a longer one on one
    BLOCK_M tile)."""
    return sum(padded_rows(n, block_m, tail_m) for n in counts.tolist())


def pad_eff(counts: torch.Tensor, block_m: int, tail_m: int = 0) -> float:
    """Useful rows over computed rows for per-expert row counts `counts` at tile height `block_m` (and tail
    tiles of `tail_m` rows); 1.0 with no rows: nothing is computed."""
    padded = computed_rows(counts, block_m, tail_m)
    return int(counts.sum()) / padded if padded else 1.0


def layer_pad_eff(counts: torch.Tensor, cfg) -> float:
    """pad_eff of a layer config's two stages weighted by their MMA work (stage 1 is gate + up: 2 I x H a row,
    stage 2 H x I, so 2/3 and 1/3)."""
    padded = (2 * computed_rows(counts, cfg.stage1.block_m, cfg.stage1.tail_m)
              + computed_rows(counts, cfg.stage2.block_m, cfg.stage2.tail_m)) / 3
    return int(counts.sum()) / padded if padded else 1.0


def expert_rows(model: str, tokens: int) -> torch.Tensor:
    """Rows per expert of make_problem's uniform routing at `tokens` (seed = tokens, as vs_peer.py draws it)."""
    shape = MODELS[model]
    ids, _ = make_routing(shape, tokens, "uniform", seed=tokens)
    return torch.bincount(ids.flatten().long(), minlength=shape.experts)


def rooflines(path: str | None) -> dict[tuple[str, int], tuple[float, bool]]:
    """(shape, T) -> (mxmoe's a16w4 experts-scope roofline fraction, whether the memory floor is the larger one)
    from a vs_peer.py CSV. Where memory bounds the point, roofline / pad_eff is no tile efficiency."""
    if path is None:
        return {}
    with open(path, newline="") as f:
        return {(r["shape"], int(r["T"])): (float(r["mxmoe_roofline"]),
                                            float(r["memory_floor_us"]) > float(r["compute_floor_us"]))
                for r in csv.DictReader(f) if r["path"] == "a16w4" and r["scope"] == "experts" and r["mxmoe_roofline"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="deepseek-v3", help="comma list of mxmoe.shapes.MODELS names, or 'all'")
    ap.add_argument("--tokens", default="prefill", help="comma list or a mxmoe.shapes grid name")
    ap.add_argument("--csv", default=None, help="a vs_peer.py CSV: add each point's roofline / pad_eff")
    args = ap.parse_args(argv)
    models = REAL if args.model == "all" else tuple(m.strip() for m in args.model.split(","))
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        ap.error(f"unknown model(s) {unknown}; known: {sorted(MODELS)}")
    roof = rooflines(args.csv)
    head = "shape            T  BM s1/s2 (-t tail)  pad_eff " + " ".join(f"@{b:<4d}" for b in BLOCKS)
    print(head + ("  roofline  roof/pad" if roof else ""))
    for model in models:
        for t in parse_tokens(args.tokens):
            counts = expert_rows(model, t)
            cfg = default_config(MODELS[model], "a16w4", t)
            tiles = "/".join(f"{c.block_m}" + (f"-t{c.tail_m}" if c.tail_m else "") for c in (cfg.stage1, cfg.stage2))
            eff = layer_pad_eff(counts, cfg)
            line = f"{model:15s} {t:6d} {tiles:>18s}  {eff:6.3f}  " + " ".join(f"{pad_eff(counts, b):.3f}"
                                                                             for b in BLOCKS)
            if (model, t) in roof:
                frac, memory_bound = roof[model, t]
                line += f"  {frac:8.3f}  {frac / eff:8.3f}" + (" (memory floor)" if memory_bound else "")
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
