"""Print module sizes, functions over 60 lines and import cycles among our packages.

Reads the source with :mod:`ast` (nothing is imported).  Usage::

    python tools/code_report.py [--top N]

Exit status 1 when modules import each other in a cycle (module-level and function-level
imports both count, ``if TYPE_CHECKING:`` imports do not), else 0.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

PACKAGES = ("events", "commands", "projections", "api", "processors", "infra")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
ROOT = Path(__file__).resolve().parent.parent


def module_name(path: Path) -> str:
    """``processors/engines/remote/client.py`` -> ``processors.engines.remote.client``."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(tree: ast.Module, name: str, is_package: bool, known: set[str]) -> set[str]:
    """Our modules that module ``name`` imports (resolved to modules that exist)."""
    found: set[str] = set()
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            skip.update(id(child) for stmt in node.body for child in ast.walk(stmt))
    package = name if is_package else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def main() -> int:
    """Print the report; return 1 on an import cycle."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top", type=int, default=15, help="largest modules to list")
    args = parser.parse_args()
    files = sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))
    trees = {p: ast.parse(p.read_text(encoding="utf-8"), str(p)) for p in files}
    known = {module_name(p) for p in files}
    sizes = sorted(((len(p.read_text(encoding="utf-8").splitlines()), p) for p in files), reverse=True)
    print(f"== largest modules (lines; over {MAX_MODULE_LINES} marked *)")
    for lines, path in sizes[: args.top]:
        print(f"{'*' if lines > MAX_MODULE_LINES else ' '} {lines:5d}  {path.relative_to(ROOT)}")
    print(f"== functions over {MAX_FUNCTION_LINES} lines")
    for path, tree in trees.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno is not None:
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    print(f"  {length:5d}  {path.relative_to(ROOT)}:{node.lineno} {node.name}")
    graph = {module_name(p): imports_of(t, module_name(p), p.name == "__init__.py", known) for p, t in trees.items()}
    # a package's __init__ re-exporting its own modules is not a cycle worth failing on
    graph = {m: {d for d in deps if not d.startswith(m + ".")} for m, deps in graph.items()}
    found = cycles(graph)
    print(f"== import cycles: {len(found)}")
    for component in found:
        print("  " + " <-> ".join(component))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
