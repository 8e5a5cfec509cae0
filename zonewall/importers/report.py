"""What an import could not translate exactly, each item with its source location."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

# skipped: nothing was written for it; inexact: written, but it behaves differently
# (the message says how); note: translated exactly, but worth a look (not an error
# under --strict).
Severity = Literal["skipped", "inexact", "note"]
ORDER: dict[str, int] = {"skipped": 0, "inexact": 1, "note": 2}


@dataclass(frozen=True)
class Where:
    """A position in a source file (line 0: the file as a whole)."""

    file: str
    line: int = 0

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file


@dataclass(frozen=True)
class Item:
    where: Where
    severity: Severity
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.severity}: {self.message}"

    def to_json(self) -> dict[str, object]:
        return {"file": self.where.file, "line": self.where.line, "severity": self.severity, "message": self.message}


@dataclass
class Report:
    items: list[Item] = field(default_factory=list)

    def add(self, where: Where, severity: Severity, message: str) -> None:
        item = Item(where, severity, message)
        if item not in self.items:
            self.items.append(item)

    def skipped(self, where: Where, message: str) -> None:
        self.add(where, "skipped", message)

    def inexact(self, where: Where, message: str) -> None:
        self.add(where, "inexact", message)

    def note(self, where: Where, message: str) -> None:
        self.add(where, "note", message)

    def sorted(self) -> list[Item]:
        return sorted(self.items, key=lambda i: (i.where.file, i.where.line, ORDER[i.severity], i.message))

    @property
    def blocking(self) -> list[Item]:
        """Items that make `--strict` fail: everything not translated exactly."""
        return [i for i in self.sorted() if i.severity != "note"]

    def render(self, title: str) -> str:
        lines = [f"# {title}", ""]
        counts = {s: sum(1 for i in self.items if i.severity == s) for s in ORDER}
        lines.append(", ".join(f"{n} {s}" for s, n in counts.items()))
        lines.append("")
        lines += [str(i) for i in self.sorted()]
        return "\n".join(lines) + "\n"


class ImportFailure(Exception):
    """Input that cannot be read at all (bad XML, a broken inventory): nothing is written."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems
