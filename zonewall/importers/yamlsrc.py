"""Plain YAML with line numbers, for importer side files (the Proxmox inventory)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .report import ImportFailure


class LDict(dict):
    """A mapping that remembers its line and each key's line (1-based)."""

    line: int = 0
    key_lines: dict[Any, int]


class LList(list):
    line: int = 0


def _convert(node: yaml.Node, shown: str) -> Any:
    if isinstance(node, yaml.MappingNode):
        out = LDict()
        out.line = node.start_mark.line + 1
        out.key_lines = {}
        for key_node, value_node in node.value:
            key = _convert(key_node, shown)
            if isinstance(key, (dict, list)):
                raise ImportFailure([f"{shown}:{key_node.start_mark.line + 1}: a key must be a plain value"])
            if key in out:
                raise ImportFailure([f"{shown}:{key_node.start_mark.line + 1}: {key!r} appears twice"])
            out[key] = _convert(value_node, shown)
            out.key_lines[key] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        seq = LList(_convert(v, shown) for v in node.value)
        seq.line = node.start_mark.line + 1
        return seq
    assert isinstance(node, yaml.ScalarNode)
    if node.tag == "tag:yaml.org,2002:int" and ":" in node.value:
        return node.value  # YAML 1.1 base-60 (a MAC address): keep the text
    return yaml.SafeLoader("").construct_object(node)


def load(path: Path, shown: str) -> Any:
    try:
        node = yaml.compose(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ImportFailure([f"{shown}{line}: not valid YAML: {getattr(exc, 'problem', exc)}"]) from None
    except OSError as exc:
        raise ImportFailure([f"{shown}: cannot read: {exc.strerror}"]) from None
    except RecursionError:  # PyYAML's pure-Python composer: bounded by Python's recursion limit
        raise ImportFailure([f"{shown}: not valid YAML: nested too deeply"]) from None
    return None if node is None else _convert(node, shown)
