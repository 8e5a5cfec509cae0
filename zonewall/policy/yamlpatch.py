"""Rewrite a YAML document so that it reads as new data, touching only what differs.

A targeted change (add a rule, move a VM, ...) edits the parsed data; writing that
data back with a YAML dumper would lose every comment, blank line and flow-style
choice of the operator's file, so API edits and a git workflow could not coexist.
Instead the original text is patched where the data differs, at the positions the
YAML parser reports for each node:

* a key or list item that went away loses its lines, with the comment lines directly
  above it (they describe it) but never the comments that describe its neighbours;
* a new key or item is inserted in the style of its neighbours (a one-line flow
  mapping beside flow mappings, a block beside blocks), at their indentation, above
  the comments of the item that follows it;
* a changed scalar or flow collection is replaced in place; everything else stays
  byte for byte.

The result is parsed again with the policy loader's own YAML dialect and must equal
the new data exactly; otherwise `PatchFailed` is raised (the caller falls back to a
plain dump, which loses comments but never changes meaning).
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from typing import Any

import yaml

# The loader's dialect (no base-60 numbers: an unquoted MAC stays a string).
from .source import _Loader as PolicyYamlLoader

INDENT = 2  # for new nested block content


class PatchFailed(ValueError):
    """The text could not be patched to read exactly as the new data."""


def parse(text: str) -> Any:
    return yaml.load(text, Loader=PolicyYamlLoader)  # noqa: S506 - a SafeLoader subclass


@dataclass(frozen=True)
class _Edit:
    start: int
    end: int
    text: str


def _canonical(value: Any) -> str:
    """A text equal for equal data (keys of any type: YAML 1.1 reads `on:` as True)."""
    if isinstance(value, dict):
        return "{" + ",".join(sorted(f"{_canonical(k)}:{_canonical(v)}" for k, v in value.items())) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_canonical(v) for v in value) + "]"
    return f"{type(value).__name__}:{json.dumps(value, default=str)}"


def render_flow(value: Any) -> str:
    """One line of flow YAML (`{id: a, tcp: [80, 443]}`, a scalar, ...)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=1 << 20, sort_keys=False, allow_unicode=True).strip()
    return text.removesuffix("\n...")  # a scalar document ends with an explicit end marker


def render_block(value: Any) -> list[str]:
    """Block YAML lines (no trailing newline), leaf collections in flow style."""
    text = yaml.safe_dump(value, default_flow_style=None, width=120, sort_keys=False, allow_unicode=True)
    return text.rstrip("\n").split("\n")


class _Patcher:
    def __init__(self, text: str) -> None:
        self.text = text
        self.loader = PolicyYamlLoader(text)
        try:
            self.root = self.loader.get_single_node()
        finally:
            self.loader.dispose()
        self.edits: list[_Edit] = []

    # -- positions ---------------------------------------------------------------------

    def line_start(self, index: int) -> int:
        return self.text.rfind("\n", 0, index) + 1

    def line_end(self, index: int) -> int:
        """Index just past the newline ending the line that holds `index`."""
        found = self.text.find("\n", index)
        return len(self.text) if found < 0 else found + 1

    def content_end(self, node: yaml.Node) -> int:
        """Index just past the last character of the node's own content."""
        if isinstance(node, yaml.MappingNode) and not node.flow_style and node.value:
            return self.content_end(node.value[-1][1]) if not _empty(node.value[-1][1]) else node.value[-1][0].end_mark.index
        if isinstance(node, yaml.SequenceNode) and not node.flow_style and node.value:
            return self.content_end(node.value[-1])
        end = node.end_mark.index
        while end > node.start_mark.index and self.text[end - 1] in " \t\r\n":
            end -= 1
        return end

    def attached_comments_start(self, line_start: int, indent: int) -> int:
        """The start of the comment lines directly above a line (no blank line between)
        and indented at least like it: they describe it and travel with it."""
        start = line_start
        while start > 0:
            previous = self.line_start(start - 1)
            line = self.text[previous:start]
            stripped = line.strip()
            if not stripped.startswith("#") or len(line) - len(line.lstrip(" ")) < indent:
                break
            start = previous
        return start

    def _blank_line_at(self, index: int) -> bool:
        return 0 <= index < len(self.text) and self.text[index: self.line_end(index)].strip() == ""

    def delete_lines(self, start: int, end: int) -> None:
        """Remove whole lines [start, end); two blank lines left around it become one."""
        before_blank = start > 0 and self._blank_line_at(self.line_start(start - 1))
        if before_blank and self._blank_line_at(end):
            end = self.line_end(end)
        self.edits.append(_Edit(start, end, ""))

    def insert(self, index: int, text: str) -> None:
        self.edits.append(_Edit(index, index, text))

    def replace(self, start: int, end: int, text: str) -> None:
        self.edits.append(_Edit(start, end, text))

    def column(self, node: yaml.Node) -> int:
        return int(node.start_mark.column)

    def dash_column(self, item: yaml.Node) -> int:
        index = item.start_mark.index - 1
        while index >= 0 and self.text[index] == " ":
            index -= 1
        if index >= 0 and self.text[index] == "-":
            return index - self.line_start(index)
        raise PatchFailed("a block sequence item without its dash")

    def construct(self, node: yaml.Node) -> Any:
        loader = PolicyYamlLoader("")
        try:
            return loader.construct_object(node, deep=True)
        finally:
            loader.dispose()

    # -- structure ---------------------------------------------------------------------

    def mapping(self, node: yaml.MappingNode, new: dict[Any, Any]) -> None:
        if node.flow_style:
            self.replace(node.start_mark.index, node.end_mark.index, render_flow(new))
            return
        entries = [(self.construct(k), k, v) for k, v in node.value]
        indent = self.column(node.value[0][0]) if node.value else 0
        present = {key for key, _, _ in entries}
        for key, key_node, value_node in entries:
            if key not in new:
                start = self.line_start(key_node.start_mark.index)
                self.delete_lines(self.attached_comments_start(start, indent), self.line_end(self.content_end(value_node)))
            else:
                self.value(key_node, value_node, new[key], indent)
        # a new key goes after the key that precedes it in `new` (at the end if none does)
        previous_end = {key: self.line_end(self.content_end(value_node)) for key, _, value_node in entries}
        last = self.line_end(self.content_end(node))
        for key, value in new.items():
            if key in present:
                last = previous_end[key]
                continue
            self.insert(last, self.entry_text(key, value, indent))

    def entry_text(self, key: Any, value: Any, indent: int) -> str:
        pad = " " * indent
        head = f"{pad}{render_flow(key)}:"
        if isinstance(value, (dict, list)) and value and _needs_block(value):  # `key:` and the block below it
            return head + "\n" + "".join(f"{pad}{' ' * INDENT}{line}\n" for line in render_block(value))
        return f"{head} {render_flow(value)}\n"

    def value(self, key_node: yaml.Node, node: yaml.Node, new: Any, indent: int) -> None:
        old = self.construct(node)
        if old == new and type(old) is type(new):
            return
        if isinstance(node, yaml.MappingNode) and not node.flow_style and node.value and isinstance(new, dict) and new:
            self.mapping(node, new)
        elif isinstance(node, yaml.SequenceNode) and not node.flow_style and node.value and isinstance(new, list) and new:
            self.sequence(node, new)
        elif (isinstance(node, yaml.ScalarNode) or node.flow_style) and not (_vacant(node) and isinstance(new, (dict, list)) and new and _needs_block(new)):
            if _empty(node):  # `key:` with nothing after it
                self.insert(key_node.end_mark.index + self._colon_offset(key_node), " " + render_flow(new))
            else:
                self.replace(node.start_mark.index, node.end_mark.index, render_flow(new))
        else:  # a block value becomes something else, or an empty value becomes a block
            start = key_node.start_mark.index
            line = self.line_start(start)
            end = self.line_end(self.content_end(node)) if not _empty(node) else self.line_end(start)
            self.replace(line, end, self.entry_text(self.construct(key_node), new, indent))

    def _colon_offset(self, key_node: yaml.Node) -> int:
        rest = self.text[key_node.end_mark.index:]
        offset = rest.find(":")
        if offset < 0:
            raise PatchFailed("a mapping key without its colon")
        return offset + 1

    def sequence(self, node: yaml.SequenceNode, new: list[Any]) -> None:
        items = list(node.value)
        old = [self.construct(item) for item in items]
        dash = self.dash_column(items[0])
        matcher = difflib.SequenceMatcher(a=[_canonical(v) for v in old], b=[_canonical(v) for v in new], autojunk=False)
        for tag, i1, i2, j1, j2 in matcher.get_opcodes():
            if tag == "equal":
                continue
            if tag == "replace" and i2 - i1 == j2 - j1:
                for offset in range(i2 - i1):
                    self.item(items[i1 + offset], new[j1 + offset], dash)
                continue
            for index in range(i1, i2):
                self.delete_item(items, index, dash)
            if j2 > j1:
                where = self.item_start(items[i2], dash) if i2 < len(items) else self.line_end(self.content_end(items[-1]))
                style = items[min(i1, len(items) - 1)]
                self.insert(where, "".join(self.item_text(value, dash, style) for value in new[j1:j2]))

    def item_start(self, item: yaml.Node, dash: int) -> int:
        return self.attached_comments_start(self.line_start(item.start_mark.index), dash)

    def delete_item(self, items: list[yaml.Node], index: int, dash: int) -> None:
        item = items[index]
        self.delete_lines(self.item_start(item, dash), self.line_end(self.content_end(item)))

    def item(self, node: yaml.Node, new: Any, dash: int) -> None:
        if isinstance(node, yaml.MappingNode) and not node.flow_style and node.value and isinstance(new, dict) and new:
            self.mapping(node, new)
        elif isinstance(node, yaml.SequenceNode) and not node.flow_style and node.value and isinstance(new, list) and new:
            self.sequence(node, new)
        elif isinstance(node, yaml.ScalarNode) or node.flow_style:
            self.replace(node.start_mark.index, node.end_mark.index, render_flow(new))
        else:
            start = self.line_start(node.start_mark.index)
            self.replace(start, self.line_end(self.content_end(node)), self.item_text(new, dash, node))

    def item_text(self, value: Any, dash: int, neighbour: yaml.Node) -> str:
        pad = " " * dash
        block_neighbour = isinstance(neighbour, (yaml.MappingNode, yaml.SequenceNode)) and not neighbour.flow_style
        if isinstance(value, (dict, list)) and value and block_neighbour:
            lines = render_block(value)
            return f"{pad}- {lines[0]}\n" + "".join(f"{pad}  {line}\n" for line in lines[1:])
        return f"{pad}- {render_flow(value)}\n"

    # -- result --------------------------------------------------------------------------

    def result(self) -> str:
        text = self.text
        for edit in sorted(self.edits, key=lambda e: (e.start, e.end), reverse=True):
            text = text[: edit.start] + edit.text + text[edit.end:]
        return text


def _empty(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null" and node.start_mark.index == node.end_mark.index


def _vacant(node: yaml.Node) -> bool:
    """Nothing, `[]` or `{}`: a value whose first content decides its layout afresh."""
    return _empty(node) or (isinstance(node, (yaml.MappingNode, yaml.SequenceNode)) and not node.value)


def _needs_block(value: Any) -> bool:
    """Whether a new collection is written as a block (it holds collections, or its
    flow form would be a long line)."""
    if isinstance(value, dict):
        return any(isinstance(v, (dict, list)) and v for v in value.values()) or len(render_flow(value)) > 100
    return any(isinstance(v, (dict, list)) for v in value) or len(render_flow(value)) > 100


def patch(text: str, new: Any) -> str:
    """`text` changed to read as `new` (see the module docstring); PatchFailed if not possible."""
    try:
        patcher = _Patcher(text)
    except yaml.YAMLError as exc:
        raise PatchFailed(f"unreadable YAML: {exc}") from None
    root = patcher.root
    if not isinstance(root, yaml.MappingNode) or root.flow_style or not isinstance(new, dict):
        raise PatchFailed("only a document that is a block mapping can be patched")
    patcher.mapping(root, new)
    result = patcher.result()
    try:
        reread = parse(result)
    except yaml.YAMLError as exc:
        raise PatchFailed(f"the patched text does not parse: {exc}") from None
    if _canonical(reread) != _canonical(new) or reread != new:
        raise PatchFailed("the patched text does not read as the edited data")
    return result
