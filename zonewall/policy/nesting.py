"""Bounded nesting for YAML documents, checked before anything recurses over them.

libyaml's composer (PyYAML's CSafeLoader) builds nested collections by recursion in
C: about 280 bytes of stack a level, so a 50 KB document of 25,000 `[` overflows an
8 MiB stack and kills the process (`zonewall check`, the controller). Python's own
recursion limit does not apply to that code, so the guard has to come first:

1. a sound upper bound on the depth, from two C-speed scans of the text: every flow
   level opens with `[` or `{`, and every block level starts at a column no smaller
   than its parent's and, at least every other level, a greater one (indentation and
   the compact `- `/`? ` indicators);
2. composition on a thread whose stack holds that bound with room to spare (the
   pages are reserved, touched only as deep as the document really goes); past
   `MAX_STACK` the depth is measured exactly from the parser's events first;
3. the real depth measured on the composed tree, without recursion, and refused
   past `MAX_DEPTH` with the position of the first node that is too deep.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import yaml

MAX_DEPTH = 64  # a policy nests about 8 levels deep (vms > vm > nics > [ ] > nic > ips > [ ])
STACK_PER_LEVEL = 512  # bytes: libyaml's composer was measured at about 280 a level
MAX_STACK = 256 * 1024 * 1024  # virtual; past this the depth is measured from events first
_INDENT_PROBE = 64  # columns: a block prefix this long is measured exactly
_BLOCK_PREFIX = re.compile(rf"(?m)^[ ?-]{{{_INDENT_PROBE}}}")
_BLOCK_PREFIXES = re.compile(r"(?m)^[ ?-]+")

T = TypeVar("T")


class TooDeep(Exception):
    """A document nested deeper than MAX_DEPTH; `mark` is where (a yaml Mark) or None."""

    def __init__(self, mark: Any | None) -> None:
        super().__init__(f"nested more than {MAX_DEPTH} levels deep")
        self.mark = mark


def depth_bound(text: str) -> int:
    """An upper bound on the nesting depth of any YAML document `text` can hold."""
    if _BLOCK_PREFIX.search(text) is None:
        widest = _INDENT_PROBE - 1
    else:
        widest = max(map(len, _BLOCK_PREFIXES.findall(text)), default=0)
    return text.count("[") + text.count("{") + 2 * (widest + 1)


def event_depth(text: str, loader: type[Any]) -> None:
    """Exact depth from the parser's events (no recursion); TooDeep past MAX_DEPTH."""
    depth = 0
    for event in yaml.parse(text, Loader=loader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise TooDeep(event.start_mark)
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def tree_depth(root: yaml.Node | None) -> None:
    """TooDeep if the composed tree nests deeper than MAX_DEPTH (iterative walk)."""
    if root is None:
        return
    stack: list[tuple[yaml.Node, int]] = [(root, 1)]
    seen: set[int] = set()  # aliases share nodes: each is walked once
    while stack:
        node, depth = stack.pop()
        if not isinstance(node, yaml.CollectionNode) or id(node) in seen:
            continue
        if depth > MAX_DEPTH:
            raise TooDeep(node.start_mark)
        seen.add(id(node))
        children = node.value if isinstance(node, yaml.SequenceNode) else [part for pair in node.value for part in pair]
        stack.extend((child, depth + 1) for child in children)


def compose_bounded(text: str, compose: Callable[[], T], event_loader: type[Any]) -> T:
    """Run `compose` (which parses `text`) where its recursion cannot overflow."""
    bound = depth_bound(text)
    if bound <= MAX_DEPTH:
        return compose()
    stack = bound * STACK_PER_LEVEL
    if stack > MAX_STACK:
        event_depth(text, event_loader)  # refuses the deep ones before they recurse
        stack = MAX_DEPTH * STACK_PER_LEVEL
    return _on_big_stack(compose, _MIB * (stack // _MIB + 4))


_MIB = 1024 * 1024
_stack_size_lock = threading.Lock()  # threading.stack_size is process-wide


def _on_big_stack(work: Callable[[], T], stack: int) -> T:
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = work()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            box["error"] = exc

    with _stack_size_lock:
        previous = threading.stack_size(stack)
        try:
            thread = threading.Thread(target=run, name="yaml-compose")
            thread.start()
        finally:
            threading.stack_size(previous)
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]
