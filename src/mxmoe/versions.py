"""The dependency versions mxmoe is known to work with, and what a version outside them breaks.

No torch or triton import here (versions are read from package metadata), so `mxmoe doctor` can say what is wrong
even when torch or triton cannot import. pyproject.toml holds the same ranges for pip; constraints.txt pins the
exact versions CI installs.
"""

from __future__ import annotations

import importlib.metadata
import re
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Requirement:
    """`package` works for versions in [low, high) (tuples of ints); `breaks` says what fails outside them."""

    package: str
    low: tuple[int, ...]
    high: tuple[int, ...]
    breaks: str
    optional: bool = False  # missing is fine (an extra); a version outside the range is still reported
    interpreter_only: bool = False  # only the CPU interpreter path needs the range


REQUIREMENTS = (
    Requirement("torch", (2, 11), (2, 14), "the tested range: 2.11 (the GPU image) to 2.13 (the CPU wheel)"),
    Requirement("triton", (3, 6), (3, 7), "the kernels, their legality model and layouts are written for Triton 3.6"),
    Requirement("numpy", (1, 26), (2, 4), "numpy 2.4 makes every Triton 3.6 interpreter launch raise TypeError",
                interpreter_only=True),
    Requirement("ml_dtypes", (0, 5), (0, 8), "the MX oracle of the tests (float32 -> e2m1 / e4m3 rounding)",
                optional=True),
    Requirement("matplotlib", (3, 8), (4,), "the report's plots", optional=True),
    Requirement("nvidia-ml-py", (12,), (14_000,), "GPU clocks, power and throttle reasons in every measurement",
                optional=True),
)


def _parse(version: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", version.split("+")[0])[:3])


def check(req: Requirement, *, interpreter: bool = True) -> tuple[str | None, str | None]:
    """(installed version or None, a problem sentence or None). `interpreter=False` (a GPU machine) skips the
    ranges only the interpreter needs."""
    try:
        version = importlib.metadata.version(req.package)
    except importlib.metadata.PackageNotFoundError:
        return None, None if req.optional else f"{req.package} is not installed: {req.breaks}"
    v = _parse(version)
    if req.interpreter_only and not interpreter:
        return version, None
    if not req.low <= v < req.high:
        span = f">={'.'.join(map(str, req.low))},<{'.'.join(map(str, req.high))}"
        return version, f"{req.package} {version} is outside {span}: {req.breaks}"
    return version, None
