"""Load a `benchmarks/` script as a module (the folder is not a package), for the tests that run a benchmark's
CPU path or its helpers."""

from __future__ import annotations

import importlib.util
from pathlib import Path as FsPath
from types import ModuleType

BENCHMARKS = FsPath(__file__).resolve().parents[1] / "benchmarks"


def load(name: str) -> ModuleType:
    """benchmarks/<name>.py, executed afresh (a test that patches something first sees the patch)."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
