"""Policy errors: every problem names file:line:col, the key, and what was expected."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Loc:
    file: str
    line: int  # 1-based
    col: int  # 1-based

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


@dataclass(frozen=True)
class Problem:
    loc: Loc | None
    key: str  # dotted path of the offending key, e.g. vms.web1.rules[0].tcp
    message: str

    def __str__(self) -> str:
        where = f"{self.loc}: " if self.loc else ""
        key = f"{self.key}: " if self.key else ""
        return f"{where}{key}{self.message}"

    def to_json(self) -> dict[str, object]:
        return {
            "file": self.loc.file if self.loc else None,
            "line": self.loc.line if self.loc else None,
            "col": self.loc.col if self.loc else None,
            "key": self.key,
            "message": self.message,
        }


MORE_PREFIX = "... and "  # the line that stands for problems left out (always listed last)


def more_problems(left_out: int, shown: int) -> Problem:
    return Problem(None, "", f"{MORE_PREFIX}{left_out} more problems (the first {shown} are listed; fix them and check again)")


class PolicyError(Exception):
    """The policy was rejected whole; `problems` lists every reason found."""

    def __init__(self, problems: list[Problem]):
        self.problems = sorted(problems, key=lambda p: (p.message.startswith(MORE_PREFIX), p.loc or Loc("", 0, 0), p.key, p.message))
        super().__init__("\n".join(str(p) for p in self.problems))


def format_path(path: tuple[object, ...]) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out
