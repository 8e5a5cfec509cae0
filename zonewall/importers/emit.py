"""A small YAML writer for imported policies: deterministic, and with comments.

The policy's own loader reads the result; PyYAML's dumper cannot put a comment
(`# from 100.fw:12`) beside a rule, so the few shapes a policy needs are written by
hand: block mappings, lists of one-line items, and one-line flow mappings (`Flow`)
for rules, NICs and other small records. Every string that would not read back as
itself in plain style is written as a JSON (= YAML double-quoted) string.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

_PLAIN = re.compile(r"^[A-Za-z0-9_$][A-Za-z0-9_./$-]*$")


class Flow(dict):
    """A mapping written on one line: `{direction: in, action: accept, tcp: 22}`."""


class Raw(str):
    """A scalar written exactly as given (e.g. `0x0800`, which YAML reads as a number)."""


@dataclass(frozen=True)
class Commented:
    """A value with a comment written after it (or after its key, for blocks)."""

    value: Any
    comment: str | None = None


@dataclass
class Document:
    """One output file: top-level keys in order, header comment lines."""

    header: list[str] = field(default_factory=list)
    body: dict[str, Any] = field(default_factory=dict)


def scalar(value: Any) -> str:
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    text = str(value)
    if _PLAIN.match(text):
        try:
            if yaml.safe_load(text) == text:
                return text
        except yaml.YAMLError:
            pass
    return json.dumps(text)


def _comment(text: str | None) -> str:
    if not text:
        return ""
    return "  # " + " ".join(text.split())


def _unwrap(value: Any) -> tuple[Any, str | None]:
    if isinstance(value, Commented):
        return value.value, value.comment
    return value, None


def _inline_ok(value: Any) -> bool:
    if isinstance(value, Flow):
        return True
    if isinstance(value, (list, tuple)):
        return all(not isinstance(v, (dict, Commented)) or isinstance(v, Flow) for v in value) and all(_inline_ok(v) for v in value)
    return not isinstance(value, (dict, Commented))


def inline(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{scalar(k)}: {inline(_unwrap(v)[0])}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(inline(_unwrap(v)[0]) for v in value) + "]"
    return scalar(value)


def _block(value: Any, indent: int, out: list[str]) -> None:
    pad = " " * indent
    if isinstance(value, dict) and not isinstance(value, Flow):
        for key, raw in value.items():
            item, comment = _unwrap(raw)
            if isinstance(item, dict) and not isinstance(item, Flow) and not item:
                out.append(f"{pad}{scalar(key)}: {{}}{_comment(comment)}")
            elif isinstance(item, (list, tuple)) and not item:
                out.append(f"{pad}{scalar(key)}: []{_comment(comment)}")
            elif _inline_ok(item) and not (isinstance(item, (list, tuple)) and any(isinstance(v, (Flow, Commented)) for v in item)):
                out.append(f"{pad}{scalar(key)}: {inline(item)}{_comment(comment)}")
            else:
                out.append(f"{pad}{scalar(key)}:{_comment(comment)}")
                _block(item, indent + 2, out)
        return
    if isinstance(value, (list, tuple)):
        for raw in value:
            item, comment = _unwrap(raw)
            if isinstance(item, dict) and not isinstance(item, Flow):
                item = Flow(item)
            out.append(f"{pad}- {inline(item)}{_comment(comment)}")
        return
    out.append(f"{pad}{inline(value)}")


def render(document: Document) -> str:
    out = [f"# {line}".rstrip() for line in document.header]
    for key, raw in document.body.items():
        if out:
            out.append("")
        _block({key: raw}, 0, out)
    return "\n".join(out) + "\n"


class OutputExists(Exception):
    pass


def write_policy(out_dir: Path, documents: dict[str, Document], report_text: str | None, *, force: bool = False) -> list[Path]:
    """Write `documents` (file name -> Document) and the report into `out_dir`.

    A directory that already holds policy files is refused (they would be merged
    with the import and clash) unless `force`, which overwrites same-named files.
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputExists(f"{out_dir} exists and is not a directory")
    existing = sorted(p.name for p in out_dir.glob("*.y*ml")) if out_dir.is_dir() else []
    if existing and not force:
        raise OutputExists(f"{out_dir} already holds policy files ({', '.join(existing)}); choose an empty directory or use --force")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name in sorted(documents):
        path = out_dir / name
        path.write_text(render(documents[name]))
        written.append(path)
    if report_text is not None:
        path = out_dir / "import-report.txt"
        path.write_text(report_text)
        written.append(path)
    return written
