"""The shape of src/digest (issue 13): the import graph, drawn with `ast` from every import
statement (at module level and inside functions), has no circle and no arrow pointing up the
layers, and no module passes ~400 lines without its docstring saying why.

Run `python tests/test_architecture.py` to print the graph's circles and upward arrows.
"""

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "digest"
MAX_LINES = 400

# Data flows one way: doors -> pipeline -> runners -> stages -> foundations. A module may import
# its own layer or any layer below, never above (the first matching prefix wins).
LAYERS: list[tuple[str, int]] = [
    ("digest.db.migrations", 1),
    ("digest.__main__", 5),
    ("digest.cli", 5),
    ("digest.web", 5),
    ("digest.schedule", 5),
    ("digest.pipeline", 4),
    ("digest.runners", 3),
    ("digest.sources", 2),
    ("digest.stories", 2),
    ("digest.similar", 2),
    ("digest.story_terms", 2),
    ("digest.followups", 2),
    ("digest.desk", 2),
    ("digest.threads", 2),
    ("digest.topics", 2),
    ("digest.compose", 2),
    ("digest.editions", 2),
    ("digest.render", 2),
    ("digest.deliver", 2),
    ("digest.subscribers", 2),
    ("digest.config", 1),
    ("digest.newsletter", 1),
    ("digest.config_messages", 1),
    ("digest.tokens", 1),
    ("digest.db", 1),
    ("digest.clock", 0),
    ("digest.errors", 0),
    ("digest", 0),  # the package itself: its version
]
LAYER_NAMES = {
    0: "base",
    1: "storage",
    2: "stages",
    3: "runners",
    4: "pipeline",
    5: "doors",
}


@dataclass(frozen=True, slots=True)
class Import:
    """One import statement's arrow: from module `source` (line `line`) to module `target`."""

    source: str
    target: str
    line: int
    in_function: bool


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its __init__)."""
    found = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """The module a dotted import name lands in (`digest.a.b.func` -> `digest.a.b`)."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def imports(known: dict[str, Path]) -> Iterator[Import]:
    """Every arrow between modules of the package, module-level and in-function alike."""
    for module, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        functions = [
            n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        ]
        inner = {id(n) for f in functions for n in ast.walk(f)}
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
            for name in names:
                if name != "digest" and not name.startswith("digest."):
                    continue
                target = _resolve(name, known)
                if target is not None and target != module:
                    yield Import(module, target, getattr(node, "lineno", 0), id(node) in inner)


def layer(module: str) -> int:
    """The layer of a module (see LAYERS)."""
    for prefix, number in LAYERS:
        if module == prefix or module.startswith(prefix + "."):
            return number
    raise AssertionError(f"{module}: not in the layer table of tests/test_architecture.py")


def cycles(arrows: list[Import]) -> list[list[str]]:
    """The import graph's circles, one per strongly connected component of more than one module."""
    graph: dict[str, set[str]] = {}
    for a in arrows:
        graph.setdefault(a.source, set()).add(a.target)
        graph.setdefault(a.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def upward(arrows: list[Import]) -> list[Import]:
    """Arrows from a module to one in a higher layer."""
    return [a for a in arrows if layer(a.target) > layer(a.source)]


def _oversized(known: dict[str, Path]) -> list[str]:
    """Modules over MAX_LINES whose docstring does not say why they are long."""
    long = []
    for module, path in known.items():
        text = path.read_text(encoding="utf-8")
        lines = text.count("\n")
        doc = ast.get_docstring(ast.parse(text)) or ""
        if lines > MAX_LINES and not re.search(r"^Long:", doc, re.MULTILINE):
            long.append(f"{module}: {lines} lines")
    return long


def test_every_module_has_a_layer() -> None:
    for module in modules():
        assert layer(module) in LAYER_NAMES


def test_the_import_graph_has_no_circle() -> None:
    assert cycles(list(imports(modules()))) == []


def test_no_module_imports_a_layer_above_its_own() -> None:
    names = LAYER_NAMES
    arrows = [
        f"{a.source}:{a.line} -> {a.target} ({names[layer(a.source)]} -> {names[layer(a.target)]})"
        for a in upward(list(imports(modules())))
    ]
    assert arrows == []


def test_the_graph_sees_imports_inside_functions() -> None:
    arrows = list(imports(modules()))
    assert any(a.in_function for a in arrows)  # e.g. the Celery runner, imported only when chosen
    assert any(a.source == "digest.cli.daily" and a.target == "digest.pipeline" for a in arrows)


def test_the_checks_catch_a_circle_and_an_upward_arrow() -> None:
    up = Import("digest.deliver.send", "digest.pipeline", 1, in_function=True)
    back = Import("digest.pipeline", "digest.deliver.send", 1, in_function=False)
    assert upward([up, back]) == [up]
    assert cycles([up, back]) == [["digest.deliver.send", "digest.pipeline"]]


def test_long_modules_say_why() -> None:
    """Past ~400 lines a module is split, or its docstring has a line starting "Long:" saying why."""
    assert _oversized(modules()) == []


if __name__ == "__main__":
    known = modules()
    arrows = list(imports(known))
    inner = sum(a.in_function for a in arrows)
    print(f"{len(known)} modules, {len(arrows)} import arrows ({inner} inside functions)")
    print(f"circles: {len(cycles(arrows))}")
    for c in cycles(arrows):
        print("  " + " -> ".join(c))
    print(f"upward arrows: {len(upward(arrows))}")
    for a in upward(arrows):
        print(f"  {a.source}:{a.line} -> {a.target}")
    for line in _oversized(known):
        print(f"long without a reason: {line}")
