"""The layers of ARCHITECTURE.md hold: no latentgeo module imports one of a higher layer, and
the import graph (module- and function-level imports, read from the source) has no cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# bottom to top; a module may import its own layer (without a cycle) and the layers below;
# a package's name covers its modules (latentgeo.figures.base, latentgeo.report.page, …)
LAYERS = [
    ("foundation", ["latentgeo.config", "latentgeo.plugins", "latentgeo.provenance",
                    "latentgeo.records", "latentgeo.summaries", "latentgeo.runtime",
                    "latentgeo.signals", "latentgeo.synthetic_sweep", "latentgeo.results_cache"]),
    ("components", ["latentgeo.data", "latentgeo.models", "latentgeo.metrics",
                    "latentgeo.figures", "latentgeo.tracking"]),
    ("loop", ["latentgeo.loop"]),
    ("run building", ["latentgeo.build"]),
    ("analyses", ["latentgeo.analysis"]),
    ("metric families", ["latentgeo.families"]),
    ("engine", ["latentgeo.engine", "latentgeo.checks"]),
    ("entry points", ["latentgeo.train", "latentgeo.training", "latentgeo.evaluate",
                      "latentgeo.aggregate", "latentgeo.selection", "latentgeo.results",
                      "latentgeo.report", "latentgeo.runs", "latentgeo.sync",
                      "latentgeo.sweep_callback", "latentgeo.demo",
                      "hydra_plugins.latentgeo_workstation"]),
]
PACKAGE_ROOTS = ("latentgeo", "hydra_plugins/latentgeo_workstation")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def source_modules() -> dict[str, Path]:
    found = {}
    for root in PACKAGE_ROOTS:
        for path in sorted((REPO / root).rglob("*.py")):
            found[module_name(path)] = path
    return found


def imports_of(path: Path, name: str, known: set[str]) -> list[tuple[str, int]]:
    """latentgeo modules imported anywhere in the file (functions included), with the line."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            # ``from pkg import submodule`` imports the submodule; else the module itself
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                       for a in node.names]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.append((target, node.lineno))
    return found


def layer_of(module: str) -> int:
    for index, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return index
    raise AssertionError(f"{module} is in no layer of LAYERS: add it (and to ARCHITECTURE.md)")


def graph() -> dict[str, list[tuple[str, int]]]:
    modules = source_modules()
    return {name: imports_of(path, name, set(modules)) for name, path in modules.items()}


def test_every_module_has_a_layer_and_imports_only_its_own_or_lower_layers():
    upward = []
    for module, targets in graph().items():
        if module in ("latentgeo", "hydra_plugins.latentgeo_workstation"):
            continue  # package roots import nothing of latentgeo
        for target, line in targets:
            if layer_of(target) > layer_of(module):
                upward.append(f"{module}:{line} imports {target} "
                              f"({LAYERS[layer_of(module)][0]} -> "
                              f"{LAYERS[layer_of(target)][0]})")
    assert not upward, "imports up the layer order:\n" + "\n".join(upward)


def test_the_import_graph_has_no_cycle():
    edges = {module: sorted({t for t, _ in targets}) for module, targets in graph().items()}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(module: str, stack: list[str]) -> None:
        state[module] = 1
        for target in edges.get(module, []):
            if state.get(target) == 1:
                cycles.append(stack[stack.index(target):] + [target] if target in stack
                              else [module, target])
            elif target not in state:
                visit(target, [*stack, target])
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("module, expected_layer", [
    ("latentgeo.records", "foundation"), ("latentgeo.records.run_dir", "foundation"),
    ("latentgeo.summaries", "foundation"), ("latentgeo.metrics.collapse", "components"),
    ("latentgeo.engine", "engine"), ("latentgeo.analysis.dib", "analyses"),
    ("latentgeo.figures.base", "components"), ("latentgeo.report.page", "entry points"),
    ("latentgeo.report.__main__", "entry points")])
def test_layer_lookup(module, expected_layer):
    assert LAYERS[layer_of(module)][0] == expected_layer


def test_the_checker_sees_function_level_and_relative_imports(tmp_path, monkeypatch):
    """The graph must catch an upward import hidden in a function (the old engine ->
    analysis.dib dodge): build it over a fake package and look."""
    package = tmp_path / "latentgeo"
    (package / "metrics").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "engine.py").write_text("")
    (package / "metrics" / "__init__.py").write_text("")
    (package / "metrics" / "x.py").write_text("def f():\n    from latentgeo import engine\n"
                                              "    from .. import engine as e\n")
    monkeypatch.setattr(f"{__name__}.REPO", tmp_path)
    monkeypatch.setattr(f"{__name__}.PACKAGE_ROOTS", ("latentgeo",))
    found = graph()["latentgeo.metrics.x"]
    assert found == [("latentgeo.engine", 2), ("latentgeo.engine", 3)]
    with pytest.raises(AssertionError, match="imports up the layer order"):
        test_every_module_has_a_layer_and_imports_only_its_own_or_lower_layers()
