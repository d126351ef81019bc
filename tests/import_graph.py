"""src/mxmoe's import statements, read with `ast` (nothing is imported), for the import tests.

One reader for tests/test_import_contracts.py, tests/test_import_cycles.py and tests/test_architecture.py, which
each had their own copy (one of them skipped relative imports). Every statement counts, at module level and
inside functions; relative imports are resolved against the importing module's package (a package is its
`__init__.py`, named by its folder).
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "mxmoe"


def module_name(path: Path, src: Path = SRC) -> str:
    """The dotted name of `path` under the package folder `src` (e.g. src/mxmoe/tuning/__init__.py -> mxmoe.tuning)."""
    rel = path.relative_to(src.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def statements(path: Path, src: Path = SRC) -> list[tuple[str, tuple[str, ...]]]:
    """(module, names) per import: `import a.b` is ("a.b", ()), `from p import x, y` is (p, ("x", "y")), with p
    absolute."""
    name = module_name(path, src)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: list[tuple[str, tuple[str, ...]]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(a.name, ()) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            out.append((base, tuple(a.name for a in node.names)))
    return out


def imported_names(path: Path, src: Path = SRC) -> set[str]:
    """Every name `path` imports a module as: the module of each statement, and for `from p import x` also p.x
    (x may be a module)."""
    out: set[str] = set()
    for base, names in statements(path, src):
        out.add(base)
        out.update(f"{base}.{n}" for n in names)
    return out
