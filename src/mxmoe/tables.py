"""The tuned-table file format: the file name (`table_filename`, `TABLE_NAME`), the JSON schema
(`TABLE_SCHEMA_VERSION`, the `_metadata` object under `METADATA_KEY`, one MoEConfig per T) and its strict
parser (`parse_table` -> `TunedTable`), and the cached file read (`load_table`).

This module owns what a table file is; `dispatch.py` owns which table a launch uses and whether its entries may
launch, and `tuning/judge/export.py` writes the files. No torch or triton here, and it never imports the harness
(`mxmoe.tuning`) or `dispatch`: it may import `config` and `shapes` only.
"""

from __future__ import annotations

import bisect
import functools
import json
import os
import re
from dataclasses import dataclass
from typing import Any

from mxmoe.config import MoEConfig
from mxmoe.shapes import MoEShape, Path

TABLE_SCHEMA_VERSION = 1
METADATA_KEY = "_metadata"
TABLE_NAME = re.compile(r"E=(?P<E>\d+),N=(?P<N>\d+),H=(?P<H>\d+),topk=(?P<topk>\d+),path=(?P<path>[a-z0-9]+),"
                        r"device_name=(?P<device>[A-Za-z0-9.\-_]+)\.json")


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
        i = min(bisect.bisect_left(self.buckets, tokens), len(self.buckets) - 1)
        return self.buckets[i], self.configs[i]


def parse_table(data: Any) -> TunedTable:
    """Strict: a JSON object whose every key but `_metadata` is a non-negative int T mapping to a MoEConfig dict."""
    if not isinstance(data, dict):
        raise ValueError(f"table is a JSON {type(data).__name__}, not an object")
    meta = data.get(METADATA_KEY)
    if not isinstance(meta, dict):
        raise ValueError(f"table has no {METADATA_KEY} object")
    if meta.get("schema") != TABLE_SCHEMA_VERSION:
        raise ValueError(f"table schema {meta.get('schema')!r}, expected {TABLE_SCHEMA_VERSION}")
    entries = []
    for k, v in data.items():
        if k == METADATA_KEY:
            continue
        if not isinstance(v, dict):
            raise ValueError(f"entry {k!r} is a JSON {type(v).__name__}, not a config object")
        entries.append((int(k), MoEConfig.from_dict(v)))
    entries.sort(key=lambda e: e[0])
    if not entries:
        raise ValueError("table holds no entries")
    if entries[0][0] < 0:
        raise ValueError(f"table bucket {entries[0][0]} is negative")
    if len({b for b, _ in entries}) != len(entries):
        raise ValueError("table names one T twice")
    return TunedTable(tuple(b for b, _ in entries), tuple(c for _, c in entries),
                      meta.get("triton_version"), meta.get("kernel_source_hash"))


@functools.lru_cache(maxsize=64)
def _load(file: str, mtime_ns: int) -> TunedTable | str:
    """The parsed table, or why it cannot be read; keyed on mtime so an edited file is re-read."""
    del mtime_ns  # part of the cache key only
    try:
        with open(file, encoding="utf-8") as fh:
            return parse_table(json.load(fh))
    except (OSError, ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
        return f"unreadable ({type(exc).__name__}: {exc})"


def load_table(file: str | os.PathLike[str], mtime_ns: int | None = None) -> TunedTable | str:
    """The parsed table at `file`, or a sentence saying why it cannot be used as one (never raises). Pass the
    `mtime_ns` a caller already read to spare a second stat; an unchanged file is parsed once per process."""
    if mtime_ns is None:
        try:
            mtime_ns = os.stat(file).st_mtime_ns
        except OSError as exc:
            return f"unreadable ({type(exc).__name__}: {exc})"
    return _load(os.fspath(file), mtime_ns)


def clear_parsed() -> None:
    """Forget every parsed table (`dispatch.clear_cache` calls it)."""
    _load.cache_clear()
