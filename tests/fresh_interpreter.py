"""Run Python in a fresh interpreter without TRITON_INTERPRET, as the --cpu-compile worker runs: kernels decorated
under the interpreter (which the CPU test session sets) cannot be compiled for sm_90. Shared by the tests that read
sm_90 code from a CPU machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path as FsPath
from typing import Any

SRC = FsPath(__file__).resolve().parents[1] / "src"


def run_without_interpreter(*argv: str, timeout: int = 600) -> str:
    """stdout of `python *argv` with TRITON_INTERPRET unset and src/ first on PYTHONPATH; a failed run fails the
    calling test with the end of its stderr."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH")) if p)
    proc = subprocess.run([sys.executable, *argv], capture_output=True, text=True, env=env, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def last_json(stdout: str) -> Any:
    """The JSON value on the last line of `stdout` (the tasks print their result last)."""
    return json.loads(stdout.strip().splitlines()[-1])
