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


def line_span(old: list[str], new: list[str], prefix: int = 0, suffix: int = 0) -> tuple[int, int, int]:
    """(start, end in old, end in new): the one span outside the common prefix and
    suffix. `prefix` and `suffix`: lines already known equal at either end."""
    limit = min(len(old), len(new))
    while prefix < limit and old[prefix] == new[prefix]:
        prefix += 1
    suffix = min(suffix, limit - prefix)
    while suffix < limit - prefix and old[-1 - suffix] == new[-1 - suffix]:
        suffix += 1
    return prefix, len(old) - suffix, len(new) - suffix


def text_span(old: str, new: str, old_lines: list[str], new_lines: list[str]) -> tuple[int, int, int]:
    """`line_span` of the texts' lines (`old_lines` is old.split("\n"), and so for new),
    the texts compared first, a block of characters at a time in C: the controller
    asks it of a 10,000-VM policy's 260,000 lines several times per change, ~20 ms
    each line by line."""
    head = common_prefix(old, new)
    tail = common_suffix(old, new, min(len(old), len(new)) - head)
    # the lines wholly inside the common prefix (each ends there) and suffix (each starts there)
    return line_span(old_lines, new_lines, old.count("\n", 0, head), old.count("\n", len(old) - tail))


BLOCK = 1 << 15  # characters compared at once


def common_prefix(a: str, b: str) -> int:
    """Characters at the start of both (compared a block at a time in C)."""
    size, at = min(len(a), len(b)), 0
    while at < size:
        end = min(size, at + BLOCK)
        if a[at:end] != b[at:end]:
            return at + _first_difference(a[at:end], b[at:end])
        at = end
    return size


def common_suffix(a: str, b: str, most: int) -> int:
    """Characters at the end of both, at most `most`."""
    done = 0
    while done < most:
        step = min(BLOCK, most - done)
        x, y = a[len(a) - done - step:len(a) - done], b[len(b) - done - step:len(b) - done]
        if x != y:
            return done + _first_difference(x[::-1], y[::-1])
        done += step
    return done


def _first_difference(a: str, b: str) -> int:
    """The index of the first character where a and b (of one length, not equal) differ."""
    low, high = 0, len(a)  # a[:low] == b[:low]; they differ before high
    while high - low > 16:
        middle = (low + high) // 2
        if a[low:middle] == b[low:middle]:
            low = middle
        else:
            high = middle
    while a[low] == b[low]:
        low += 1
    return low


def make_delta(old: Documents, new: Documents) -> Delta:
    changed: dict[str, list[Any]] = {}
    for name, text in new.items():
        before = old.get(name)
        if before is None or before == text:
            continue
        changed[name] = list(changed_lines(before, text))
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
            if not all(isinstance(line, str) for line in lines):
                raise DeltaMismatch(f"the delta's span of {name!r} does not fit the base")
            out[name] = splice_lines(base[name], start, end, lines, name)
        for name, text in delta["added"].items():
            out[name] = str(text)
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, DeltaMismatch):
            raise
        raise DeltaMismatch(f"malformed delta: {exc}") from None
    return out


def splice_lines(text: str, start: int, end: int, lines: list[str], name: str = "the document") -> str:
    """"\n".join(text.split("\n")[:start] + lines + text.split("\n")[end:]) without
    splitting the text: at 10,000 VMs a node's document is 260,000 lines (mostly the
    blank lines of other nodes' rules), and the controller applies a shared edit to
    each of 100 nodes' documents (~9 ms and ~7 MiB each, split and joined)."""
    count = text.count("\n") + 1
    if not (isinstance(start, int) and isinstance(end, int) and 0 <= start <= end <= count):
        raise DeltaMismatch(f"the delta's span of {name!r} does not fit the base")
    # "\n".join of the three groups that are not empty lists: before, new, after
    parts = []
    if start > 0:  # the lines before `start`, without the newline after them
        parts.append(text if start == count else text[:_newline(text, start)])
    if lines:
        parts.append("\n".join(lines))
    if end < count:  # the lines from `end` on
        parts.append(text if end == 0 else text[_newline(text, end) + 1:])
    return "\n".join(parts)


NEWLINE_BLOCK = 1 << 16


def _newline(text: str, k: int) -> int:
    """The index of the k-th newline of `text` (1 <= k <= its newlines): whole blocks
    counted in C, then halves of the block that holds it."""
    low, seen = 0, 0
    while True:  # the block holding it
        high = min(len(text), low + NEWLINE_BLOCK)
        here = text.count("\n", low, high)
        if seen + here >= k:
            break
        seen += here
        low = high
    while high - low > 64:  # halves, until a few lines' worth
        middle = (low + high) // 2
        here = text.count("\n", low, middle)
        if seen + here >= k:
            high = middle
        else:
            seen += here
            low = middle
    at = low - 1
    for _ in range(k - seen):
        at = text.index("\n", at + 1)
    return at


def changed_lines(old: str, new: str) -> tuple[int, int, list[str]]:
    """(start, end in old, the new lines): `line_span` of the texts' lines and the
    lines of `new` it spans, without splitting either text (a node's document at
    10,000 VMs is 260,000 lines: ~25 ms split, on the path of a change's first answer)
    and counting each part of the texts' newlines once."""
    head = common_prefix(old, new)
    tail = common_suffix(old, new, min(len(old), len(new)) - head)
    cut_old, cut_new = len(old) - tail, len(new) - tail
    prefix = old.count("\n", 0, head)  # the lines wholly inside the common prefix
    suffix = old.count("\n", cut_old)  # and inside the common suffix (they do not overlap)
    count_old = prefix + old.count("\n", head, cut_old) + suffix + 1
    count_new = prefix + new.count("\n", head, cut_new) + suffix + 1
    limit = min(count_old, count_new)
    # line by line from there, as line_span: only when one text ends where the other
    # goes on, so at most one line, and then nothing is common at the end (tail 0)
    at_old = at_new = old.rfind("\n", 0, head) + 1  # where line `prefix` starts (the same in both)
    while prefix < limit:
        end_old, end_new = _line_end(old, at_old), _line_end(new, at_new)
        if old[at_old:end_old] != new[at_new:end_new]:
            break
        prefix, at_old, at_new = prefix + 1, end_old + 1, end_new + 1
    # where the suffix's lines start (one past the end when there are none), then from the end
    from_old, from_new = (old.find("\n", cut_old) + 1, new.find("\n", cut_new) + 1) if suffix else (len(old) + 1, len(new) + 1)
    while suffix < limit - prefix:
        start_old, start_new = old.rfind("\n", 0, from_old - 1) + 1, new.rfind("\n", 0, from_new - 1) + 1
        if old[start_old:from_old - 1] != new[start_new:from_new - 1]:
            break
        suffix, from_old, from_new = suffix + 1, start_old, start_new
    lines = new[at_new:from_new - 1].split("\n") if count_new - suffix > prefix else []
    return prefix, count_old - suffix, lines


def _line_end(text: str, start: int) -> int:
    """The index of the newline ending the line that starts at `start` (len: the last line)."""
    end = text.find("\n", start)
    return len(text) if end < 0 else end
