"""What a sweep measures: candidate configs per T, each with its legality verdict, in a stable order.

No torch or triton here. A candidate is a MoEConfig at one T and one stage:
- stage "layer" (the default; what users run and what the gate compares): the heuristic's config
  always (first); then its regime neighbours, the configs the heuristic itself takes at the other
  grid points, nearest T first (a rule boundary placed at the wrong T is the likeliest loss, and these
  configs are compiled for the baseline anyway, so a short campaign tests every boundary at almost no
  compile cost); then the product of the legal stage-1 and stage-2 configs of the space, ranked by a
  cheap prior; all capped at `limit`. The prior is the heuristic's neighbourhood: a config scores the
  log2 distance of its tile sizes from the heuristic's at this T (BLOCK_M counts double: it follows
  rows per expert, the lever that matters most), plus 0.25 per other lever it changes, plus 0.5 when
  the two stages' BLOCK_M differ (moe() then aligns the routing twice). Ties break on a hash of
  (config key, T): a deterministic subsample, the same on every machine. A regime neighbour that
  `legality.check` rejects at this T (e.g. a 128-row tile at T=1, DEGENERATE) is skipped: its
  rejection is a fact about another T.
- stage "1" / "2": that stage's legal configs (capped the same way), the other stage fixed at the
  heuristic's, so the stage's time is measured against a known partner.
- baseline: exactly the heuristic's config per T.
Rejections are data: every stage config that `legality.check` rejects at a T becomes a candidate
of that stage (other stage at the heuristic) carrying its Illegal verdict, which the sweep records
as `illegal:<reason>` without compiling anything. One exception: the heuristic's own tiles are
exempt from DEGENERATE (legality's "legal, but only wastes work"), since moe() launches them today.
"""

from __future__ import annotations

import hashlib
import heapq
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mxmoe import legality
from mxmoe.config import MoEConfig, TileConfig
from mxmoe.heuristic import default_config
from mxmoe.shapes import TOKEN_GRID, MoEShape, Path
from mxmoe.space import candidate_space, takes_e4m3

DEFAULT_LIMIT = 48  # layer candidates per T: ~3 s each on an H100 (checks + timing), ~2.5 min per T
POOL_FACTOR = 4  # per-stage shortlist of POOL_FACTOR x limit before the product is ranked
SWEEP_STAGES = ("1", "2", "both", "layer")


@dataclass(frozen=True, slots=True)
class Candidate:
    """One config to try at one T. `illegal` is the legality verdict when the config is rejected."""

    stage: str  # "1" | "2" | "layer"
    tokens: int
    config: MoEConfig
    illegal: legality.Illegal | None = None


def _lever_distance(c: TileConfig, h: TileConfig) -> float:
    def log2(a: int, b: int) -> float:
        return abs(math.log2(a / b))

    d = 2 * log2(c.block_m, h.block_m) + log2(c.block_n, h.block_n) + log2(c.block_k, h.block_k)
    others = (c.group_m != h.group_m, c.num_warps != h.num_warps, c.num_stages != h.num_stages, c.mma != h.mma,
              (c.combine, c.split_k) != (h.combine, h.split_k))
    return d + 0.25 * sum(others)


def _tie(key: str, tokens: int) -> int:
    return int(hashlib.sha256(f"{key}:{tokens}".encode()).hexdigest()[:12], 16)


def _rank_stage(configs: Iterable[TileConfig], h: TileConfig, tokens: int, n: int) -> list[TileConfig]:
    return heapq.nsmallest(n, configs, key=lambda c: (_lever_distance(c, h), _tie(c.key(), tokens)))


def _rank_layer(s1: Sequence[TileConfig], s2: Sequence[TileConfig], h: MoEConfig, tokens: int,
                n: int) -> list[MoEConfig]:
    """The n best pairs of the two stages' shortlists (scored without building a MoEConfig per pair)."""
    pool1 = [(c, _lever_distance(c, h.stage1), c.key()) for c in _rank_stage(s1, h.stage1, tokens, POOL_FACTOR * n)]
    pool2 = [(c, _lever_distance(c, h.stage2), c.key()) for c in _rank_stage(s2, h.stage2, tokens, POOL_FACTOR * n)]
    scored = ((d1 + d2 + 0.5 * (a.block_m != b.block_m), _tie(k1 + k2, tokens), i, j)
              for i, (a, d1, k1) in enumerate(pool1) for j, (b, d2, k2) in enumerate(pool2))
    return [MoEConfig(pool1[i][0], pool2[j][0]) for *_, i, j in heapq.nsmallest(n, scored)]


def _verdict(shape: MoEShape, path: Path, stage: int, cfg: TileConfig, limits: legality.DeviceLimits, tokens: int,
             heuristic: bool) -> legality.Illegal | None:
    """The Illegal verdict, if any (`legality.refusal`: DEGENERATE refuses a candidate, not the heuristic's tile)."""
    return legality.refusal(shape, path, stage, cfg, limits, tokens, degenerate_refuses=not heuristic)


def _verdicts(shape: MoEShape, path: Path, stage: int, configs: Sequence[TileConfig], h: TileConfig,
              limits: legality.DeviceLimits, tokens: int) -> tuple[list[TileConfig], list[tuple[TileConfig, Any]]]:
    legal, illegal = [], []
    for c in configs:
        v = _verdict(shape, path, stage, c, limits, tokens, c == h)
        if v is None:
            legal.append(c)
        else:
            illegal.append((c, v))
    return legal, illegal


def _layer_verdict(shape: MoEShape, path: Path, cfg: MoEConfig, h: MoEConfig, limits: legality.DeviceLimits,
                   tokens: int) -> legality.Illegal | None:
    for stage, tile, ht in ((1, cfg.stage1, h.stage1), (2, cfg.stage2, h.stage2)):
        v = _verdict(shape, path, stage, tile, limits, tokens, tile == ht)
        if v is not None:
            return v
    return None


def _baseline(shape: MoEShape, path: Path, tokens: int, interpreter: bool) -> MoEConfig:
    """The heuristic's config a sweep measures as its baseline: what moe(config=None) runs on the sweep's weights,
    which carry the e4m3 layouts where the path's space has e4m3 tiles (space.takes_e4m3)."""
    return default_config(shape, path, tokens, interpreter=interpreter, e4m3=takes_e4m3(path))


def regime_neighbours(shape: MoEShape, path: Path, tokens: int, limits: legality.DeviceLimits,
                      interpreter: bool) -> list[MoEConfig]:
    """The heuristic's configs at the other grid points that are legal at `tokens`, nearest T first, each once."""
    h = _baseline(shape, path, tokens, interpreter)
    out: dict[str, MoEConfig] = {}
    for t in sorted(TOKEN_GRID, key=lambda g: (abs(math.log2(g / tokens)), g)):
        c = _baseline(shape, path, t, interpreter)
        legal = all(_verdict(shape, path, s, tile, limits, tokens, False) is None
                    for s, tile in ((1, c.stage1), (2, c.stage2)))
        if c != h and c.key() not in out and legal:
            out[c.key()] = c
    return list(out.values())


def _at_t(shape: MoEShape, path: Path, t: int, stage: str, limits: legality.DeviceLimits, interpreter: bool,
          limit: int, spaces: Mapping[int, Sequence[TileConfig]]) -> list[Candidate]:
    h = _baseline(shape, path, t, interpreter)
    legal1, bad1 = _verdicts(shape, path, 1, spaces[1], h.stage1, limits, t)
    legal2, bad2 = _verdicts(shape, path, 2, spaces[2], h.stage2, limits, t)
    out = [Candidate("1", t, MoEConfig(c, h.stage2), v) for c, v in bad1 if stage in ("1", "both", "layer")]
    out += [Candidate("2", t, MoEConfig(h.stage1, c), v) for c, v in bad2 if stage in ("2", "both", "layer")]
    picked: list[MoEConfig] = []
    if stage == "layer":
        near = regime_neighbours(shape, path, t, limits, interpreter)
        ranked = (c for c in _rank_layer(legal1, legal2, h, t, limit) if c != h and c not in near)
        picked += [h, *near, *ranked][:limit]
    if stage in ("1", "both"):
        s1 = [h.stage1, *(c for c in _rank_stage(legal1, h.stage1, t, limit) if c != h.stage1)][:limit]
        out += [Candidate("1", t, MoEConfig(c, h.stage2), _layer_verdict(shape, path, MoEConfig(c, h.stage2), h,
                                                                          limits, t)) for c in s1]
    if stage in ("2", "both"):
        s2 = [h.stage2, *(c for c in _rank_stage(legal2, h.stage2, t, limit) if c != h.stage2)][:limit]
        out += [Candidate("2", t, MoEConfig(h.stage1, c), _layer_verdict(shape, path, MoEConfig(h.stage1, c), h,
                                                                          limits, t)) for c in s2]
    out += [Candidate("layer", t, c, _layer_verdict(shape, path, c, h, limits, t)) for c in picked]
    return _dedup(out)


def _dedup(cands: Iterable[Candidate]) -> list[Candidate]:
    """One candidate per (stage, T, config): an illegal stage config picked again stays one row."""
    seen: dict[tuple[str, int, str], Candidate] = {}
    for c in cands:
        seen.setdefault((c.stage, c.tokens, c.config.key()), c)
    return list(seen.values())


def plan(
    shape: MoEShape,
    path: Path | str,
    tokens: Iterable[int],
    *,
    stage: str = "layer",
    space: str = "default",
    limits: legality.DeviceLimits,
    interpreter: bool,
    limit: int | None = None,
    baseline_only: bool = False,
    spaces: Mapping[int, Sequence[TileConfig]] | None = None,
) -> list[Candidate]:
    """Every candidate of a sweep, grouped by T (the worker builds each T's Problem once).

    `spaces` replaces `space.candidate_space` (tests use a hand-built handful of configs).
    """
    path = Path(path)
    if stage not in SWEEP_STAGES:
        raise ValueError(f"stage={stage!r}; expected one of {SWEEP_STAGES}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit={limit} must be >= 1")
    n = DEFAULT_LIMIT if limit is None else limit
    out: list[Candidate] = []
    for t in tokens:
        if baseline_only:
            h = _baseline(shape, path, t, interpreter)
            out.append(Candidate("layer", t, h, _layer_verdict(shape, path, h, h, limits, t)))
            continue
        sp = spaces if spaces is not None else {1: candidate_space(1, path, space), 2: candidate_space(2, path, space)}
        out += _at_t(shape, path, t, stage, limits, interpreter, n, sp)
    return out
