"""The shape of the code: the dependency rule, no import cycles, small modules, short functions.

The rule (docs/architecture.md): ``cli → jobs → adaptation → noise, models → base modules``;
``exporters → models, base modules``; only ``rfr_deploy.cli`` imports ``exporters``. Every import
counts, including the lazy ones inside functions and those under ``TYPE_CHECKING``: a cycle hidden
by a lazy import is still a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("rfr_deploy", "exporters")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60

# Layers of rfr_deploy, lowest first: a module may import its own layer and the layers below it.
# Top-level modules of rfr_deploy (errors, files, images, inference, ...) are the base layer.
LAYERS = {"base": 0, "models": 1, "noise": 1, "adaptation": 2, "bench": 3, "jobs": 3, "cli": 4}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The first-party modules ``name`` imports (a package counts as its ``__init__``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in MODULES)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                if submodule in MODULES:
                    found.add(submodule)
                elif target in MODULES:
                    found.add(target)
    found.discard(name)
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _layer(name: str) -> tuple[str, int] | None:
    parts = name.split(".")
    if parts[0] != "rfr_deploy" or len(parts) == 1:
        return None
    group = parts[1] if parts[1] in LAYERS else "base"
    return group, LAYERS[group]


def _cycles() -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in GRAPH:
        if v not in index:
            visit(v)
    return found


def test_the_graph_sees_the_packages():
    # Guards the test itself: it must find the modules and their imports.
    assert "rfr_deploy.adaptation.loop" in GRAPH and "exporters.onnx_export" in MODULES
    assert any(target.startswith("rfr_deploy.models") for target in GRAPH["rfr_deploy.jobs.adapt_export"])


def test_no_import_cycles():
    assert _cycles() == []


def test_only_the_cli_imports_the_exporters():
    offenders = sorted(
        f"{name} -> {target}"
        for name, targets in GRAPH.items()
        if name.startswith("rfr_deploy") and not name.startswith("rfr_deploy.cli")
        for target in targets
        if target.split(".")[0] == "exporters"
    )
    assert offenders == []


def test_exporters_depend_only_on_models_and_base_modules():
    offenders = sorted(
        f"{name} -> {target}"
        for name, targets in GRAPH.items()
        if name.startswith("exporters")
        for target in targets
        if (_layer(target) or ("", 0))[0] not in ("", "base", "models")
    )
    assert offenders == []


def test_dependencies_point_down_the_layers():
    offenders = []
    for name, targets in GRAPH.items():
        here = _layer(name)
        if here is None:
            continue
        for target in targets:
            there = _layer(target)
            if there is None or there[0] == here[0]:
                continue
            if there[1] >= here[1]:
                offenders.append(f"{name} ({here[0]}) -> {target} ({there[0]})")
    assert sorted(offenders) == []


def test_no_module_over_the_limit():
    long = {
        n: c
        for n, p in MODULES.items()
        if (c := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}


def _functions(path: Path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node


def test_no_function_over_the_limit():
    long = sorted(
        f"{name}.{fn.name}: {fn.end_lineno - fn.lineno + 1} lines"
        for name, path in MODULES.items()
        for fn in _functions(path)
        if fn.end_lineno - fn.lineno + 1 > MAX_FUNCTION_LINES
    )
    assert long == []


@pytest.mark.parametrize("forbidden", ["utils", "helpers", "misc"])
def test_no_grab_bag_modules(forbidden):
    assert [n for n in MODULES if n.rpartition(".")[2] == forbidden] == []


def test_nothing_imports_the_package_root():
    # rfr_deploy/__init__ is the public API for users; inside the code it would hide cycles.
    assert sorted(name for name, targets in GRAPH.items() if "rfr_deploy" in targets) == []
