"""The direction of imports, kept by tests (docs/CONTRACTS.md):

- ``kpid_core`` is the method as a library: it never imports ``ray``, ``sweeps`` or ``analysis``,
  not even inside a function, so it works from a notebook or another trainer without them;
- ``analysis`` reads result files: it never imports ``sweeps``, imports no ``ray`` when its modules
  are imported and never starts a Ray cluster (``ray.init``). Reading Ray's own experiment files is
  the one place that may import ``ray.tune``, inside the function that needs it.

Two checks: every import statement in the source (also those inside functions, and
``importlib.import_module("...")`` with a literal name), and what importing every module really
pulls into ``sys.modules`` in a fresh interpreter.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path, *, with_names: bool = False) -> list[tuple[str, int, bool]]:
    """``(module, line, at_import_time)`` for every import in a file; ``at_import_time`` is False
    for imports inside a function body (run only when the function is called). ``with_names``: a
    ``from a import b`` also yields ``a.b`` (b may be a module)."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                found.extend((alias.name, child.lineno, not in_function) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:  # relative: resolve against this file's package
                    parent = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join([*parent, base] if base else parent)
                found.append((base, child.lineno, not in_function))
                if with_names:
                    found.extend((f"{base}.{alias.name}", child.lineno, not in_function) for alias in child.names)
            elif (isinstance(child, ast.Call) and child.args and isinstance(child.args[0], ast.Constant)
                  and isinstance(child.args[0].value, str) and _is_dynamic_import(child.func)):
                found.append((child.args[0].value, child.lineno, not in_function))
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(ast.parse(path.read_text(), filename=str(path)), False)
    return found


def _is_dynamic_import(func: ast.expr) -> bool:
    if isinstance(func, ast.Name):
        return func.id in ("__import__", "import_module")
    return isinstance(func, ast.Attribute) and func.attr == "import_module"


def _violations(package: str, forbidden: set[str], *, at_import_time_only: bool = False) -> list[str]:
    out = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for module, line, at_import in _imports(path):
            if module.split(".")[0] in forbidden and (at_import or not at_import_time_only):
                out.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    return out


def test_kpid_core_never_imports_ray_sweeps_or_analysis():
    assert _violations("kpid_core", {"ray", "sweeps", "analysis"}) == []


def test_analysis_never_imports_sweeps_nor_ray_at_import_time():
    assert _violations("analysis", {"sweeps"}) == []
    assert _violations("analysis", {"ray"}, at_import_time_only=True) == []


def test_analysis_never_starts_ray():
    calls = []
    for path in sorted((ROOT / "analysis").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            func = node.func if isinstance(node, ast.Call) else None
            if isinstance(func, ast.Attribute) and func.attr == "init" and ast.unparse(func.value) == "ray":
                calls.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert calls == []


def test_the_scanner_sees_function_level_relative_and_dynamic_imports(tmp_path, monkeypatch):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "m.py").write_text(
        "import os\nfrom . import sib\n\ndef f():\n    import ray.tune\n"
        "    importlib.import_module('sweeps.run')\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert _imports(pkg / "m.py") == [("os", 1, True), ("pkg", 2, True), ("ray.tune", 5, False),
                                      ("sweeps.run", 6, False)]


@pytest.mark.parametrize("package, forbidden", [("kpid_core", ("ray", "sweeps", "analysis")),
                                                ("analysis", ("ray", "sweeps"))])
def test_importing_every_module_pulls_in_nothing_forbidden(package, forbidden):
    """In a fresh interpreter: import every module of the package (``__main__`` aside: it runs)."""
    code = (
        "import importlib, pkgutil, sys\n"
        f"pkg = importlib.import_module({package!r})\n"
        "for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
        "    if not m.name.endswith('__main__'):\n"
        "        importlib.import_module(m.name)\n"
        f"bad = sorted({{n.split('.')[0] for n in sys.modules}} & set({forbidden!r}))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300,
                         check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"importing {package} imported {out.stdout.strip()}"


# The engine prunes a model without knowing how it is trained: nothing under kpid_core/engine reaches
# kpid_core.training, the trial (with its shared artifacts and prune phase), the baseline or the
# progressive schedule, not even through a top-level module it imports (kpid_core.prune,
# kpid_core.models) nor through an old flat alias (kpid_core.data).
ENGINE_FORBIDDEN = ("kpid_core.training", "kpid_core.trial", "kpid_core.shared", "kpid_core.prune_phase",
                    "kpid_core.baseline", "kpid_core.progressive")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph(package: str) -> dict[str, set[str]]:
    """``module -> modules of the package it imports`` (any import, also inside functions; ``from a
    import b`` counts ``a.b`` when that is a module; old flat paths count as their new homes)."""
    from kpid_core.module_aliases import MOVED

    files = {_module_name(p): p for p in sorted((ROOT / package).rglob("*.py"))}

    def home(name: str) -> str | None:
        while name and name not in files:
            name = MOVED.get(name) or (name.rpartition(".")[0] if "." in name else "")
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        targets = set()
        for module, _, _ in _imports(path, with_names=True):
            found = home(module)
            if found and found != name:
                targets.add(found)
        graph[name] = targets
    return graph


def _reaches(graph: dict[str, set[str]], start: str, forbidden: tuple[str, ...]) -> list[str] | None:
    """The import chain from ``start`` to a forbidden module, or None."""
    chains, seen = [[start]], {start}
    while chains:
        chain = chains.pop(0)
        for nxt in sorted(graph.get(chain[-1], ())):
            if any(nxt == f or nxt.startswith(f + ".") for f in forbidden):
                return [*chain, nxt]
            if nxt not in seen:
                seen.add(nxt)
                chains.append([*chain, nxt])
    return None


def test_the_engine_never_reaches_training_trial_baseline_or_progressive():
    graph = _import_graph("kpid_core")
    engine = sorted(n for n in graph if n.startswith("kpid_core.engine."))
    assert len(engine) >= 14
    bad = [" -> ".join(chain) for n in engine if (chain := _reaches(graph, n, ENGINE_FORBIDDEN))]
    assert bad == []
