"""The package's layers (ARCHITECTURE.md): lib's import graph has no cycle, each layer imports only what it may, and
no module is over 500 lines."""
from __future__ import annotations

import ast
from pathlib import Path

LIB = Path(__file__).resolve().parent.parent / "lib"
MAX_LINES = 500


def _module_name(path: Path) -> str:
    parts = path.relative_to(LIB.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(LIB.rglob("*.py"))}


def _imports(path: Path, name: str, known: set[str]) -> set[str]:
    """lib modules that ``path`` imports (at any depth of the file: function-level imports count too)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            # the longest known module that the target names (``from lib.model import codec`` -> lib.model.codec)
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name and target != "lib":
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(path, name, known) for name, path in modules.items()}


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "lib"


def test_no_import_cycle():
    graph = import_graph()
    # package __init__ files that import their own submodules are edges into the package, not cycles through it
    edges = {m: {t for t in targets if not (m.startswith(t + ".") and t in graph)} for m, targets in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module)


# What each layer may import besides itself (ARCHITECTURE.md). ``lib.registry``, ``lib.headless`` and ``lib.atomic`` are
# open to all.
OPEN_TO_ALL = ("headless", "atomic")
ALLOWED = {
    "registry": set(),
    "headless": set(),
    "atomic": set(),
    "model": {"registry"},
    "data": {"registry"},
    "config": {"registry", "model", "training.objectives"},  # valid choices come from the registries
    "build": {"registry", "config", "model"},
    "training": {"registry", "config", "build", "model", "data", "analysis.metrics"},
    "analysis": {"registry", "config", "build", "model", "data", "training.checkpoint", "training.losses"},
    "bitstream": {"registry", "config", "build", "model", "data", "training.checkpoint"},
    "__main__": {"bitstream"},
    "wait_policy": set(),
    "runner": {"wait_policy"},
}


def _allowed(source: str, target: str) -> bool:
    src, dst = _layer(source), _layer(target)
    if src == dst or dst in OPEN_TO_ALL:
        return True
    return any(target == a or target.startswith(f"lib.{a}") if "." in a else dst == a for a in ALLOWED[src])


def test_layers_import_only_what_they_may():
    graph = import_graph()
    bad = sorted(f"{m} imports {t}" for m, targets in graph.items() for t in targets if not _allowed(m, t))
    assert not bad, "layer rule broken:\n  " + "\n  ".join(bad)


def test_model_imports_nothing_above_it():
    graph = import_graph()
    for module, targets in graph.items():
        if module.startswith("lib.model"):
            assert all(_layer(t) in ("model", "registry") for t in targets), (module, targets)


def test_analysis_never_imports_the_trainer():
    graph = import_graph()
    for module, targets in graph.items():
        if module.startswith("lib.analysis"):
            assert "lib.training.trainer" not in targets, module


def test_no_module_over_500_lines():
    long = {name: n for name, path in _modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"
