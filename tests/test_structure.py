"""The package's shape: no import cycle among raysys's modules (every import statement
counts, module-level or inside a function), and no file past ~500 lines."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "raysys"
MAX_LINES = 500


def module_imports(root: Path) -> dict[str, set[str]]:
    """{module: the package's modules it imports anywhere in its source}."""
    pkg = root.name
    mods, packages = {}, set()
    for path in root.rglob("*.py"):
        name = ".".join(path.relative_to(root.parent).with_suffix("").parts).removesuffix(".__init__")
        mods[name] = ast.parse(path.read_text(encoding="utf-8"))
        if path.name == "__init__.py":
            packages.add(name)
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for m, tree in mods.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.ImportFrom):  # relative: from the importing module's package up
                parts = m.split(".") if m in packages else m.split(".")[:-1]
                mod = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
                names = [mod] + [f"{mod}.{a.name}" for a in node.names]
            else:
                continue
            for n in names:
                # a package's own submodules import it (its __init__): not a cycle
                if n in mods and n != m and not m.startswith(n + ".") and n.startswith(pkg):
                    edges[m].add(n)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_the_scan_finds_a_cycle_hidden_in_a_function(tmp_path):
    pkg = tmp_path / "pkgx"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkgx.b import f\n")
    (pkg / "b.py").write_text("def f():\n    from pkgx import a\n    return a\n")
    (pkg / "c.py").write_text("import pkgx.a\n")
    (pkg / "d.py").write_text("from . import e\n")
    (pkg / "e.py").write_text("if True:\n    from .d import x\n")
    assert sorted(cycles(module_imports(pkg))) == [["pkgx.a", "pkgx.b"], ["pkgx.d", "pkgx.e"]]


def test_raysys_has_no_import_cycle():
    found = cycles(module_imports(PACKAGE))
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_no_file_is_over_500_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if (n := p.read_text(encoding="utf-8").count("\n")) > MAX_LINES}
    assert not long, long
