"""DESIGN.md's import contracts, checked on the source and in a fresh interpreter.

- The runtime (everything under src/mxmoe but `tuning/` and the `cli` that fronts both) never imports
  `mxmoe.tuning`: users who serve import the runtime alone.
- `kernels/` never imports `heuristic` or `dispatch`: a launch takes a TileConfig, it never chooses one.
- The starred modules import neither torch nor triton, so the sweep driver, the CLI and CPU tests load them
  instantly.
Static checks read every import statement (also the ones inside functions) with `ast`; relative imports are
resolved against the module's package.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from import_graph import imported_names

SRC = Path(__file__).resolve().parents[1] / "src" / "mxmoe"
STARRED = ("mxmoe.shapes", "mxmoe.spec", "mxmoe.config", "mxmoe.space", "mxmoe.legality", "mxmoe.heuristic",
           "mxmoe.tuning.judge.gate")


def _imports(path: Path) -> set[str]:
    """Absolute names of every module `path` imports (from-imports also name `package.attr`)."""
    return imported_names(path, SRC)


def _sources(under: Path) -> list[Path]:
    return sorted(p for p in under.rglob("*.py") if "__pycache__" not in p.parts)


RUNTIME = [p for p in _sources(SRC) if not {"tuning", "cli"} & set(p.relative_to(SRC).parts)]


def _hits(imports: set[str], banned: str) -> list[str]:
    return sorted(i for i in imports if i == banned or i.startswith(banned + "."))


@pytest.mark.parametrize("path", RUNTIME, ids=lambda p: str(p.relative_to(SRC)))
def test_runtime_never_imports_the_harness(path):
    assert not _hits(_imports(path), "mxmoe.tuning"), f"{path.relative_to(SRC)} imports the harness"


@pytest.mark.parametrize("path", _sources(SRC / "kernels"), ids=lambda p: p.name)
def test_kernels_never_choose_a_config(path):
    imports = _imports(path)
    assert not _hits(imports, "mxmoe.heuristic") + _hits(imports, "mxmoe.dispatch"), path.name


def test_the_static_check_sees_relative_and_nested_imports(tmp_path, monkeypatch):
    pkg = tmp_path / "mxmoe" / "kernels"
    pkg.mkdir(parents=True)
    f = pkg / "bad.py"
    f.write_text("def late():\n    from ..tuning import measure\n    import mxmoe.dispatch\n")
    monkeypatch.setattr(sys.modules[__name__], "SRC", tmp_path / "mxmoe")
    assert {"mxmoe.tuning", "mxmoe.tuning.measure", "mxmoe.dispatch"} <= _imports(f)


def test_starred_modules_import_neither_torch_nor_triton():
    code = (f"import sys; import {', '.join(STARRED)}; "
            "bad = [m for m in ('torch', 'triton') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
