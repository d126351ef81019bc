"""No import cycles among the modules of src/mxmoe.

Why (issue 25): a newcomer must be able to read the harness bottom-up, each module after the ones it imports. A
cycle hides the direction: neither module of the loop can be read first, a lazy import inside a function is the
usual way one is patched over, and the next change that moves that import to the top breaks start-up. So the graph
counts every import statement, at module level and inside functions (read with `ast`, nothing is imported), the
way tests/test_import_contracts.py and tests/test_architecture.py read them.

Edges: `import a.b` is an edge to `a.b`; `from pkg import name` is an edge to `pkg.name` when that is a module of
the tree, else to `pkg`; relative imports are resolved against the importing module's package. Only modules under
src/mxmoe are nodes (a package is its `__init__.py`). A strongly connected component of more than one module, or a
module that imports itself, is a cycle.
"""

from __future__ import annotations

from pathlib import Path

from import_graph import module_name, statements

SRC = Path(__file__).resolve().parents[1] / "src" / "mxmoe"


def _modules(root: Path) -> dict[str, Path]:
    """{dotted name: file} of every module under `root` (a package named by its folder, e.g. `mxmoe.tuning`)."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        out[module_name(path, root)] = path
    return out


def _edges(path: Path, root: Path, known: set[str]) -> set[str]:
    """The modules of `known` that `path` imports, anywhere in the file."""
    out: set[str] = set()
    for base, names in statements(path, root):
        if not names:
            out.add(base)
        out.update(f"{base}.{a}" if f"{base}.{a}" in known else base for a in names)
    return out & known


def import_graph(root: Path = SRC) -> dict[str, set[str]]:
    """{module: modules it imports} over the tree at `root`."""
    modules = _modules(root)
    known = set(modules)
    return {name: _edges(path, root, known) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module, and the modules that import themselves
    (Tarjan's algorithm, iterative so that a deep graph cannot hit the recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in graph[node]:
                    found.append(sorted(component))
    return sorted(found)


def _describe(graph: dict[str, set[str]], component: list[str]) -> str:
    members = set(component)
    arrows = [f"{a} -> {b}" for a in component for b in sorted(graph[a] & members)]
    return f"{', '.join(component)}: " + "; ".join(arrows)


def test_no_import_cycles():
    graph = import_graph()
    found = cycles(graph)
    assert not found, "import cycles (each: its modules, then the imports inside it):\n" + "\n".join(
        _describe(graph, c) for c in found)


def test_the_graph_sees_nested_relative_and_from_imports(tmp_path):
    """The checker itself: a cycle closed only by a relative import inside a function is still found, a
    `from pkg import module` names the module, and a `from pkg import name` the package."""
    pkg = tmp_path / "mxmoe"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("HELPER = 1\n")
    (pkg / "a.py").write_text("from mxmoe.sub import b, HELPER\n")
    (pkg / "sub" / "b.py").write_text("def late():\n    from .. import a\n")
    (pkg / "c.py").write_text("import mxmoe.c\n")
    (pkg / "d.py").write_text("import mxmoe.a\n")
    graph = import_graph(pkg)
    assert graph["mxmoe.a"] == {"mxmoe.sub.b", "mxmoe.sub"}
    assert graph["mxmoe.sub.b"] == {"mxmoe.a"}
    assert cycles(graph) == [["mxmoe.a", "mxmoe.sub.b"], ["mxmoe.c"]]
