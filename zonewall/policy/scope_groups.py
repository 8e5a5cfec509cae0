"""Groups scoped to a node: a node's documents keep only the groups it uses.

A group's members reach a node's ruleset only through a reference `group:NAME` in a
line the node's documents keep (its own VMs' and zones' rules blocks, and every
line outside the rules blocks: global, host and network rules, settings, security
groups) or in a group it keeps (groups hold groups). Every other group's entry is
blanked in that node's documents (its lines kept as empty lines, so positions and
default rule ids stay; a `groups:` section left with no entry becomes `groups: {}`),
so an edit of a group's members changes only the documents of the nodes that use it
(issue 14: a node a change leaves alone is sent the revision number alone).

The references are found in the text, so a scan must see every one: groups are
scoped only in a document whose `groups:` section is block style, each entry a
`NAME:` key at one indentation, and which holds no YAML anchor, alias, tag or
merge key (scope.unsafe_yaml) and no backslash (a double-quoted escape could spell a
reference the scan would not see). Anything else keeps every group on every node
(correct, larger). A mention the scan finds that is no reference (a comment) only
keeps a group that could have gone.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

Owner = tuple[str, str]  # ("vm", name) or ("zone", name): whose rules block

MENTION = re.compile(r"group:([a-z0-9][a-z0-9_-]*)")  # a group reference (model.NAME_PATTERN)
_HEADER = re.compile(r"^groups:[ \t]*(#.*)?$", re.MULTILINE)
_ENTRY = re.compile(r"""( +)([a-z0-9][a-z0-9_-]*|"[a-z0-9][a-z0-9_-]*"|'[a-z0-9][a-z0-9_-]*'):(\s.*)?$""")
EMPTY_SECTION = "groups: {}"


@dataclass(frozen=True)
class Section:
    """A document's `groups:` section: its header line, and each group's entry as
    lines [start, end) (its key line through its last line of members)."""

    line: int
    end: int  # the line after the section (the next top-level key's, or the document's end)
    entries: dict[str, tuple[int, int]]

    def entry_at(self, start: int, end: int) -> str | None:
        """The group whose entry holds lines [start, end), if one does."""
        for name, (first, last) in self.entries.items():
            if first <= start and end <= last:
                return name
        return None

    def meets_entry(self, start: int, end: int) -> bool:
        """Whether lines [start, end) (an insertion at `start` when empty) meet an
        entry: overlap it, or are put inside it or right after its last line."""
        return any(start <= last and (first < end or (start == end and first < start)) for first, last in self.entries.values())

    def shifted(self, at: int, moved: int) -> Section:
        """The section with every line from `at` on moved by `moved` lines."""
        if moved == 0:
            return self
        return Section(self.line + moved if self.line >= at else self.line, self.end + moved if self.end >= at else self.end,
                       {name: (first + moved, last + moved) if first >= at else (first, last) for name, (first, last) in self.entries.items()})


def line_indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def is_filler(line: str) -> bool:
    """A blank or comment line (it belongs to no entry or block by itself)."""
    stripped = line.strip()
    return not stripped or stripped.startswith("#")


def find_section(text: str, lines: list[str]) -> Section | None:
    """The document's groups section when it can be scoped (module docstring); None:
    keep every group (no section, or one the scan cannot read safely)."""
    found = list(_HEADER.finditer(text))
    if len(found) != 1:
        return None
    return parse_section(lines, text.count("\n", 0, found[0].start()))


def parse_section(lines: list[str], header: int) -> Section | None:
    """The section whose `groups:` header is line `header`; None if an entry is not
    a plain `NAME:` key at the section's indentation, or a group is named twice."""
    if _HEADER.fullmatch(lines[header]) is None:
        return None
    entries: dict[str, tuple[int, int]] = {}
    indent: int | None = None
    name: str | None = None
    start = end = 0
    i = header + 1
    while i < len(lines):
        line = lines[i]
        if is_filler(line):
            i += 1
            continue
        depth = line_indent(line)
        if depth == 0:
            break
        if "\t" in line:
            return None
        if indent is None:
            indent = depth
        if depth > indent or (depth == indent and line.lstrip(" ").startswith("- ")):
            if name is None:
                return None
            end = i + 1
            i += 1
            continue
        match = _ENTRY.fullmatch(line)
        if depth < indent or match is None:
            return None
        if name is not None:
            entries[name] = (start, end)
        name, start, end = match.group(2).strip("\"'"), i, i + 1
        if name in entries:
            return None
        i += 1
    if name is not None:
        if name in entries:
            return None
        entries[name] = (start, end)
    return Section(header, i, entries)


def section_after_edit(old: Section, lines: list[str], span: tuple[int, int, int], edited: Iterable[str]) -> Section | None:
    """The section after an edit of lines (`span`, in `old`'s numbering) that left the
    rules blocks as they were (no top-level key added or removed), read again only
    where the edit lies in it; None: scan the document."""
    start, old_end, new_end = span
    if start <= old.line < max(old_end, start + 1) or any(_HEADER.fullmatch(line) for line in edited):
        return None  # the header itself edited, or a second one written
    if old_end <= old.line or start > old.end:
        # before the section, or after the top-level key that ends it (the edit adds
        # or removes no top-level key: the rules blocks were kept)
        return old.shifted(old_end, new_end - old_end)
    return parse_section(lines, old.line)


def mentions(lines: Iterable[str]) -> frozenset[str]:
    return frozenset(MENTION.findall("\n".join(lines)))


class GroupUse:
    """Which groups each rules block and each group names, and which every node keeps."""

    def __init__(self, held: dict[str, frozenset[str]], by_owner: dict[Owner, frozenset[str]], everywhere: frozenset[str]) -> None:
        self.held = held  # group -> the groups its entry names
        self.by_owner = by_owner  # rules block -> the groups it names (blocks naming none left out)
        self.everywhere = everywhere  # named outside every rules block and entry: kept on every node

    @classmethod
    def scan(cls, texts: Mapping[str, str], sections: Mapping[str, Section], blocks: Mapping[str, list[tuple[int, int, Owner]]]) -> GroupUse:
        """Every mention of every document, each given to the rules block or entry its
        line lies in. `blocks`: document -> its rules blocks (start, end, owner)."""
        held: dict[str, set[str]] = {}
        by_owner: dict[Owner, set[str]] = {}
        everywhere: set[str] = set()
        for name, text in texts.items():
            section = sections.get(name)
            spans = sorted([*blocks.get(name, ()), *(((first, last, ("group", group)) for group, (first, last) in section.entries.items()) if section else ())])
            line = last = at = 0
            for match in MENTION.finditer(text):
                line += text.count("\n", last, match.start())
                last = match.start()
                while at < len(spans) and spans[at][1] <= line:
                    at += 1
                owner = spans[at][2] if at < len(spans) and spans[at][0] <= line else None
                if owner is None:
                    everywhere.add(match.group(1))
                elif owner[0] == "group":
                    held.setdefault(owner[1], set()).add(match.group(1))
                else:
                    by_owner.setdefault(owner, set()).add(match.group(1))
            if section is not None:
                for group in section.entries:
                    held.setdefault(group, set())
        return cls({g: frozenset(n) for g, n in held.items()}, {o: frozenset(n) for o, n in by_owner.items()}, frozenset(everywhere))

    def with_owner(self, owner: Owner, named: frozenset[str]) -> GroupUse:
        """This use with one rules block's mentions replaced."""
        if self.by_owner.get(owner, frozenset()) == named:
            return self
        by_owner = dict(self.by_owner)
        if named:
            by_owner[owner] = named
        else:
            by_owner.pop(owner, None)
        return GroupUse(self.held, by_owner, self.everywhere)

    def with_held(self, held: dict[str, frozenset[str]]) -> GroupUse:
        return self if held == self.held else GroupUse(held, self.by_owner, self.everywhere)

    def closure(self, named: Iterable[str]) -> frozenset[str]:
        """`named` and every group they hold, to the end."""
        found = set(named)
        todo = list(found)
        while todo:
            for inner in self.held.get(todo.pop(), ()):
                if inner not in found:
                    found.add(inner)
                    todo.append(inner)
        return frozenset(found)


def blank_entries(lines: list[str], section: Section, kept: frozenset[str]) -> bool:
    """Blank the entries of the groups not `kept` (in place); whether any was."""
    dropped = [span for group, span in section.entries.items() if group not in kept]
    for first, last in dropped:
        lines[first:last] = [""] * (last - first)
    if dropped and len(dropped) == len(section.entries):
        lines[section.line] = EMPTY_SECTION  # a section of no entry is null, not an empty mapping
    return bool(dropped)
