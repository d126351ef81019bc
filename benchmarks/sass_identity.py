"""A fingerprint of the sm_90 SASS of every kernel the layer launches at each point, to show that a change leaves
the compiled default path as it was (no GPU; run without TRITON_INTERPRET):

    git worktree add /tmp/base REV
    PYTHONPATH=/tmp/base/src python /tmp/base/benchmarks/sass_identity.py deepseek-v3:8192 > base.txt  # or this file
    PYTHONPATH=src python benchmarks/sass_identity.py deepseek-v3:8192 > head.txt && diff base.txt head.txt

Why: the register-A wgmma hazard of Triton 3.6 (docs/architecture.md, "Known hazard") depends on where ptxas puts
registers, so the shipped kernels are the ones the GPU suite passed, instruction for instruction; a source change
meant for another path (a lever's constexpr with a default) must leave the default kernels' SASS unchanged, and a
kernel-hash change alone (mxmoe.source_hash) cannot say that. The fingerprint is a sha1 of the SASS text with the
addresses stripped. Points are wgmma_hazard.py's MODEL:T[:PATH].
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from pathlib import Path as FsPath

_ADDRESS = re.compile(r"/\*[0-9a-f]{4,}\*/")


def fingerprint(listing: str) -> str:
    """sha1 (12 hex digits) of a `cuobjdump -sass` listing's instructions, their addresses removed."""
    body = "\n".join(_ADDRESS.sub("", line) for line in listing.splitlines() if _ADDRESS.search(line))
    return hashlib.sha1(body.encode()).hexdigest()[:12]


def main(argv: list[str]) -> int:
    os.environ.pop("TRITON_INTERPRET", None)
    sys.path.insert(0, str(FsPath(__file__).resolve().parent))
    import wgmma_hazard

    from mxmoe.shapes import Path
    from mxmoe.tuning.sweep.compile_check.sm90 import compile_sm90, sass

    for point in argv:
        model, t, *rest = point.split(":")
        _, calls = wgmma_hazard._launches(model, int(t), Path(rest[0]) if rest else Path.A16W4)
        for kernel, args, meta in calls:
            meta = {k: v for k, v in meta.items() if k not in ("launch_pdl", "launch_cooperative_grid")}
            code = sass(compile_sm90(kernel, args, meta).asm["cubin"])
            print(f"{point} {kernel.fn.__name__} {fingerprint(code)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
