"""The package map of docs/architecture.md, enforced: data flows one way.

Every import of a zonewall module is read from the source (ast, nothing is imported):
top-level, inside functions, and under TYPE_CHECKING alike, since each one is a
dependency. A module may import its own package and any package on a lower floor;
never a package on its own floor (siblings stay apart) nor one above it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "zonewall"

# floor -> the parts of zonewall on it (a subpackage, or a module at the package root)
FLOORS: dict[int, set[str]] = {
    0: {"__init__", "gcpause", "handover", "netns", "service"},  # ground: no zonewall imports at all
    1: {"policy"},  # YAML -> typed model, documents and their edits
    2: {"compiler"},  # model + node -> plan -> nftables IR -> libnftables JSON
    3: {"analysis", "dataplane", "importers"},  # beside each other, on the compiler
    4: {"agent", "controller", "client"},  # share only what lives below them
    5: {"lab"},  # virtual clusters for tests, benches and the demo
    6: {"cli"},  # the `zonewall` command
}
FLOOR = {part: floor for floor, parts in FLOORS.items() for part in parts}


def part_of(module: str) -> str:
    """The part of zonewall a dotted module name belongs to ("zonewall.cli_x" is cli's)."""
    name = module.split(".")[1] if "." in module else "__init__"
    return "cli" if name.startswith("cli") else name


def module_name(path: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def imports(path: Path) -> Iterator[tuple[int, str, list[str]]]:
    """(line, imported module, names taken from it) for every zonewall import in `path`."""
    module, is_package = module_name(path)
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "zonewall":
                    yield node.lineno, alias.name, []
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] == "zonewall":
                yield node.lineno, target, [alias.name for alias in node.names]


def sources() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "static" not in p.parts)


def upward_imports(paths: list[Path]) -> list[str]:
    problems = []
    for path in paths:
        module, _ = module_name(path)
        own = part_of(module)
        for line, target, _names in imports(path):
            other = part_of(target)
            if other == own or (other not in FLOOR and own not in FLOOR):
                continue
            if own not in FLOOR or other not in FLOOR:
                problems.append(f"{path.relative_to(ROOT)}:{line}: {own} or {other} is on no floor of tests/test_layering.py")
            elif FLOOR[other] >= FLOOR[own]:
                where = "on its own floor" if FLOOR[other] == FLOOR[own] else "above it"
                problems.append(f"{path.relative_to(ROOT)}:{line}: {own} (floor {FLOOR[own]}) imports {target}, {where} (floor {FLOOR[other]})")
    return problems


def test_every_part_of_the_package_is_on_a_floor() -> None:
    parts = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir() if (p.suffix == ".py" or (p / "__init__.py").exists())}
    assert {part_of(f"zonewall.{name}") for name in parts} - set(FLOOR) == set()


def test_no_module_imports_a_layer_above_it_or_beside_it() -> None:
    assert upward_imports(sources()) == []


def test_no_module_takes_a_private_name_from_another_package() -> None:
    problems = []
    for path in sources():
        own = part_of(module_name(path)[0])
        for line, target, names in imports(path):
            private = [name for name in names if name.startswith("_") and not name.startswith("__")]
            if private and part_of(target) != own:
                problems.append(f"{path.relative_to(ROOT)}:{line}: {', '.join(private)} from {target}")
    assert problems == []


# what the check reports, on made-up modules: the test above can fail
@pytest.mark.parametrize(
    ("where", "source", "expected"),
    [
        ("zonewall/agent/x.py", "from ..controller import app\n", "agent (floor 4) imports zonewall.controller, on its own floor (floor 4)"),
        ("zonewall/dataplane/x.py", "def f():\n    from ..lab.netns import run_in_netns\n", "dataplane (floor 3) imports zonewall.lab.netns, above it (floor 5)"),
        ("zonewall/policy/x.py", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import zonewall.compiler.ir\n", "policy (floor 1) imports zonewall.compiler.ir, above it (floor 2)"),
        ("zonewall/agent/x.py", "from ..policy.documents import Documents\nfrom ..netns import run_in_netns\nfrom . import state\n", None),
    ],
)
def test_the_check_finds_upward_and_sideways_imports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str, source: str, expected: str | None) -> None:
    path = tmp_path / where
    path.parent.mkdir(parents=True)
    path.write_text(source)
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    found = [problem.split(": ", 1)[1] for problem in upward_imports([path])]
    assert found == ([] if expected is None else [expected])
