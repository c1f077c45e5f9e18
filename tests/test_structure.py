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


# The layers, lowest first: a module may import its own layer and those below, never one
# above (the longest matching prefix names a module's layer).
LAYERS = [
    ("foundation", ["raysys.errors", "raysys.jsontypes", "raysys.io", "raysys.console", "raysys.stats",
                    "raysys.costs", "raysys.schema", "raysys.prompts", "raysys.perturb", "raysys.config"]),
    ("data", ["raysys.pools", "raysys.runs.keys", "raysys.runs.parts", "raysys.cluster"]),
    ("models", ["raysys.models"]),
    ("workers", ["raysys.scoring", "raysys.evaluation.metrics", "raysys.evaluation.evaluator",
                 "raysys.training"]),
    ("actor pool", ["raysys.actors"]),
    ("stage runs", ["raysys.scoring.pipeline", "raysys.scoring.report", "raysys.evaluation",
                    "raysys.selection", "raysys.training.trainer"]),
    ("stages", ["raysys.stages", "raysys.runs.workdir", "raysys.runs"]),
    ("loop", ["raysys.loop"]),
    ("experiments", ["raysys.experiments"]),
    ("cli", ["raysys.cli"]),
]


def layer_of(module: str) -> int:
    best, rank = "", None
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > len(best):
                best, rank = p, i
    if rank is None and module == "raysys":
        return 0
    assert rank is not None, f"{module} is in no layer: add it to LAYERS"
    return rank


def test_no_import_runs_up_the_layers():
    up = [f"{m} ({LAYERS[layer_of(m)][0]}) -> {n} ({LAYERS[layer_of(n)][0]})"
          for m, ns in module_imports(PACKAGE).items() for n in sorted(ns) if layer_of(n) > layer_of(m)]
    assert not up, up


def _sources() -> dict[str, str]:
    return {str(p.relative_to(PACKAGE)): p.read_text(encoding="utf-8") for p in PACKAGE.rglob("*.py")}


def test_one_actor_pool_one_stages_protocol_and_no_modules_named_in_strings():
    import re

    src = _sources()
    assert [f for f, s in src.items() if ".map_batches(" in s] == ["actors.py"]
    assert [f for f, s in src.items() if re.search(r"^class Stages\(Protocol\)", s, re.M)] == ["stages.py"]
    assert [f for f, s in src.items() if "TorchTrainer(" in s] == ["training/trainer.py"]
    assert not [f for f, s in src.items() if "importlib.import_module" in s or "__import__(" in s]
    named = {f: m for f, s in src.items() for m in re.findall(r"[\"']raysys(?:\.\w+)+:\w+[\"']", s)}
    assert not named, named


def test_every_raysys_import_names_something_its_module_defines():
    """One import path per name: `from raysys.x import n` finds n defined in raysys.x
    (or a submodule), never a name raysys.x itself imported; no private name crosses a
    module boundary."""
    import importlib

    wrong = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("raysys")):
                continue
            mod = importlib.import_module(node.module)
            for a in node.names:
                where = f"{path.relative_to(PACKAGE)}: from {node.module} import {a.name}"
                if a.name.startswith("_"):
                    wrong.append(where + " (private)")
                    continue
                try:
                    importlib.import_module(f"{node.module}.{a.name}")
                    continue  # a submodule
                except ModuleNotFoundError:
                    pass
                value = getattr(mod, a.name, None)
                if value is None and not hasattr(mod, a.name):
                    wrong.append(where + " (not there)")
                elif callable(value) and str(getattr(value, "__module__", "")).startswith("raysys") \
                        and value.__module__ != node.module:
                    wrong.append(where + f" (defined in {value.__module__})")
    assert not wrong, wrong


def test_the_top_level_is_small():
    files = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(files) <= 13, files


def test_only_the_marked_files_import_ray():
    import re

    marked = {"actors.py", "cluster.py", "training/trainer.py", "training/worker.py", "loop/driver.py",
              "experiments/diversity_run.py"}  # the README's ◆ files
    found = {f for f, s in _sources().items() if re.search(r"^\s*(import ray\b|from ray(\.| ))", s, re.M)}
    assert found == marked, found ^ marked


def test_module_names_do_not_collide():
    from collections import Counter

    names = Counter(p.name for p in PACKAGE.rglob("*.py") if p.name not in ("__init__.py", "__main__.py"))
    assert not [n for n, c in names.items() if c > 1], names.most_common(3)
