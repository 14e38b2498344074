"""The code's layout: each shared piece has one home, and no two modules need each other
(an import cycle makes a module impossible to read, test or move on its own)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHON = ROOT / "python" / "job_manager"
SRC = ROOT / "src"


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle found by a depth-first search (each reported once per back edge)."""
    found: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                found.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def python_imports() -> dict[str, set[str]]:
    """job_manager's modules and the job_manager modules each imports, anywhere in it (a
    function-level import still makes the two depend on each other)."""
    graph: dict[str, set[str]] = {}
    names = {p.stem for p in PYTHON.glob("*.py")} | {"_internal"}
    for path in PYTHON.glob("*.py"):
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                parts = node.module.split(".")
                if parts[0] == "job_manager":
                    if len(parts) > 1:
                        deps.add(parts[1])
                    else:  # from job_manager import x
                        deps |= {a.name for a in node.names if a.name in names}
            elif isinstance(node, ast.Import):
                for a in node.names:
                    parts = a.name.split(".")
                    if parts[0] == "job_manager" and len(parts) > 1:
                        deps.add(parts[1])
        graph[path.stem] = deps - {path.stem, "__init__"}
    return graph


def rust_modules() -> dict[str, set[str]]:
    """The crate's top-level modules (a file or a folder under src/) and the modules each
    names through `crate::`; the PyO3 layer (bindings) and lib.rs are left out: they use
    everything by design and nothing uses them."""
    graph: dict[str, set[str]] = {}
    for path in SRC.rglob("*.rs"):
        rel = path.relative_to(SRC)
        module = rel.parts[0].removesuffix(".rs")
        if module in ("lib", "bindings"):
            continue
        # Code only: a doc comment's link to another module is not a dependency.
        text = "\n".join(
            line
            for line in path.read_text(encoding="utf-8").splitlines()
            if not line.lstrip().startswith("//")
        )
        used = set(re.findall(r"crate::(\w+)", text))
        for group in re.findall(r"use crate::\{([^}]*)\}", text):
            used |= {name.strip().split("::")[0] for name in group.split(",") if name.strip()}
        graph.setdefault(module, set()).update(used - {module, "bindings"})
    return graph


def test_python_modules_import_no_cycle() -> None:
    graph = python_imports()
    assert {"manager", "airflow", "cli"} <= set(graph)
    assert cycles(graph) == []


def test_rust_modules_use_no_cycle() -> None:
    graph = rust_modules()
    assert {"backup", "maintenance", "jobs", "pool", "planner"} <= set(graph)
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
