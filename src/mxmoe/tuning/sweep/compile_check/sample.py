"""Which configs a legality validation compiles, each with the model's verdict: a deterministic stratified sample
of a candidate space, or the matching rows of an earlier table (rejudged by the current model).

Why a sample: one compile takes 1 to 200 s on one core (median ~5 s; heavily spilling and shared-memory-hungry
tiles are the slow tail), so the full wide space (30720 stage-1 and 38400 stage-2 configs per shape and path)
would take hours. Per (shape, path, stage) the sample takes `per_combo` configs: half predicted legal, half spread
evenly over the failure codes that occur (CHOICE_SAMPLE of DEGENERATE, a choice outside every metric); each
stratum is sampled at evenly spaced positions of its sorted order, SMEM_OVERFLOW and REG_PRESSURE only within
NEAR x their limit (SMEM_OVERFLOW with registers in budget), where a wrong verdict would hide and compiles are
quick. Predicted-legal configs run first. No torch or triton here.
"""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path as FsPath

from mxmoe.config import TileConfig
from mxmoe.legality import ACC_REG_BUDGET, H100, Illegal, Legal, Reason, check, register_model, smem_breakdown
from mxmoe.shapes import MODELS, MoEShape, Path
from mxmoe.space import candidate_space

CHOICE_SAMPLE = 4  # configs per (shape, path, stage) of a choice code (DEGENERATE): a spot check only
NEAR = 1.5  # resource strata are sampled within 1.5 x their limit (see near_boundary)


@dataclass(frozen=True, slots=True)
class Task:
    """One config to compile: where it sits (shape, path, stage) and what the model predicted."""

    shape: str
    path: str
    stage: int
    config: str  # TileConfig JSON
    predicted: str  # "legal" | "illegal"
    reason: str
    detail: str
    modelled_smem: int


def spread(items: list, count: int) -> list:
    """`count` items at evenly spaced positions (deterministic), all of them when there are fewer."""
    if count >= len(items):
        return list(items)
    return [items[(i * len(items)) // count] for i in range(count)]


def near_boundary(shape: MoEShape, path: Path, stage: int, reason: str, tasks: list[Task]) -> list[Task]:
    """The part of a resource stratum next to its limit, where a wrong verdict would hide (and whose compiles
    are the fast ones): modelled smem <= NEAR x the limit, or registers <= NEAR x the budget. Others: all."""
    def regs(t: Task) -> dict[str, int]:
        return register_model(path, stage, TileConfig.from_json(t.config))

    if reason == Reason.SMEM_OVERFLOW.value:  # registers within budget: the verdict rests on smem alone
        near = [t for t in tasks if t.modelled_smem <= NEAR * H100.smem_optin_bytes
                and regs(t)["acc"] <= ACC_REG_BUDGET and regs(t)["total"] <= H100.regs_per_thread_max]
    elif reason == Reason.REG_PRESSURE.value:
        near = [t for t in tasks if regs(t)["acc"] <= NEAR * ACC_REG_BUDGET
                and regs(t)["total"] <= NEAR * H100.regs_per_thread_max]
    else:
        return tasks
    return near or tasks


def judge(shape: MoEShape, path: Path, stage: int, cfg: TileConfig) -> Task:
    """A Task carrying the current model's verdict and modelled shared memory (H100 limits)."""
    v = check(shape, path, stage, cfg, H100)
    smem = smem_breakdown(shape, path, stage, cfg)["total"]
    if isinstance(v, Legal):
        return Task(shape.name, path.value, stage, cfg.to_json(), "legal", "", "", smem)
    assert isinstance(v, Illegal)
    return Task(shape.name, path.value, stage, cfg.to_json(), "illegal", v.reason.value, v.detail, smem)


def sample_tasks(shape: MoEShape, path: Path, stage: int, space: str, per_combo: int) -> list[Task]:
    """Half predicted-legal, half split evenly over the failure codes present (a few of the choice code);
    leftovers go to the other strata. Each stratum is sampled at evenly spaced positions of its sorted order,
    resource strata only near their limit (`near_boundary`)."""
    strata: dict[str, list[Task]] = defaultdict(list)
    for cfg in candidate_space(stage, path, space):
        task = judge(shape, path, stage, cfg)
        strata[task.reason or "legal"].append(task)
    reasons = sorted((k for k in strata if k != "legal"), key=lambda k: (not Reason(k).is_failure, k))
    for r in reasons:
        strata[r] = near_boundary(shape, path, stage, r, strata[r])
    budget = {"legal": per_combo // 2}
    left = per_combo - min(budget["legal"], len(strata["legal"]))
    for i, r in enumerate(reasons):  # even split, each stratum capped by its size, remainder passed on
        share = left // (len(reasons) - i)
        cap = len(strata[r]) if Reason(r).is_failure else min(len(strata[r]), CHOICE_SAMPLE)
        budget[r] = min(share, cap)
        left -= budget[r]
    budget["legal"] = min(len(strata["legal"]), budget["legal"] + left)
    return [t for name in ["legal", *reasons] for t in spread(strata[name], budget[name])]


def interleave(groups: list[list[Task]]) -> list[Task]:
    """Predicted-legal configs first (the zero-failure claim and the smem fit rest on them), then the rest;
    each part round-robin across (shape, path, stage), so a deadline cut leaves every combination covered."""
    out: list[Task] = []
    for part in (lambda t: t.predicted == "legal", lambda t: t.predicted != "legal"):
        sub = [[t for t in g if part(t)] for g in groups]
        for i in range(max((len(g) for g in sub), default=0)):
            out.extend(g[i] for g in sub if i < len(g))
    return out


def cfg_fields(r: dict) -> dict:
    """The TileConfig fields of a CSV row (its text turned back into ints where the config has ints; tables from
    before the tail_m column, or rows of a config without it, read tail_m 0)."""
    ints = ("block_m", "block_n", "block_k", "group_m", "num_warps", "num_stages", "split_k")
    return ({k: int(r[k]) for k in ints} | {"mma": r["mma"], "combine": r["combine"]}
            | {"tail_m": int(r.get("tail_m") or 0)})


_WHERE = re.compile(r"(\w+)(!?=)(.*)")


def matches(row: dict, where: Sequence[str]) -> bool:
    """Every `FIELD=VALUE` / `FIELD!=VALUE` predicate holds on the row's text (an unknown column raises)."""
    for pred in where:
        m = _WHERE.fullmatch(pred)
        if m is None:
            raise SystemExit(f"--where {pred!r}: expected FIELD=VALUE or FIELD!=VALUE")
        field, op, value = m.groups()
        if field not in row:
            raise SystemExit(f"--where {pred!r}: no column {field!r}")
        if (row[field] == value) != (op == "="):
            return False
    return True


def tasks_from_csv(table: FsPath, where: Sequence[str]) -> tuple[list[dict], list[Task]]:
    """(the rows that stay as recorded, Tasks re-judged by the current model for the rows every predicate
    matches), so rows compiled with an older kernel can be recompiled without redrawing the sample."""
    with table.open(newline="") as f:
        rows = list(csv.DictReader(f))
    kept = [r for r in rows if not matches(r, where)]
    groups: dict[tuple, list[Task]] = defaultdict(list)
    for r in rows:
        if matches(r, where):
            shape, path, stage = MODELS[r["shape"]], Path(r["path"]), int(r["stage"])
            groups[shape.name, path.value, stage].append(
                judge(shape, path, stage, TileConfig.from_dict(cfg_fields(r))))
    return kept, interleave(list(groups.values()))


def select_tasks(*, shapes: Sequence[str], paths: Sequence[str], stages: Sequence[str], space: str,
                 per_combo: int, from_csv: FsPath | None = None, where: Sequence[str] = (),
                 limit: int = 0) -> tuple[list[dict], list[list[Task]], list[Task]]:
    """(rows of `from_csv` kept as recorded, the tasks per (shape, path, stage), all tasks in run order capped at
    `limit` when nonzero): the matching rows of `from_csv` when given, else a fresh sample of `space`."""
    kept: list[dict] = []
    if from_csv is not None:
        kept, tasks = tasks_from_csv(from_csv, where)
        groups = [[t for t in tasks if (t.shape, t.path, t.stage) == key]
                  for key in dict.fromkeys((t.shape, t.path, t.stage) for t in tasks)]
    else:
        groups = [sample_tasks(MODELS[s], Path(p), int(st), space, per_combo)
                  for s in shapes for p in paths for st in stages]
        tasks = interleave(groups)
    if limit:
        tasks = tasks[:limit]
    return kept, groups, tasks
