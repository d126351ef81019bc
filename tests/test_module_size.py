"""Every module under src/mxmoe stays at most 400 lines (issue 25: small modules with one job).

A module that grows past the limit has taken on a second job: split it along its seam into a module with a
docstring saying why it exists, and re-export what importers use, rather than raising the limit.
"""

from __future__ import annotations

from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "mxmoe"
MAX_LINES = 400


def test_no_module_exceeds_the_line_limit():
    sizes = {p: len(p.read_text(encoding="utf-8").splitlines()) for p in sorted(SRC.rglob("*.py"))
             if "__pycache__" not in p.parts}
    over = [f"{p.relative_to(SRC.parent)}: {n} lines" for p, n in sizes.items() if n > MAX_LINES]
    assert not over, f"modules over {MAX_LINES} lines (split them along a seam): " + "; ".join(over)
