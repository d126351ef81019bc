"""The kernel source hash: the one fingerprint that ties a measurement or a tuned table to kernel code.

No torch or triton here. The runtime (`dispatch.py`, to check a tuned table on load) and the harness
(`tuning/provenance.py`, to key ledger rows) both call `kernel_source_hash`, so a table exported from
a sweep is accepted exactly when the kernels that run are the kernels that were measured.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent  # src/mxmoe
KERNELS_DIR = PACKAGE_DIR / "kernels"


def kernel_source_hash(kernels_dir: Path | None = None) -> str:
    """sha256 over every .py file under kernels/, in sorted relative-path order, each as
    `path NUL content NUL` (so a rename changes the hash). A missing or empty folder hashes to
    sha256 of nothing: a stable key, which no real kernel tree can produce."""
    root = KERNELS_DIR if kernels_dir is None else Path(kernels_dir)
    digest = hashlib.sha256()
    if root.is_dir():
        files = sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)
        for path in files:
            digest.update(path.relative_to(root).as_posix().encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()
