"""Provenance: everything needed to say which code, on which GPU, under which settings, made a number.

torch-free at import: `kernel_source_hash()` keys sweep rows and dispatch tables, so the sweep driver
and the CLI call it without loading torch; it lives in the runtime's `mxmoe.source_hash` (dispatch
checks tables with it and must not import the harness) and is re-exported here.
`collect_provenance` imports torch lazily for its CUDA version. git runs through subprocess with
argument lists (never a shell). A field that cannot be read is None and listed by `missing_fields`;
a record with any missing field, or built from a dirty tree, is not claimable (DESIGN.md: "every
measurement's provenance is clean").
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mxmoe._version import __version__ as MXMOE_VERSION
from mxmoe.shapes import MoEShape
from mxmoe.source_hash import KERNELS_DIR as KERNELS_DIR  # re-exported: the hash moved to the runtime
from mxmoe.source_hash import PACKAGE_DIR, kernel_source_hash
from mxmoe.tuning.timing.gpu_state import GpuState

PROVENANCE_SCHEMA_VERSION = 1
# Variables that change what code is generated or which config runs: Triton's compiler knobs,
# CUDA's device selection and launch behaviour, cuBLAS's TF32 override, and mxmoe's own
# (MXMOE_CONFIG_DIR picks the tuned tables, so it changes the kernel that runs).
CODEGEN_ENV_PREFIXES = ("TRITON_", "CUDA_", "MXMOE_")
CODEGEN_ENV_NAMES = ("NVIDIA_TF32_OVERRIDE",)
# Fields that may legitimately be empty: no codegen variable set is a valid environment.
_MAY_BE_EMPTY = frozenset({"env"})
_GIT_TIMEOUT_S = 30


def _git(repo: Path, *args: str) -> bytes | None:
    """Output of `git -C repo args`, or None where git is missing or the folder is no repository."""
    try:
        done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, check=False, timeout=_GIT_TIMEOUT_S)
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


@dataclass(frozen=True, slots=True)
class GitInfo:
    commit: str | None
    branch: str | None  # "HEAD" when detached
    dirty: bool | None
    diff_sha256: str | None


def git_info(repo_root: Path | None = None) -> GitInfo:
    """Commit, branch, dirtiness and a hash of the uncommitted changes.

    dirty: `git status --porcelain` is non-empty (untracked, non-ignored files count: they may be
    imported). diff_sha256: sha256 of `git diff HEAD --binary` followed by each untracked file's
    path and bytes, so two different dirty trees never share a hash.
    """
    root_out = _git(Path(repo_root) if repo_root else PACKAGE_DIR, "rev-parse", "--show-toplevel")
    if root_out is None:
        return GitInfo(None, None, None, None)
    root = Path(root_out.decode().strip())
    commit = _git(root, "rev-parse", "HEAD")
    branch = _git(root, "rev-parse", "--abbrev-ref", "HEAD")
    status = _git(root, "status", "--porcelain")
    diff = _git(root, "diff", "HEAD", "--binary")
    untracked = _git(root, "ls-files", "--others", "--exclude-standard", "-z")
    diff_sha = None
    if diff is not None and untracked is not None:
        digest = hashlib.sha256(diff)
        for name in sorted(n for n in untracked.split(b"\0") if n):
            path = root / name.decode()
            digest.update(b"\0untracked\0" + name + b"\0")
            if path.is_file():
                digest.update(path.read_bytes())
        diff_sha = digest.hexdigest()
    return GitInfo(
        commit=commit.decode().strip() if commit else None,
        branch=branch.decode().strip() if branch else None,
        dirty=None if status is None else bool(status.strip()),
        diff_sha256=diff_sha,
    )


def codegen_env(environ: dict[str, str] | None = None) -> tuple[tuple[str, str], ...]:
    """The (name, value) pairs of the variables that change code generation, sorted by name."""
    env = os.environ if environ is None else environ
    keep = [(k, v) for k, v in env.items() if k.startswith(CODEGEN_ENV_PREFIXES) or k in CODEGEN_ENV_NAMES]
    return tuple(sorted(keep))


def _dist_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _torch_versions() -> tuple[str | None, str | None]:
    """(torch.__version__, torch.version.cuda); imported lazily so this module stays torch-free."""
    try:
        import torch
    except ImportError:
        return None, None
    return str(torch.__version__), torch.version.cuda


def shape_label(shape: MoEShape | str) -> str:
    """A shape written with its dimensions, so a record stays exact if MODELS changes later."""
    if isinstance(shape, str):
        return shape
    s = shape
    extra = "".join(f",{flag}" for flag in ("bias", "shared_expert") if getattr(s, flag))
    return f"{s.name}:E={s.experts},topk={s.topk},H={s.hidden},I={s.inter},{s.activation.value}{extra}"


def dtype_label(dtype: object) -> str:
    """'bfloat16' for torch.bfloat16 or the string 'bfloat16' alike."""
    return str(dtype).removeprefix("torch.")


@dataclass(frozen=True, slots=True)
class Provenance:
    """Where a number came from. None (or an empty tuple) means unknown: see `missing_fields`."""

    git_commit: str | None
    git_branch: str | None
    git_dirty: bool | None
    git_diff_sha256: str | None
    mxmoe_version: str | None
    kernel_source_hash: str | None
    python_version: str | None
    torch_version: str | None
    triton_version: str | None
    cuda_version: str | None
    driver_version: str | None
    gpu_name: str | None
    gpu_uuid: str | None
    sm_clock_mhz: int | None
    mem_clock_mhz: int | None
    clocks_locked: bool | None
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    utc_time: str | None
    seeds: tuple[int, ...]
    shapes: tuple[str, ...]
    dtypes: tuple[str, ...]

    @property
    def claimable(self) -> bool:
        return not provenance_checks(self)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        for key in ("argv", "seeds", "shapes", "dtypes"):
            d[key] = list(d[key])
        d["env"] = dict(self.env)
        d["schema"] = PROVENANCE_SCHEMA_VERSION
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Provenance:
        d = dict(d)
        if d.pop("schema", None) != PROVENANCE_SCHEMA_VERSION:
            raise ValueError(f"Provenance schema must be {PROVENANCE_SCHEMA_VERSION}")
        names = {f.name for f in fields(cls)}
        if set(d) != names:
            raise ValueError(
                f"Provenance fields differ: unknown {sorted(set(d) - names)}, missing {sorted(names - set(d))}"
            )
        for key in ("argv", "shapes", "dtypes"):
            d[key] = tuple(str(x) for x in d[key])
        d["seeds"] = tuple(int(x) for x in d["seeds"])
        d["env"] = tuple(sorted((str(k), str(v)) for k, v in d["env"].items()))
        return cls(**d)


def missing_fields(prov: Provenance) -> list[str]:
    """Names of the fields that are None, or empty where a value is required."""
    missing = []
    for f in fields(prov):
        value = getattr(prov, f.name)
        if value is None or (f.name not in _MAY_BE_EMPTY and value in ((), "")):
            missing.append(f.name)
    return missing


def provenance_checks(prov: Provenance) -> tuple[str, ...]:
    """Reason codes that make a record non-claimable: `provenance:missing:<field>`, `provenance:dirty`."""
    codes = [f"provenance:missing:{name}" for name in missing_fields(prov)]
    if prov.git_dirty:
        codes.append("provenance:dirty")
    return tuple(codes)


def collect_provenance(
    *,
    argv: Sequence[str],
    seeds: Iterable[int],
    shapes: Iterable[MoEShape | str],
    dtypes: Iterable[object],
    gpu_state: GpuState | None,
    repo_root: Path | str | None = None,
) -> Provenance:
    """Read everything now. `gpu_state` is a `read_gpu_state` result (None or unavailable: GPU fields
    missing); `repo_root` defaults to the checkout that holds this package."""
    git = git_info(Path(repo_root) if repo_root is not None else None)
    gpu = gpu_state if gpu_state is not None and gpu_state.available else None
    torch_version, cuda_version = _torch_versions()
    return Provenance(
        git_commit=git.commit,
        git_branch=git.branch,
        git_dirty=git.dirty,
        git_diff_sha256=git.diff_sha256,
        mxmoe_version=MXMOE_VERSION,
        kernel_source_hash=kernel_source_hash(),
        python_version=platform.python_version(),
        torch_version=torch_version,
        triton_version=_dist_version("triton"),
        cuda_version=cuda_version,
        driver_version=gpu.driver_version if gpu else None,
        gpu_name=gpu.name if gpu else None,
        gpu_uuid=gpu.uuid if gpu else None,
        sm_clock_mhz=gpu.sm_clock_mhz if gpu else None,
        mem_clock_mhz=gpu.mem_clock_mhz if gpu else None,
        clocks_locked=gpu.clocks_locked if gpu else None,
        argv=tuple(str(a) for a in argv),
        env=codegen_env(),
        utc_time=datetime.now(UTC).isoformat(timespec="seconds"),
        seeds=tuple(int(s) for s in seeds),
        shapes=tuple(shape_label(s) for s in shapes),
        dtypes=tuple(dtype_label(d) for d in dtypes),
    )
