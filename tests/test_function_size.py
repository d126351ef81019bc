"""Every function under src/mxmoe stays at most 60 lines, `@triton.jit` kernels excepted (issue 25).

A function is counted from its `def` line to the last line of its body (decorators excluded, docstring and
signature included): what a reader holds in mind at once. A function past the limit does several things: split it
into named steps (its checks, its work, its output), rather than raising the limit.

Why kernels are exempt: a `@triton.jit` kernel is one GPU program. Its parameter list alone, grouped under
pointers, sizes, strides and meta-parameters (STYLE.md 10), takes a third of it; the rest shares register tiles and
constexprs across the prologue, main loop and epilogue, and Triton inlines every jit helper back into it, so
splitting it hides the data flow without making the program any smaller. Kernels are kept readable by their own
rule instead: one kernel a job, a struct of strides past ~30 parameters.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "mxmoe"
MAX_LINES = 60


def _is_triton_kernel(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """Decorated with `triton.jit` / `jit`, bare or called (`@triton.jit(do_not_specialize=...)`)."""
    for d in fn.decorator_list:
        target = d.func if isinstance(d, ast.Call) else d
        if ast.unparse(target) in ("triton.jit", "jit"):
            return True
    return False


def long_functions(root: Path, limit: int = MAX_LINES) -> list[str]:
    """`file:line name: N lines` for each function (methods and nested ones too) over `limit`, kernels excepted."""
    over = []
    for path in sorted(root.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and not _is_triton_kernel(node):
                lines = node.end_lineno - node.lineno + 1
                if lines > limit:
                    over.append(f"{path.relative_to(root.parent)}:{node.lineno} {node.name}: {lines} lines")
    return over


def test_no_function_exceeds_the_line_limit():
    over = long_functions(SRC)
    assert not over, f"functions over {MAX_LINES} lines (split them into named steps): " + "; ".join(over)


def _function(name: str, body_lines: int, decorators: tuple[str, ...] = ()) -> str:
    """A function whose `def` .. last body line spans 1 + body_lines lines, under `decorators`."""
    body = "".join(f"    x{i} = {i}\n" for i in range(body_lines))
    return "".join(f"@{d}\n" for d in decorators) + f"def {name}():\n" + body + "\n\n"


def test_the_check_fails_on_a_long_function_and_spares_kernels(tmp_path):
    """The check can fail: 61 lines fail and 60 pass, decorators do not count, methods and nested functions are
    counted, and a @triton.jit kernel of any length passes."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "a.py").write_text(
        "import triton\n\n"
        + _function("at_limit", MAX_LINES - 1, ("staticmethod",) * 5)
        + _function("over_limit", MAX_LINES)
        + _function("kernel", 3 * MAX_LINES, ("triton.jit",))
        + _function("called_kernel", 3 * MAX_LINES, ("triton.jit(do_not_specialize=['n'])",))
        + "class C:\n" + "".join("    " + line + "\n" for line in _function("method", MAX_LINES).splitlines())
    )
    over = long_functions(pkg)
    assert [entry.split(" ")[1].rstrip(":") for entry in over] == ["over_limit", "method"], over
    assert over[0].endswith(f": {MAX_LINES + 1} lines")
