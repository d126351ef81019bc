"""The kernel source hash: the one fingerprint that ties a measurement or a tuned table to kernel code.

No torch or triton here. The runtime (`dispatch.py`, to check a tuned table on load) and the harness
(`tuning/timing/provenance.py`, to key ledger rows) both call `kernel_source_hash`, so a table exported from
a sweep is accepted exactly when the kernels that run are the kernels that were measured.

The hash means "compiles to the same code": it covers what the compiler sees, the code of every module
under kernels/ with comments, docstrings and formatting removed (`normalized_source`: the module parsed
by `ast`, every string statement dropped, printed back by `ast.unparse`). Editing a comment, a docstring,
blank lines or line wrapping keeps it; any change to code, names or constants moves it. docs/kernel-identity.md
says why and where the rule stops.
"""

from __future__ import annotations

import ast
import functools
import hashlib
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent  # src/mxmoe
KERNELS_DIR = PACKAGE_DIR / "kernels"


class _DropStrings(ast.NodeTransformer):
    """Removes every statement that is only a string constant: docstrings and bare strings (no-ops to Python
    and to Triton's code generator alike)."""

    def visit_Expr(self, node: ast.Expr) -> ast.AST | None:
        if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            return None
        return self.generic_visit(node)


def normalized_source(text: str) -> str:
    """The code of one module as the hash sees it: comments, docstrings and layout removed.

    A module that does not parse (it cannot be imported either) is returned as it is, so the key is still stable.
    """
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return text
    tree = _DropStrings().visit(tree)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and not body and not isinstance(node, ast.Module):
            node.body = [ast.Pass()]  # a def or block that held only a docstring
    return ast.unparse(tree) + "\n"


@functools.lru_cache(maxsize=256)
def _normalized_bytes(raw: bytes) -> bytes:
    """Keyed on the file's bytes, so an edit is always seen and an unchanged module is parsed once per process."""
    return normalized_source(raw.decode("utf-8")).encode()


def kernel_source_hash(kernels_dir: Path | None = None) -> str:
    """sha256 over every .py file under kernels/, in sorted relative-path order, each as
    `path NUL normalized code NUL` (so a rename changes the hash). A missing or empty folder hashes to
    sha256 of nothing: a stable key, which no real kernel tree can produce."""
    root = KERNELS_DIR if kernels_dir is None else Path(kernels_dir)
    digest = hashlib.sha256()
    if root.is_dir():
        files = sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)
        for path in files:
            digest.update(path.relative_to(root).as_posix().encode() + b"\0")
            digest.update(_normalized_bytes(path.read_bytes()) + b"\0")
    return digest.hexdigest()
