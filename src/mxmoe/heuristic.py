"""The default tile choice: the documented baseline every tuned config must beat.

Pure function of (shape, path, T); no torch or triton. The rules, and why:
- BLOCK_M follows the average rows per hit expert (T*A / experts hit): a decode block holds 1-2
  real rows, so 16 (the MMA minimum) wastes the least; prefill blocks of 64-128 rows reuse each
  weight tile across many tokens, which is what moves the layer from the memory to the compute floor.
- BLOCK_N 64 keeps enough CTAs in flight at decode (hidden or inter / 64 tiles per hit expert) and
  divides every model's N (2880 = 45 x 64); prefill takes 128 where it divides.
- BLOCK_K 128 streams 64 bytes of packed weights per row per step (a full 16 B vector per thread);
  2880 is not a multiple of 128, and the kernels mask the tail. Decode stage 1 takes 256
  (124.5 us vs 141.7 us at 128, deepseek-v3 a16w4 T=1, H100, benchmarks/scan_tiles.py, 2026-11-25):
  fewer, longer K steps amortise the per-step scale loads and loop overhead.
- mma: `dot_scaled` on a GPU (the compiler's own e2m1 upcast), `upcast` under the interpreter,
  which lacks tl.dot_scaled.
- combine: fp32 atomics; split-K stays off in the baseline.
- Prefill stage 2 (>= 256 rows per expert) takes BLOCK_M=256: 8.37 ms vs 9.80 ms at 128 (deepseek-v3 a16w4
  T=8192, H100, results/h100/2026-11-25_scan2.log); stage 1 holds two accumulators, so it stays at 128.
- Measured and not taken: mma=fma (the tensor-core-free decode lever) ran 261 us vs 124 us for
  dot_scaled on deepseek-v3 T=1 stage 1 (same log); the f32 unpack costs more than the 16-row MMA wastes.
"""

from __future__ import annotations

from mxmoe.config import Combine, Mma, MoEConfig, TileConfig
from mxmoe.shapes import MoEShape, Path


def _rows_per_expert(shape: MoEShape, tokens: int) -> float:
    pairs = tokens * shape.topk
    return pairs / max(1, min(shape.experts, pairs))


def _block_n(n: int, prefer: int) -> int:
    for b in (prefer, 64, 32):
        if b <= prefer and n % b == 0:
            return b
    raise ValueError(f"no BLOCK_N in (prefer={prefer}, 64, 32) divides N={n}")


def _block_k(k: int, prefer: int) -> int:
    """`prefer`, capped at K rounded up to a power of two (>= 64): a K step past K only loads masked zeros."""
    return max(64, min(prefer, 1 << (k - 1).bit_length()))


def default_config(shape: MoEShape, path: Path | str, tokens: int, *, interpreter: bool = False) -> MoEConfig:
    """The baseline MoEConfig for one launch of `shape` on `path` at `tokens` tokens."""
    Path(path)  # validates
    rows = _rows_per_expert(shape, tokens)
    if rows <= 16:
        block_m, warps, stages = 16, 4, 3
    elif rows <= 32:
        block_m, warps, stages = 32, 4, 4
    elif rows <= 96:
        block_m, warps, stages = 64, 4, 3
    else:
        block_m, warps, stages = 128, 8, 3
    prefer_n = 64 if block_m <= 32 else 128
    mma = Mma.UPCAST if interpreter else Mma.DOT_SCALED
    common = dict(block_m=block_m, block_k=128, group_m=1 if block_m <= 32 else 8, num_warps=warps,
                  num_stages=stages, mma=mma)
    s1_k = _block_k(shape.hidden, 256 if block_m == 16 else 128)
    s1 = TileConfig(block_n=_block_n(shape.inter, prefer_n), **{**common, "block_k": s1_k})
    s2 = TileConfig(block_n=_block_n(shape.hidden, prefer_n), combine=Combine.ATOMIC,
                    **{**common, "block_k": _block_k(shape.inter, 128)})
    if rows >= 256:
        s2 = s2.replace(block_m=256, block_n=_block_n(shape.hidden, 128))
    return MoEConfig(s1, s2)
