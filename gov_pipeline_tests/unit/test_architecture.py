"""The package plan, checked: dependencies point one way between the role folders, no module
imports in a circle, no SQL in the Dagster layer, private Dagster names behind one module,
and no function longer than a screen."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "gov_pipeline"

# The direction, top to bottom: a folder (or top-level module) may import only what is
# listed for it. The composition roots (definitions, demo) and the command line sit on top.
BELOW_SERVICES = {"db", "domain", "config"}
ALLOWED: dict[str, set[str]] = {
    # The domain stays free of I/O; it may read Dagster's cron grammar and tick iteration
    # (domain/schedules.py, imported on first use) so a schedule means what Dagster runs.
    "domain": {"dagster_internals"},
    "config": {"domain"},
    "dagster_internals": set(),
    "db": {"domain", "config"},
    "migrations": {"db", "domain", "config"},
    "services": BELOW_SERVICES,
    "engine": {"services", *BELOW_SERVICES},
    "runners": {"engine", "services", *BELOW_SERVICES},
    "coordinator": {"dagster_internals", "domain", "config"},
    "checks": {"coordinator", "dagster_internals", "services", *BELOW_SERVICES},
    "orchestration": {
        "runners",
        "engine",
        "services",
        "checks",
        "coordinator",
        "dagster_internals",
        *BELOW_SERVICES,
    },
    # The embedded helpers and the demo clear the queue keys they used (coordinator/queue.py).
    "embedded": {"coordinator", "dagster_internals", "domain", "config"},
    "cli": {
        "embedded",
        "orchestration",
        "runners",
        "engine",
        "services",
        "checks",
        "coordinator",
        "dagster_internals",
        *BELOW_SERVICES,
    },
    "definitions": {"orchestration", "config"},
    "demo": {"embedded", "coordinator", "runners", "engine", "services", *BELOW_SERVICES},
}
# Inside engine/, the action plug-ins see only their base, not the engine that runs them.
PLUGINS = "gov_pipeline.engine.actions"
MAX_FUNCTION_LINES = 60
# Migration revisions are generated schema snapshots, never edited once released.
LENGTH_EXEMPT = "gov_pipeline.migrations.versions."


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports_of(path: Path, known: set[str]) -> Iterator[tuple[str, int]]:
    """(imported gov_pipeline module, line) for every import in the file, nested ones too."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if not node.module.startswith("gov_pipeline"):
                continue
            yield node.module, node.lineno
            for alias in node.names:
                if f"{node.module}.{alias.name}" in known:
                    yield f"{node.module}.{alias.name}", node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("gov_pipeline"):
                    yield alias.name, node.lineno


def graph() -> dict[str, set[str]]:
    known = modules()
    return {
        name: {m for m, _ in imports_of(path, set(known)) if m in known and m != name}
        for name, path in known.items()
    }


def role(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def test_every_folder_says_what_it_may_import() -> None:
    for init in sorted(PACKAGE.glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc, f"{init.parent.name}/ has no docstring saying what it is for"
        assert "import" in doc or init.parent.name in ("domain", "migrations"), init


def test_dependencies_point_one_way_between_folders() -> None:
    bad = []
    for module, deps in graph().items():
        for dep in deps:
            here, there = role(module), role(dep)
            if here == "gov_pipeline" or here == there:
                continue
            assert here in ALLOWED, f"{module}: {here} is not in the plan (ALLOWED)"
            if there not in ALLOWED[here]:
                bad.append(f"{module} -> {dep}")
    assert not bad, "imports against the direction:\n" + "\n".join(sorted(bad))


def test_action_plugins_do_not_import_the_engine_that_runs_them() -> None:
    for module, deps in graph().items():
        if module.startswith(PLUGINS + "."):
            for dep in deps:
                if dep.startswith("gov_pipeline.engine."):
                    assert dep.startswith(PLUGINS + "."), f"{module} -> {dep}"


def strongly_connected(edges: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
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

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_the_circle_finder_finds_a_circle() -> None:
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert strongly_connected({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_in_a_circle() -> None:
    assert strongly_connected(graph()) == []


def _functions(tree: ast.AST) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node


def test_no_function_is_longer_than_a_screen() -> None:
    long = []
    for module, path in modules().items():
        if module.startswith(LENGTH_EXEMPT):
            continue
        for fn in _functions(ast.parse(path.read_text())):
            lines = (fn.end_lineno or fn.lineno) - fn.lineno + 1
            if lines > MAX_FUNCTION_LINES:
                long.append(f"{module}.{fn.name}: {lines} lines")
    assert not long, "\n".join(long)


def test_private_dagster_names_come_through_one_module() -> None:
    users = []
    for module, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            if any(n.startswith("dagster._") for n in names):
                users.append(module)
    assert set(users) == {"gov_pipeline.dagster_internals"}


SQL_NAMES = {"select", "text", "insert", "update", "delete", "func", "tuple_", "or_", "and_"}


@pytest.mark.parametrize(
    "path", sorted((PACKAGE / "orchestration").glob("*.py")), ids=lambda p: p.name
)
def test_the_dagster_layer_has_no_sql(path: Path) -> None:
    """Ops and sensors parse config, take resources, call one function and emit metadata."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sqlalchemy"):
            assert not ({a.name for a in node.names} & SQL_NAMES), f"{path.name}: {node.module}"
            assert node.module != "sqlalchemy.orm" or {a.name for a in node.names} <= {
                "Session",
                "sessionmaker",
            }
        if isinstance(node, ast.ImportFrom) and node.module == "gov_pipeline.db.models":
            pytest.fail(f"{path.name} reads the models: queries belong below orchestration/")
        if isinstance(node, ast.Attribute) and node.attr in ("query", "scalars", "scalar"):
            pytest.fail(f"{path.name}:{node.lineno} queries a session")
