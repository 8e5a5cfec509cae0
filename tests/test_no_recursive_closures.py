"""No recursive closure in the code a controller keeps revisions with.

A nested function that calls itself is a reference cycle (the function, its cell);
when it also holds a policy or a checker, a commit's frozen survivors kept that
revision alive after the controller let it go (controller/store/cache.py: frozen
cycles wait for a full collection). Such searches are methods or module functions."""

from __future__ import annotations

import ast
from pathlib import Path

import zonewall

# the packages whose objects a controller keeps across commits (importers run once, in the CLI)
KEPT_PACKAGES = ("policy", "compiler", "analysis", "controller")


def _recursive_closures(source: str) -> list[tuple[int, str]]:
    found = []
    for outer in ast.walk(ast.parse(source)):
        if not isinstance(outer, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for inner in ast.walk(outer):
            if inner is outer or not isinstance(inner, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            if any(isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == inner.name for node in ast.walk(inner)):
                found.append((inner.lineno, f"{outer.name}.{inner.name}"))
    return found


def test_the_packages_a_controller_keeps_hold_no_recursive_closure() -> None:
    root = Path(zonewall.__file__).parent
    found = [f"{path.relative_to(root)}:{line} {name}"
             for package in KEPT_PACKAGES for path in sorted((root / package).rglob("*.py"))
             for line, name in _recursive_closures(path.read_text())]
    assert found == []


def test_a_recursive_closure_is_found_and_a_method_is_not() -> None:
    closure = "def outer(x):\n    def walk(n):\n        return walk(n - 1) if n else x\n    return walk(3)\n"
    method = "class A:\n    def walk(self, n):\n        return self.walk(n - 1) if n else 0\n"
    assert _recursive_closures(closure) == [(2, "outer.walk")]
    assert _recursive_closures(method) == []
