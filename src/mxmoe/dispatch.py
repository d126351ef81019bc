"""Choose the tile config for a launch: a scoped override, else a tuned table, else the heuristic.

torch-free at import (torch is imported only to name the running GPU), and it never imports the
harness (`mxmoe.tuning`): tables are plain JSON that `tuning/export.py` writes.

Lookup, for a moe() call with config=None:
1. `with mxmoe.override(cfg):` (a ContextVar, never a module global) wins.
2. The table for (running GPU, shape, path), named by `table_filename`, in `$MXMOE_CONFIG_DIR` first,
   then in the packaged `mxmoe/tuned/`. A table is used only if its `_metadata` names the running
   triton version and kernel source hash (`mxmoe.source_hash`, the hash the sweep keyed its rows
   on); otherwise it warns once (Python's warnings registry dedups the stable message) and the
   next folder, then the heuristic, is tried. A live T between grid points takes the entry of the
   next grid point up; beyond the grid, the largest. An entry `legality.check` rejects for this
   device is never launched (warned once, then the fallback). DEGENERATE alone does not reject:
   legality calls it "legal, but only wastes work", and a measured best entry read at a T between
   grid points may be wasteful there yet is still the measured choice (the heuristic can be too).
3. `heuristic.default_config`.

Memoization (pure, allowed by STYLE.md rule 4): parsed tables are cached with functools.lru_cache
keyed on (file, mtime), so an edited file is re-read; the running versions and the GPU's limits are
cached once.
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import os
import re
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
from mxmoe.shapes import MoEShape, Path
from mxmoe.source_hash import kernel_source_hash

CONFIG_DIR_ENV = "MXMOE_CONFIG_DIR"
TUNED_DIR = FsPath(__file__).resolve().parent / "tuned"
TABLE_SCHEMA_VERSION = 1
INTERPRETER_DEVICE = "interpreter"  # the device name of tables exported from interpreter sweeps
METADATA_KEY = "_metadata"

_OVERRIDE: ContextVar[MoEConfig | None] = ContextVar("mxmoe_override", default=None)


@contextmanager
def override(config: MoEConfig) -> Iterator[MoEConfig]:
    """`with mxmoe.override(cfg):` makes every moe() call inside use `cfg` (e.g. the sweep's candidate)."""
    token = _OVERRIDE.set(config)
    try:
        yield config
    finally:
        _OVERRIDE.reset(token)


def interpreter_active() -> bool:
    """Exactly Triton's own test (`TRITON_INTERPRET == "1"`), so rows are tagged as the kernels really ran."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def device_label(device_name: str) -> str:
    """A GPU name as it appears in a file name: `NVIDIA H100 80GB HBM3` -> `NVIDIA_H100_80GB_HBM3`."""
    return re.sub(r"[^A-Za-z0-9.\-]+", "_", device_name.strip()).strip("_")


def table_filename(shape: MoEShape, path: Path | str, device_name: str) -> str:
    """`E=256,N=2048,H=7168,topk=8,path=a16w4,device_name=NVIDIA_H100_80GB_HBM3.json` (N is the inter)."""
    return (f"E={shape.experts},N={shape.inter},H={shape.hidden},topk={shape.topk},path={Path(path).value},"
            f"device_name={device_label(device_name)}.json")


@dataclass(frozen=True, slots=True)
class TunedTable:
    """A parsed table: grid points in ascending order, each with its config; the raw metadata."""

    buckets: tuple[int, ...]
    configs: tuple[MoEConfig, ...]
    triton_version: str | None
    kernel_hash: str | None

    def lookup(self, tokens: int) -> tuple[int, MoEConfig]:
        """(bucket, config): the first grid point >= tokens, or the largest one beyond the grid."""
        for bucket, cfg in zip(self.buckets, self.configs, strict=True):
            if bucket >= tokens:
                return bucket, cfg
        return self.buckets[-1], self.configs[-1]


def parse_table(data: dict[str, Any]) -> TunedTable:
    """Strict: every key but `_metadata` is a non-negative int T mapping to a MoEConfig dict."""
    meta = data.get(METADATA_KEY)
    if not isinstance(meta, dict):
        raise ValueError(f"table has no {METADATA_KEY} object")
    if meta.get("schema") != TABLE_SCHEMA_VERSION:
        raise ValueError(f"table schema {meta.get('schema')!r}, expected {TABLE_SCHEMA_VERSION}")
    entries = sorted((int(k), MoEConfig.from_dict(v)) for k, v in data.items() if k != METADATA_KEY)
    if not entries:
        raise ValueError("table holds no entries")
    if entries[0][0] < 0:
        raise ValueError(f"table bucket {entries[0][0]} is negative")
    return TunedTable(tuple(b for b, _ in entries), tuple(c for _, c in entries),
                      meta.get("triton_version"), meta.get("kernel_source_hash"))


@functools.lru_cache(maxsize=64)
def _load(file: str, mtime_ns: int) -> TunedTable | str:
    """The parsed table, or why it cannot be read; keyed on mtime so an edited file is re-read."""
    del mtime_ns  # part of the cache key only
    try:
        with open(file, encoding="utf-8") as fh:
            return parse_table(json.load(fh))
    except (OSError, ValueError, TypeError, KeyError) as exc:
        return f"unreadable ({type(exc).__name__}: {exc})"


@functools.lru_cache(maxsize=1)
def running_versions() -> tuple[str | None, str]:
    """(triton version, kernel source hash) of this process: what a table's metadata must name."""
    try:
        triton_version: str | None = importlib.metadata.version("triton")
    except importlib.metadata.PackageNotFoundError:
        triton_version = None
    return triton_version, kernel_source_hash()


def running_device() -> str | None:
    """The name tables are filed under: the CUDA device's name, `interpreter`, or None (no GPU)."""
    if interpreter_active():
        return INTERPRETER_DEVICE
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else None


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
    user = os.environ.get(CONFIG_DIR_ENV)
    return (FsPath(user), TUNED_DIR) if user else (TUNED_DIR,)


def _mismatch(table: TunedTable) -> str | None:
    triton_version, kernel_hash = running_versions()
    if table.triton_version != triton_version:
        return f"made with triton {table.triton_version}, running {triton_version}"
    if table.kernel_hash != kernel_hash:
        return f"made for kernel source {str(table.kernel_hash)[:12]}, running {kernel_hash[:12]}"
    return None


def _illegal(shape: MoEShape, path: Path, cfg: MoEConfig, tokens: int, device: str) -> str | None:
    limits = device_limits(device)
    for stage, tile in ((1, cfg.stage1), (2, cfg.stage2)):
        verdict = legality.check(shape, path, stage, tile, limits, tokens=tokens)
        if isinstance(verdict, legality.Illegal) and verdict.reason is not legality.Reason.DEGENERATE:
            return f"stage {stage} {tile.short()} illegal: {verdict.reason.value} ({verdict.detail})"
    return None


def _warn(file: FsPath, why: str) -> None:
    # stacklevel=1 files every warning under this line, so the registry dedups per (table, reason)
    warnings.warn(f"mxmoe: tuned table {file} not used: {why}; falling back", RuntimeWarning, stacklevel=1)


def tuned_config(shape: MoEShape, path: Path | str, tokens: int, device: str | None = None) -> MoEConfig | None:
    """The tuned entry for this launch, or None (no usable table: the caller takes the heuristic)."""
    path = Path(path)
    device = running_device() if device is None else device
    if device is None:
        return None
    name = table_filename(shape, path, device)
    for folder in config_dirs():
        file = folder / name
        try:
            mtime = file.stat().st_mtime_ns
        except OSError:
            continue
        table = _load(str(file), mtime)
        why = table if isinstance(table, str) else _mismatch(table)
        if why is None:
            bucket, cfg = table.lookup(tokens)
            why = _illegal(shape, path, cfg, tokens, device)
            if why is None:
                return cfg
            why = f"entry T={bucket}: {why}"
        _warn(file, why)
    return None


def choose_config(shape: MoEShape, path: Path, tokens: int) -> MoEConfig:
    """The config a moe() call with config=None launches."""
    forced = _OVERRIDE.get()
    if forced is not None:
        return forced
    tuned = tuned_config(shape, path, tokens)
    if tuned is not None:
        return tuned
    return default_config(shape, path, tokens, interpreter=interpreter_active())
