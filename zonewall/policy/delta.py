"""A change between two document sets, small enough to send instead of the set.

A one-rule commit changes a few lines of one document; the node's agent has the
previous set, so the controller sends only the span that differs in each changed
document (common prefix and suffix of lines). The receiver checks the result
against the new set's content hash, so a delta against another base can never be
applied silently wrong (it then asks for the whole set).
"""

from __future__ import annotations

from typing import Any

Documents = dict[str, str]
Delta = dict[str, Any]  # {"changed": {name: [start, end, [lines]]}, "added": {name: text}, "removed": [name]}


class DeltaMismatch(ValueError):
    """The delta does not fit the documents it is applied to."""


def line_span(old: list[str], new: list[str]) -> tuple[int, int, int]:
    """(start, end in old, end in new): the one span outside the common prefix and suffix."""
    prefix, limit = 0, min(len(old), len(new))
    while prefix < limit and old[prefix] == new[prefix]:
        prefix += 1
    suffix = 0
    while suffix < limit - prefix and old[-1 - suffix] == new[-1 - suffix]:
        suffix += 1
    return prefix, len(old) - suffix, len(new) - suffix


def make_delta(old: Documents, new: Documents) -> Delta:
    changed: dict[str, list[Any]] = {}
    for name, text in new.items():
        before = old.get(name)
        if before is None or before == text:
            continue
        a, b = before.split("\n"), text.split("\n")
        start, old_end, new_end = line_span(a, b)
        changed[name] = [start, old_end, b[start:new_end]]
    return {
        "changed": changed,
        "added": {name: text for name, text in new.items() if name not in old},
        "removed": sorted(name for name in old if name not in new),
    }


def delta_size(delta: Delta) -> int:
    """Characters the delta carries (to choose between it and the whole set)."""
    return (sum(len(line) + 1 for _, _, lines in delta["changed"].values() for line in lines)
            + sum(len(text) for text in delta["added"].values()) + 64 * (len(delta["changed"]) + len(delta["removed"])))


def apply_delta(base: Documents, delta: Delta) -> Documents:
    """The new document set; DeltaMismatch when the delta does not fit `base`."""
    try:
        out = {name: text for name, text in base.items() if name not in set(delta["removed"])}
        for name, (start, end, lines) in delta["changed"].items():
            if name not in base:
                raise DeltaMismatch(f"the delta changes {name!r}, which the base does not have")
            old = base[name].split("\n")
            if not (0 <= start <= end <= len(old)) or not all(isinstance(line, str) for line in lines):
                raise DeltaMismatch(f"the delta's span of {name!r} does not fit the base")
            out[name] = "\n".join(old[:start] + list(lines) + old[end:])
        for name, text in delta["added"].items():
            out[name] = str(text)
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, DeltaMismatch):
            raise
        raise DeltaMismatch(f"malformed delta: {exc}") from None
    return out
