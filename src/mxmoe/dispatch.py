"""Choose the tile config for a launch: a scoped override, else a tuned table, else the heuristic.

torch-free at import (torch is imported only to name the running GPU), and it never imports the
harness (`mxmoe.tuning`): tables are plain JSON that `tuning/judge/export.py` writes. The file format (name, schema,
parser, cached read) is `mxmoe.tables`'s; the names its callers use are re-exported here.

Lookup, for a moe() call with config=None:
1. `with mxmoe.override(cfg):` (a ContextVar, never a module global) wins.
2. The table for (running GPU, shape, path), named by `table_filename`, in `$MXMOE_CONFIG_DIR` first,
   then in the packaged `mxmoe/tuned/`. A table is used only if its `_metadata` names the running
   triton version and kernel source hash (`mxmoe.source_hash`, the hash the sweep keyed its rows
   on); otherwise it warns once and the next folder, then the heuristic, is tried. A live T between
   grid points takes the entry of the next grid point up; beyond the grid, the largest. An entry that
   `launchable` refuses on this device is never launched (warned once; that T takes the next folder's
   entry, then the heuristic).
3. `heuristic.default_config`.

Resolved once: the first call for a (shape, path, device, $MXMOE_CONFIG_DIR) stats and reads each candidate
file once, checks its metadata and every entry's legality, and keeps the result (`Resolution`: per folder,
a sorted tuple of T buckets and their configs). Every later call is a dict lookup and a bisect, with no
file access and no legality check. A file edited afterwards is seen after `clear_cache()` (parsed files
stay cached by (path, mtime), so an unchanged file is not parsed again). The heuristic's answer is cached
per T as well. `$MXMOE_CONFIG_DIR` and `TRITON_INTERPRET` are read once (`environment()`), at the first lookup and
after `clear_cache()`: a process that changes either afterwards calls `clear_cache()` (the guardrail's config-dir
block does), as Triton itself fixes interpretation when the kernels are decorated.

Legality in one place: `launchable` is `legality.refusal` on both stages, which does not let DEGENERATE refuse a
launch the runtime was asked for (legality calls it "legal, but only wastes work": a measured best entry read at
a T between grid points may be wasteful there yet is still the measured choice, and the heuristic can be too).
Tables and an explicit `moe(config=...)` both go through it (`check_explicit`); the sweep's candidates call
`legality.refusal` too.
"""

from __future__ import annotations

import bisect
import functools
import importlib.metadata
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path as FsPath
from typing import Any

from mxmoe import legality
from mxmoe.config import MoEConfig
from mxmoe.heuristic import default_config
from mxmoe.shapes import Activation, MoEShape, Path
from mxmoe.source_hash import kernel_source_hash
from mxmoe.tables import METADATA_KEY as METADATA_KEY
from mxmoe.tables import TABLE_NAME, TunedTable, clear_parsed, device_label, load_table, table_filename
from mxmoe.tables import TABLE_SCHEMA_VERSION as TABLE_SCHEMA_VERSION
from mxmoe.tables import parse_table as parse_table

CONFIG_DIR_ENV = "MXMOE_CONFIG_DIR"
TUNED_DIR = FsPath(__file__).resolve().parent / "tuned"
INTERPRETER_DEVICE = "interpreter"  # the device name of tables exported from interpreter sweeps
# Device limits known without the device (file-name label -> limits): what a CPU check of a shipped table uses.
# The H200 has the H100's opt-in shared memory (227 KiB) and SM count (132).
OFFLINE_LIMITS = {
    "NVIDIA_H100_80GB_HBM3": legality.H100,
    "NVIDIA_H200": legality.DeviceLimits(name="NVIDIA H200", smem_optin_bytes=232448, sm_count=132),
    INTERPRETER_DEVICE: legality.INTERPRETER,
}
_HEURISTIC_CACHE_MAX = 4096  # distinct T per resolution whose heuristic answer is kept

_OVERRIDE: ContextVar[MoEConfig | None] = ContextVar("mxmoe_override", default=None)


@contextmanager
def override(config: MoEConfig) -> Iterator[MoEConfig]:
    """`with mxmoe.override(cfg):` makes every moe() call inside use `cfg` (e.g. the sweep's candidate)."""
    token = _OVERRIDE.set(config)
    try:
        yield config
    finally:
        _OVERRIDE.reset(token)


def forced() -> MoEConfig | None:
    """The config a `with mxmoe.override(cfg):` block in force forces, or None."""
    return _OVERRIDE.get()


def interpreter_active() -> bool:
    """Exactly Triton's own test (`TRITON_INTERPRET == "1"`), so rows are tagged as the kernels really ran."""
    return os.environ.get("TRITON_INTERPRET") == "1"


@dataclass(frozen=True, eq=False)
class Environment:
    """What dispatch read from the environment (`$MXMOE_CONFIG_DIR`, `TRITON_INTERPRET`), once: at the first lookup
    and again after `clear_cache()`. Why not every call: the two reads cost about 1 us each, a fifth of a moe()
    call's host budget (issue 22), and Triton fixes interpretation when the kernels are decorated anyway. Compared
    by identity (eq=False): moe()'s per-call plan cache keys on it, so a cleared cache's entries are never hit."""

    config_dir: str | None
    interpreter: bool


@functools.lru_cache(maxsize=1)
def environment() -> Environment:
    """The environment snapshot dispatch answers under (taken on first use; `clear_cache()` retakes it)."""
    return Environment(os.environ.get(CONFIG_DIR_ENV), interpreter_active())


@functools.lru_cache(maxsize=1)
def running_versions() -> tuple[str | None, str]:
    """(triton version, kernel source hash) of this process: what a table's metadata must name."""
    try:
        triton_version: str | None = importlib.metadata.version("triton")
    except importlib.metadata.PackageNotFoundError:
        triton_version = None
    return triton_version, kernel_source_hash()


@functools.lru_cache(maxsize=1)
def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


@functools.lru_cache(maxsize=16)
def _gpu_name(index: int) -> str:
    import torch

    return torch.cuda.get_device_name(index)


def running_device() -> str | None:
    """The name tables are filed under: the CUDA device's name, `interpreter`, or None (no GPU)."""
    if environment().interpreter:
        return INTERPRETER_DEVICE
    if not _cuda_available():
        return None
    import torch

    return _gpu_name(torch.cuda.current_device())


def device_limits(device: str) -> legality.DeviceLimits:
    """The legality limits of `device`: the interpreter's, or the running GPU's own properties."""
    if device == INTERPRETER_DEVICE:
        return legality.INTERPRETER
    return _gpu_limits(device)


@functools.lru_cache(maxsize=8)
def _gpu_limits(device: str) -> legality.DeviceLimits:
    import torch

    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    if props.name != device:
        raise ValueError(f"limits of {device!r} asked on a process running {props.name!r}")
    return legality.limits_from_properties(props.name, props.shared_memory_per_block_optin,
                                           props.multi_processor_count)


def config_dirs() -> tuple[FsPath, ...]:
    """Where tables are looked up, in order: $MXMOE_CONFIG_DIR, then the packaged tuned/."""
    user = environment().config_dir
    return (FsPath(user), TUNED_DIR) if user else (TUNED_DIR,)


def mismatch(table: TunedTable) -> str | None:
    """Why this process would refuse `table` as a whole (triton version, kernel source hash), or None."""
    triton_version, kernel_hash = running_versions()
    if table.triton_version != triton_version:
        return f"made with triton {table.triton_version}, running {triton_version}"
    if table.kernel_hash != kernel_hash:
        return f"made for kernel source {str(table.kernel_hash)[:12]}, running {kernel_hash[:12]}"
    return None


# ---- legality: the one rule for what moe() may launch --------------------------------------------------------


def launchable(shape: MoEShape, path: Path | str, cfg: MoEConfig, limits: legality.DeviceLimits,
               tokens: int | None = None) -> tuple[int, legality.Illegal] | None:
    """None when both stages of `cfg` may launch on `limits`; else (stage, verdict) of the first refused stage
    (`legality.refusal` for a launch the runtime was asked for: DEGENERATE does not refuse it)."""
    for stage, tile in ((1, cfg.stage1), (2, cfg.stage2)):
        verdict = legality.refusal(shape, path, stage, tile, limits, tokens, degenerate_refuses=False)
        if verdict is not None:
            return stage, verdict
    return None


def refusal_text(stage: int, cfg: MoEConfig, verdict: legality.Illegal) -> str:
    tile = cfg.stage1 if stage == 1 else cfg.stage2
    return f"stage {stage} {tile.short()} illegal: {verdict.reason.value} ({verdict.detail})"


_EXPLICIT: dict[tuple[Any, ...], str | None] = {}


def check_explicit(shape: MoEShape, path: Path, cfg: Any) -> None:
    """Refuse a config passed to moe(config=...) that `launchable` refuses on the running device (ValueError
    naming the reason code), or that is no MoEConfig (TypeError). Cached per (shape, path, config, device)."""
    if type(cfg) is not MoEConfig:
        if isinstance(cfg, dict):
            raise TypeError("config is a dict: pass MoEConfig.from_dict(config) (or a MoEConfig) to moe()")
        if not isinstance(cfg, MoEConfig):
            raise TypeError(f"config must be a MoEConfig or None, got {type(cfg).__name__}")
    device = running_device()
    if device is None:
        return  # nothing can launch here: the kernels' own check says so
    key = (shape.experts, shape.inter, shape.hidden, shape.topk, path, device, cfg)
    why = _EXPLICIT.get(key, False)
    if why is False:
        refused = launchable(shape, path, cfg, device_limits(device))
        why = None if refused is None else refusal_text(refused[0], cfg, refused[1])
        _EXPLICIT[key] = why
    if why is not None:
        raise ValueError(f"moe(config=...): {why} on {device}")


# ---- resolution: each (shape, path, device, folder) once ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResolvedTable:
    """One usable table, legality-checked: sorted T buckets, each with its config, or None where the entry was
    refused (that T falls through to the next folder, then the heuristic)."""

    file: str
    buckets: tuple[int, ...]
    configs: tuple[MoEConfig | None, ...]

    def lookup(self, tokens: int) -> MoEConfig | None:
        i = bisect.bisect_left(self.buckets, tokens)
        return self.configs[i if i < len(self.configs) else -1]


@dataclass(slots=True)
class Resolution:
    """What dispatch decided for one (shape, path, device, folders): the usable tables in lookup order, the
    problems found on the way (one sentence per refused file or entry), and the heuristic's answers per (T, whether
    the weights carry the e4m3 layout)."""

    tables: tuple[ResolvedTable, ...]
    problems: tuple[str, ...]
    heuristic: dict[tuple[int, bool], MoEConfig]


def resolve_table(file: str | os.PathLike[str], shape: MoEShape, path: Path | str, limits: legality.DeviceLimits,
                  mtime_ns: int | None = None) -> tuple[ResolvedTable | None, list[str]]:
    """Read `file` as this process would use it for (shape, path) on `limits`: the legality-checked table (None
    when the file is refused as a whole) and one problem sentence per refusal. Reads the file once."""
    path = Path(path)
    table = load_table(file, mtime_ns)
    why = table if isinstance(table, str) else mismatch(table)
    if why is not None:
        return None, [f"tuned table {os.fspath(file)} not used: {why}"]
    assert isinstance(table, TunedTable)
    problems, configs = [], []
    for bucket, cfg in zip(table.buckets, table.configs, strict=True):
        refused = launchable(shape, path, cfg, limits, tokens=max(1, bucket))
        if refused is not None:
            problems.append(f"tuned table {os.fspath(file)} not used: entry T={bucket}: "
                            f"{refusal_text(refused[0], cfg, refused[1])}")
        configs.append(None if refused is not None else cfg)
    return ResolvedTable(os.fspath(file), table.buckets, tuple(configs)), problems


def _resolve(shape: MoEShape, path: Path, device: str | None) -> Resolution:
    tables, problems = [], []
    if device is not None:
        name = table_filename(shape, path, device)
        for folder in config_dirs():
            file = folder / name
            try:  # the one stat of this file in this resolution
                mtime_ns = file.stat().st_mtime_ns
            except OSError:
                continue
            resolved, found = resolve_table(file, shape, path, device_limits(device), mtime_ns)
            problems += found
            if resolved is not None:
                tables.append(resolved)
    for why in problems:
        # stacklevel=1 files every warning under this line; a resolution happens once, so each warns once
        warnings.warn(f"mxmoe: {why}; falling back", RuntimeWarning, stacklevel=1)
    return Resolution(tuple(tables), tuple(problems), {})


_RESOLVED: dict[tuple[Any, ...], Resolution] = {}


def resolution(shape: MoEShape, path: Path | str, device: str | None = None) -> Resolution:
    """The cached resolution for (shape, path, device) under the environment snapshot's $MXMOE_CONFIG_DIR."""
    path = path if type(path) is Path else Path(path)
    if device is None:
        device = running_device()
    key = (shape.experts, shape.inter, shape.hidden, shape.topk, shape.activation, path, device)
    res = _RESOLVED.get(key)
    if res is None:
        res = _RESOLVED[key] = _resolve(shape, path, device)
    return res


def clear_cache() -> None:
    """Forget every resolution, parsed table, explicit-config verdict, running version and the environment
    snapshot: the next call starts over as a fresh process would (for tests, after editing a table in a running
    process, and after changing $MXMOE_CONFIG_DIR or TRITON_INTERPRET in one)."""
    environment.cache_clear()
    _RESOLVED.clear()
    _EXPLICIT.clear()
    clear_parsed()
    running_versions.cache_clear()
    _cuda_available.cache_clear()
    _gpu_name.cache_clear()


def tuned_config(shape: MoEShape, path: Path | str, tokens: int, device: str | None = None) -> MoEConfig | None:
    """The tuned entry for this launch, or None (no usable table: the caller takes the heuristic)."""
    device = running_device() if device is None else device
    if device is None:
        return None
    return _tuned_entry(resolution(shape, path, device), tokens)


def _tuned_entry(res: Resolution, tokens: int) -> MoEConfig | None:
    """The first usable table entry for `tokens` in lookup order, or None."""
    for table in res.tables:
        cfg = table.lookup(tokens)
        if cfg is not None:
            return cfg
    return None


def choose_config(shape: MoEShape, path: Path | str, tokens: int, *, e4m3: bool = False) -> MoEConfig:
    """The config a moe() call with config=None launches: after the first call, a dict lookup and a bisect.
    `e4m3`: the weights carry the e4m3 layout (the heuristic may then take the e4m3 stage 1)."""
    forced = _OVERRIDE.get()
    if forced is not None:
        return forced
    res = resolution(shape, path)
    cfg = _tuned_entry(res, tokens)
    if cfg is not None:
        return cfg
    cfg = res.heuristic.get((tokens, e4m3))
    if cfg is None:
        cfg = default_config(shape, path, tokens, interpreter=environment().interpreter, e4m3=e4m3)
        if len(res.heuristic) < _HEURISTIC_CACHE_MAX:
            res.heuristic[(tokens, e4m3)] = cfg
    return cfg


# ---- the check CI runs on shipped tables ---------------------------------------------------------------------


def table_problems(file: str | os.PathLike[str]) -> list[str]:
    """Every reason this process would refuse any part of the table `file`, judged for the device its name
    names (limits from OFFLINE_LIMITS, or the running GPU's when that is the device): an unparsable name, an
    unknown device, an unreadable or stale table, an illegal entry. Empty when every entry would be used."""
    file = FsPath(file)
    m = TABLE_NAME.fullmatch(file.name)
    if m is None:
        return [f"{file.name}: not a table file name (E=...,N=...,H=...,topk=...,path=...,device_name=....json)"]
    try:
        path = Path(m["path"])
        # the name carries no activation or bias; legality reads neither
        shape = MoEShape("table", int(m["E"]), int(m["topk"]), int(m["H"]), int(m["N"]), Activation.SILU)
    except ValueError as exc:
        return [f"{file.name}: {exc}"]
    label = m["device"]
    limits = OFFLINE_LIMITS.get(label)
    if limits is None:
        running = running_device()
        if running is not None and running != INTERPRETER_DEVICE and device_label(running) == label:
            limits = device_limits(running)
    if limits is None:
        return [f"{file.name}: no known limits for device {label!r} (known: {sorted(OFFLINE_LIMITS)})"]
    return resolve_table(file, shape, path, limits)[1]
