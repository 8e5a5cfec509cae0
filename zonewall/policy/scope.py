"""Each node's desired state: the revision's documents scoped to that node.

The controller validates a revision once; an agent then needs only what compiles
its own node. Most of a large policy is per-VM rules, and a VM's rules are rendered
only into that VM's chains, on that VM's node; a zone's rules likewise only into
the chains of the zone's VMs. So a node's documents are the revision's documents
with the `rules:` block of every VM placed on another node, and of every zone with
no VM on this node, left out. Every other line stays, so the node compiles exactly
what the whole policy gives it: other VMs still name their addresses (address sets,
groups, zones, a network's guests), and the left-out lines are replaced by empty
lines (a zone's first one by `rules: []`), so every position, and with it every rule
id that defaults to `file:line`, is unchanged (tests/controller/test_scope.py compiles both and compares).

Left out only where the text makes that safe: a block-style `rules:` key of a
block-style VM or zone entry under a top-level `vms:` or `zones:`, in a document
without YAML anchors, aliases or tags; anything else stays in the node's documents
(correct, larger). A zone's rules are left out only when the scoper knows which
zone each VM is in (`zone_of`).

`affected` decides incrementally which nodes a change can touch: an edit that keeps
every line where it was and lies inside one VM's (or zone's) rules block changes
only the documents of the nodes holding that VM (or a VM of that zone); anything
else is treated as touching every node.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .delta import Delta, changed_lines, text_span
from .documents import Documents
from .scope_groups import (
    GroupUse,
    Section,
    blank_entries,
    find_section,
    is_filler,
    line_indent,
    mentions,
    section_after_edit,
)

SCOPE_MARK = "# zonewall: scoped to node "  # appended to each scoped document: rules of other nodes' VMs left out
_TOP_SECTION = re.compile(r"(vms|zones):\s*(#.*)?$")
_KINDS = {"vms": "vm", "zones": "zone"}
_KEY = re.compile(r"""( +)([A-Za-z0-9_][A-Za-z0-9_.-]*|"[^"\\]+"|'[^']+'):\s*(#.*)?$""")
_RULES = re.compile(r"( +)rules:\s*(#.*)?$")
_NODE_PROPERTY = re.compile(r"[&*!]\S")  # an anchor, alias or tag, where it starts a token (unsafe_yaml)


def unsafe_yaml(text: str) -> bool:
    """Whether the text may hold a YAML anchor, alias, tag, merge key, document marker
    or tab (what the scan of blocks cannot follow). The same as the regular expression
    `(^|[\\s\\[{,:])[&*!][^\\s]|^---|^\\.\\.\\.|<<:|\\t` (multi-line), which took ~0.7 s on
    a 16 MB document; this is ~0.05 s: rare characters first, the context after."""
    if "\t" in text or "<<:" in text or text.startswith(("---", "...")) or "\n---" in text or "\n..." in text:
        return True
    for found in _NODE_PROPERTY.finditer(text):
        at = found.start()
        if at == 0 or text[at - 1].isspace() or text[at - 1] in "[{,:":
            return True
    return False


def is_scoped(documents: Documents) -> bool:
    """Whether these are one node's documents (other nodes' VM rules may be left out)."""
    return any(SCOPE_MARK in text for text in documents.values())


Owner = tuple[str, str]  # ("vm", name) or ("zone", name): whose rules block


@dataclass(frozen=True)
class Block:
    """Lines [start, end) of `document`: the `rules:` block of one VM or zone."""

    document: str
    start: int
    end: int


def rules_blocks(text: str, unsafe: bool | None = None) -> dict[Owner, tuple[int, int]]:
    """(kind, name) -> lines [start, end) of its rules block, for every VM and zone
    whose block can be left out safely (see the module docstring); one not named has
    none. `unsafe`: unsafe_yaml(text), when the caller knows it."""
    if unsafe_yaml(text) if unsafe is None else unsafe:
        return {}
    lines = text.split("\n")
    found: dict[Owner, tuple[int, int]] = {}
    i, count = 0, len(lines)
    while i < count:
        section = _TOP_SECTION.match(lines[i])
        if section is None:
            i += 1
            continue
        kind = _KINDS[section.group(1)]
        i += 1
        entry_indent: int | None = None
        name: str | None = None
        keys_indent: int | None = None  # the indentation of the current entry's own keys
        while i < count:
            line = lines[i]
            if is_filler(line):
                i += 1
                continue
            indent = line_indent(line)
            if indent == 0:
                break  # the next top-level key: the section's mapping ends
            if entry_indent is None:
                entry_indent = indent
            if indent == entry_indent:
                match = _KEY.match(line)
                name = match.group(2).strip("\"'") if match and len(match.group(1)) == indent else None
                keys_indent = None
                i += 1
                continue
            if keys_indent is None:
                keys_indent = indent
            rules = _RULES.match(line)
            if name is None or rules is None or indent != keys_indent or indent <= entry_indent:
                i += 1
                continue
            start, key_indent = i, len(rules.group(1))
            i += 1
            end = i
            while i < count:
                inner = lines[i]
                if is_filler(inner):
                    i += 1
                    continue
                inner_indent = line_indent(inner)
                if inner_indent > key_indent or (inner_indent == key_indent and inner.lstrip(" ").startswith("- ")):
                    i += 1
                    end = i
                    continue
                break
            if (kind, name) not in found:
                found[(kind, name)] = (start, end)
    return found


class Scoper:
    """One revision's documents, ready to be scoped to any of its nodes."""

    def __init__(self, documents: Documents, placement: Mapping[str, str], parent: Scoper | None = None, *,
                 zone_of: Mapping[str, str | None] | None = None) -> None:
        """`placement`: VM -> its node. `zone_of`: VM -> its zone (None: zones' rules
        stay in every node's documents). `parent`: the scoper of the previous revision,
        whose blocks are reused where an edit allows (`following`)."""
        self.documents = documents
        self.placement = placement  # VM -> its node
        self.zone_of = zone_of
        self.zone_nodes: dict[str, frozenset[str]] = {}  # zone -> the nodes holding its VMs
        if zone_of is not None:
            holding: dict[str, set[str]] = {}
            for vm, zone in zone_of.items():
                if zone is not None and vm in placement:
                    holding.setdefault(zone, set()).add(placement[vm])
            self.zone_nodes = {zone: frozenset(nodes) for zone, nodes in holding.items()}
        self.blocks: dict[Owner, Block] = {}
        self.sections: dict[str, Section] = {}  # document -> its groups section, where groups are scoped (scope_groups.py)
        self._lines: dict[str, list[str]] = {}
        self._spans: dict[str, tuple[str, tuple[int, int, int]]] = {}  # document -> (the older text, span_from's answer)
        if parent is not None and (set(documents) != set(parent.documents) or placement != parent.placement or zone_of != parent.zone_of):
            parent = None
        scanned: set[str] = set()  # documents whose rules blocks were found by a scan
        for name, text in documents.items():
            reused = self._reused_blocks(parent, name, text) if parent is not None else None
            if reused is not None:  # the parent's, of owners scoped alike (same placement and zones)
                for owner, block in reused.items():
                    self.blocks.setdefault(owner, block)
            else:
                scanned.add(name)
                unsafe = unsafe_yaml(text)  # once for both scans (~50 ms for 16 MB)
                for owner, (start, end) in rules_blocks(text, unsafe).items():
                    if self._scoped_owner(owner) and owner not in self.blocks:
                        self.blocks[owner] = Block(name, start, end)
            section = self._section(parent, name, text, None if reused is not None else unsafe)
            if section is not None:
                self.sections[name] = section
        self.group_use = self._group_use(parent, scanned)
        # node -> the groups it keeps; shared with the parent while the mentions are its
        self._kept: dict[str, frozenset[str]] = parent._kept if parent is not None and parent.group_use is self.group_use else {}

    def _section(self, parent: Scoper | None, name: str, text: str, unsafe: bool | None) -> Section | None:
        """Document `name`'s groups section: the parent's, moved or read again where an
        edit lies in it (scope_groups.section_after_edit), or found by a scan.
        `unsafe`: the document was scanned for rules blocks (unsafe_yaml's answer)."""
        if parent is not None and unsafe is None:
            old = parent.sections.get(name)
            if text == parent.documents[name]:
                return old
            start, old_end, new_end = self.span_from(parent, name)
            edited = self.lines(name)[start:new_end]
            if old is not None and not any(unsafe_yaml(line) or "\\" in line for line in edited):
                section = section_after_edit(old, self.lines(name), (start, old_end, new_end), edited)
                if section is not None:
                    return section
        if (unsafe_yaml(text) if unsafe is None else unsafe) or "\\" in text:  # scope_groups: a scan must see every reference
            return None
        return find_section(text, self.lines(name))

    def _group_use(self, parent: Scoper | None, scanned: set[str]) -> GroupUse:
        """Which groups each block and entry names: the parent's, with the mentions an
        edit inside one rules block or one group's entry changed read again; a scan of
        every document otherwise (~0.1 s at 10,000 VMs)."""
        if parent is None or scanned:
            return self._scan_group_use()
        use = parent.group_use
        changed = [name for name, text in self.documents.items() if text != parent.documents[name]]
        for name in changed:
            old_section, new_section = parent.sections.get(name), self.sections.get(name)
            if (old_section is None) != (new_section is None):
                return self._scan_group_use()
            start, old_end, new_end = self.span_from(parent, name)
            if not any("group:" in line for line in (*parent.lines(name)[start:old_end], *self.lines(name)[start:new_end])):
                continue
            owner = _owner(parent, name, start, old_end)
            if owner is not None and _owner(self, name, start, new_end) == owner:
                block = self.blocks[owner]
                use = use.with_owner(owner, mentions(self.lines(name)[block.start:block.end]))
                continue
            group = old_section.entry_at(start, old_end) if old_section is not None else None
            if group is None or new_section is None or new_section.entry_at(start, new_end) != group:
                return self._scan_group_use()
        held = dict(use.held)
        for name in changed:
            old_section, new_section = parent.sections.get(name), self.sections.get(name)
            for group in old_section.entries if old_section is not None else ():
                held.pop(group, None)
            for group, (first, last) in new_section.entries.items() if new_section is not None else ():
                held[group] = mentions(self.lines(name)[first:last])
        return use.with_held(held)

    def _scan_group_use(self) -> GroupUse:
        blocks: dict[str, list[tuple[int, int, Owner]]] = {}
        for owner, block in self.blocks.items():
            blocks.setdefault(block.document, []).append((block.start, block.end, owner))
        return GroupUse.scan(self.documents, self.sections, blocks)

    def groups_of(self, node: str, keep: Iterable[Owner] = ()) -> frozenset[str]:
        """The groups `node`'s documents keep (with the rules blocks in `keep` besides)."""
        if not self._kept:
            self._kept.update(self._kept_by_node())
        kept = self._kept.get(node, self._kept[""])
        extra = [groups for owner in keep if (groups := self.group_use.by_owner.get(owner))]
        return self.group_use.closure(kept.union(*extra)) if extra else kept

    def _kept_by_node(self) -> dict[str, frozenset[str]]:
        """Every node's kept groups, in one pass over the blocks naming groups ("": a
        node holding none of them)."""
        use = self.group_use
        named: dict[str, set[str]] = {}
        for owner, groups in use.by_owner.items():
            for node in self.nodes_of(owner):
                named.setdefault(node, set(use.everywhere)).update(groups)
        kept = {node: use.closure(groups) for node, groups in named.items()}
        kept[""] = use.closure(use.everywhere)
        return kept

    def group_nodes(self, group: str, nodes: Iterable[str]) -> frozenset[str]:
        """Which of `nodes` keep `group`."""
        return frozenset(node for node in nodes if group in self.groups_of(node))

    def _scoped_owner(self, owner: Owner) -> bool:
        """Whether `owner`'s rules block may be left out of some nodes' documents."""
        kind, name = owner
        return name in self.placement if kind == "vm" else self.zone_of is not None

    def nodes_of(self, owner: Owner) -> frozenset[str]:
        """The nodes whose documents hold `owner`'s rules block."""
        kind, name = owner
        if kind == "vm":
            return frozenset((self.placement[name],))
        return self.zone_nodes.get(name, frozenset())

    def holds(self, node: str, owner: Owner) -> bool:
        """`node in nodes_of(owner)`, without a set made (asked for 10,000 blocks per node)."""
        kind, name = owner
        return self.placement[name] == node if kind == "vm" else node in self.zone_nodes.get(name, ())

    @classmethod
    def following(cls, parent: Scoper, documents: Documents, placement: Mapping[str, str], *,
                  zone_of: Mapping[str, str | None] | None = None) -> Scoper:
        """The scoper of `documents`, the next revision after `parent`'s: a document
        edited inside one VM's or zone's rules block, or inside another top-level
        section (a group's members, the settings), keeps the parent's blocks (those
        after the edit moved by the lines it added or removed) instead of being scanned
        again (a scan of 10,000 VMs' documents costs ~0.9 s, on the path of every
        commit: `NodeStates.prepare`). Anything else is scanned, so the blocks are
        always what `rules_blocks` would find."""
        return cls(documents, placement, parent, zone_of=zone_of)

    def _reused_blocks(self, parent: Scoper, name: str, text: str) -> dict[Owner, Block] | None:
        """Document `name`'s blocks from the parent's (None: scan it)."""
        if text == parent.documents[name]:
            if name in parent._lines:
                self._lines[name] = parent._lines[name]
            return {owner: block for owner, block in parent.blocks.items() if block.document == name}
        span = self.span_from(parent, name)  # first: it may make the lines from the parent's (span_from)
        return _edited_blocks(parent, name, self.lines(name), span)

    def span_from(self, older: Scoper, document: str) -> tuple[int, int, int]:
        """`line_span` of `document` from `older`'s lines to these (asked by several
        steps of one change: the blocks, the nodes affected, the shared edit): once."""
        before = older.documents[document]
        known = self._spans.get(document)
        if known is not None and known[0] is before:
            return known[1]
        older_lines = older._lines.get(document)
        if document not in self._lines and older_lines is not None:
            # these lines are the older's with the span's replaced: made from them (a list
            # of references, ~2 ms) instead of splitting 16 MB of text again (~20 ms)
            start, end, edited = changed_lines(before, self.documents[document])
            self._lines[document] = older_lines[:start] + edited + older_lines[end:]
            span = (start, end, start + len(edited))
        else:
            span = text_span(before, self.documents[document], older.lines(document), self.lines(document))
        self._spans[document] = (before, span)
        return span

    def lines(self, document: str) -> list[str]:
        lines = self._lines.get(document)
        if lines is None:
            lines = self._lines[document] = self.documents[document].split("\n")
        return lines

    def scoped(self, node: str, keep: Iterable[str] = ()) -> Documents:
        """The documents `node` needs (with the VMs in `keep` whole, and their zones'
        rules: one arriving)."""
        kept: set[Owner] = {("vm", vm) for vm in keep}
        if self.zone_of is not None:
            kept |= {("zone", zone) for vm in keep if (zone := self.zone_of.get(vm)) is not None}
        cut: dict[str, list[tuple[Owner, Block]]] = {}
        for owner, block in self.blocks.items():
            if owner not in kept and not self.holds(node, owner):
                cut.setdefault(block.document, []).append((owner, block))
        groups = self.groups_of(node, kept) if self.sections else frozenset()
        out: Documents = {}
        for name, text in self.documents.items():
            blocks = cut.get(name)
            section = self.sections.get(name)
            if not blocks and (section is None or set(section.entries) <= groups):
                out[name] = text
                continue
            lines = list(self.lines(name))
            for (kind, _), block in blocks or ():
                blanks = [""] * (block.end - block.start)
                if kind == "zone":
                    # the key stays, as an empty list: a zone may have no other key, and
                    # an entry left with none is null, not an empty mapping. (A VM always
                    # has its `host`; an explicit empty list per VM cost each agent
                    # ~25 MiB of parsed source at 10,000 VMs.)
                    blanks[0] = " " * line_indent(lines[block.start]) + "rules: []"
                lines[block.start:block.end] = blanks
            if section is not None:
                blank_entries(lines, section, groups)
            body = "\n".join(lines)
            out[name] = body + ("" if body.endswith("\n") else "\n") + f"{SCOPE_MARK}{node}\n"
        return out


def _edited_blocks(parent: Scoper, document: str, lines: list[str], span: tuple[int, int, int]) -> dict[Owner, Block] | None:
    """The blocks of `document` after an edit of lines (`span`) inside one rules block
    of the parent that leaves the block's shape alone; None: scan it whole."""
    old = parent.lines(document)
    start, old_end, new_end = span
    owner = _owner(parent, document, start, old_end)
    if owner is None:
        return _shifted_blocks(parent, document, span) if _outside_sections(old, lines, span) else None
    block = parent.blocks[owner]
    key_indent = line_indent(old[block.start])
    edited = lines[start:new_end]
    for line in edited:
        # each new line must stay inside the block as rules_blocks reads it
        if unsafe_yaml(line):
            return None
        if is_filler(line):
            continue
        indent = line_indent(line)
        if not (indent > key_indent or (indent == key_indent and line.lstrip(" ").startswith("- "))):
            return None
    if old_end == block.end and (not edited or is_filler(edited[-1])):
        return None  # the block's last line edited into a blank or comment: its end moves
    found = _shifted_blocks(parent, document, span)
    found[owner] = Block(document, block.start, block.end + new_end - old_end)
    return found


def _outside_sections(old: list[str], lines: list[str], span: tuple[int, int, int]) -> bool:
    """Whether an edit of lines (`span`) lies inside a top-level section other than
    `vms:` and `zones:` (a group's members, the settings) and leaves every section
    where it was: no line it removes or adds starts a top-level key, none is unsafe.
    Such an edit cannot change what `rules_blocks` finds, only move it (a scan of a
    10,000-VM document costs ~0.9 s, on the path of every group change)."""
    start, old_end, new_end = span
    for line in (*old[start:old_end], *lines[start:new_end]):
        if unsafe_yaml(line) or (not is_filler(line) and line_indent(line) == 0):
            return False
    above = next((line for line in reversed(old[:start]) if not is_filler(line) and line_indent(line) == 0), None)
    return above is None or _TOP_SECTION.match(above) is None


def _shifted_blocks(parent: Scoper, document: str, span: tuple[int, int, int]) -> dict[Owner, Block]:
    """The parent's blocks of `document`, those after the edit moved by the lines it
    added or removed (the others are the parent's own objects: an edit in place moves
    none, and 10,000 blocks made anew cost ~12 ms of every commit)."""
    _start, old_end, new_end = span
    moved = new_end - old_end
    if moved == 0:
        return {owner: block for owner, block in parent.blocks.items() if block.document == document}
    return {owner: Block(document, block.start + moved, block.end + moved) if block.start >= old_end else block
            for owner, block in parent.blocks.items() if block.document == document}


def affected(old: Scoper, new: Scoper, nodes: Iterable[str]) -> frozenset[str]:
    """The nodes whose scoped documents may differ between two revisions (a superset)."""
    everyone = frozenset(nodes)
    if set(old.documents) != set(new.documents) or old.placement != new.placement or old.zone_of != new.zone_of:
        return everyone
    touched: set[str] = set()
    for name in new.documents:
        if old.documents[name] == new.documents[name]:
            continue
        start, old_end, new_end = new.span_from(old, name)
        if old_end != new_end:
            return everyone  # lines moved: positions (and default rule ids) after them changed
        owner = _owner(old, name, start, old_end)
        if owner is not None and _owner(new, name, start, new_end) == owner:
            touched |= new.nodes_of(owner)
            continue
        group = _edited_entry(old, new, name, (start, old_end, new_end))
        if group is None:
            return everyone
        touched |= old.group_nodes(group, everyone) | new.group_nodes(group, everyone)  # the nodes keeping it
    return frozenset(touched) & everyone


def _edited_entry(old: Scoper, new: Scoper, document: str, span: tuple[int, int, int]) -> str | None:
    """The group whose entry (in its groups section, scope_groups.py) holds the edit
    of lines `span`, before and after it, where the sections are read alike; None: none."""
    old_section, new_section = old.sections.get(document), new.sections.get(document)
    if old_section is None or new_section is None or old_section.entries.keys() != new_section.entries.keys():
        return None
    start, old_end, new_end = span
    if old_end == new_end and old_section.entries != new_section.entries:
        return None  # an entry grew or shrank over lines the edit left alone
    group = old_section.entry_at(start, old_end)
    return group if group is not None and new_section.entry_at(start, new_end) == group else None


def shared_edit(old: Scoper, new: Scoper) -> Delta | None:
    """The delta from `old`'s documents to `new`'s when every node's scoped documents
    change by exactly it (None: scope each node anew). That holds when each edited
    document changed in one span of lines that lies outside every rules block (the
    only lines a node's documents leave out) and every block is where it was, or
    moved by the lines the span added or removed: a group's members, a zone's
    default, the settings. Each node's new documents are then its previous ones with
    the same lines replaced, and the delta it is sent is this one."""
    if (set(old.documents) != set(new.documents) or old.placement != new.placement or old.zone_of != new.zone_of
            or old.blocks.keys() != new.blocks.keys()):
        return None
    changed: dict[str, list[object]] = {}
    spans: dict[str, tuple[int, int, int]] = {}
    for name, text in new.documents.items():
        if old.documents[name] == text:
            continue
        before, after = old.lines(name), new.lines(name)
        start, old_end, new_end = new.span_from(old, name)
        if old_end >= len(before) or new_end >= len(after):
            return None  # the last line edited: where a scoped document's mark follows
        spans[name] = (start, old_end, new_end)
        changed[name] = [start, old_end, after[start:new_end]]
    if not all(_shared_by_groups(old, new, name, edit) for name, edit in spans.items()):
        return None
    for owner, block in old.blocks.items():
        moved = new.blocks[owner]
        span = spans.get(block.document)
        if moved.document != block.document:
            return None
        if span is None:
            shift = 0
        else:
            start, old_end, new_end = span
            if block.end <= start:
                shift = 0
            elif block.start >= old_end:
                shift = new_end - old_end
            else:
                return None  # the edit touches a rules block: some nodes hold it, others blanks
        if (moved.start, moved.end) != (block.start + shift, block.end + shift):
            return None
    return {"changed": changed, "added": {}, "removed": []}


@dataclass(frozen=True)
class NodeEdit:
    """One edit as each node's documents take it: the nodes `holding` the edited lines
    (None: every node the edit affects) take `kept`, the others `blanked` (None:
    theirs do not change)."""

    kept: Delta
    holding: frozenset[str] | None = None
    blanked: Delta | None = None

    def delta_for(self, node: str) -> Delta | None:
        return self.kept if self.holding is None or node in self.holding else self.blanked


def node_edit(old: Scoper, new: Scoper) -> NodeEdit | None:
    """How each node's documents change from `old`'s to `new`'s without scoping them
    anew (None: scope them): an edit every node shares (`shared_edit`) or an edit
    inside one rules block (`block_edit`)."""
    shared = shared_edit(old, new)
    return NodeEdit(shared) if shared is not None else block_edit(old, new)


def block_edit(old: Scoper, new: Scoper) -> NodeEdit | None:
    """An edit inside one VM's or zone's rules block (below its `rules:` line) as each
    node takes it: the nodes holding the block take its lines, the others as many
    empty lines (where the block is left out; nothing when no line moved). Scoping a
    node's documents anew costs ~45 ms at 10,000 VMs: one rule line added made that
    100 times, once per node. None unless every other block and the groups sections
    stay where they were or move by the lines the edit adds or removes, and the block
    names the same groups (the groups every node keeps stay the same)."""
    if (set(old.documents) != set(new.documents) or old.placement != new.placement or old.zone_of != new.zone_of
            or old.blocks.keys() != new.blocks.keys() or old.sections.keys() != new.sections.keys()):
        return None
    changed = [name for name, text in new.documents.items() if old.documents[name] != text]
    if len(changed) != 1:
        return None
    name = changed[0]
    start, old_end, new_end = new.span_from(old, name)
    if old_end >= len(old.lines(name)) or new_end >= len(new.lines(name)):
        return None  # the last line edited: where a scoped document's mark follows
    owner = _owner(old, name, start, old_end)
    if owner is None or _owner(new, name, start, new_end) != owner:
        return None
    if old.group_use.by_owner.get(owner) != new.group_use.by_owner.get(owner):
        return None
    moved = new_end - old_end
    for other, block in old.blocks.items():
        if other == owner:
            expected = (block.start, block.end + moved)
        elif block.document != name or block.end <= start:
            expected = (block.start, block.end)
        elif block.start >= old_end:
            expected = (block.start + moved, block.end + moved)
        else:
            return None
        now = new.blocks[other]
        if now.document != block.document or (now.start, now.end) != expected:
            return None
    if any(new.sections[document] != (section.shifted(old_end, moved) if document == name else section) for document, section in old.sections.items()):
        return None
    kept: Delta = {"changed": {name: [start, old_end, new.lines(name)[start:new_end]]}, "added": {}, "removed": []}
    blanked: Delta | None = {"changed": {name: [start, old_end, [""] * (new_end - start)]}, "added": {}, "removed": []} if moved else None
    return NodeEdit(kept, new.nodes_of(owner), blanked)


def _shared_by_groups(old: Scoper, new: Scoper, document: str, span: tuple[int, int, int]) -> bool:
    """Whether an edit of lines `span` (outside every rules block) changes the
    documents of every node that keeps what it edits alike: it leaves the groups
    section's header and every other entry where they were (moved with the lines it
    adds or removes), names the same groups as before (so every node keeps the groups
    it kept), and, inside a group's entry (some nodes blank it: only the nodes keeping
    it take the edit, `affected`), keeps the entry's number of lines."""
    old_section, new_section = old.sections.get(document), new.sections.get(document)
    if old_section is None and new_section is None:
        return True
    if old_section is None or new_section is None or old_section.entries.keys() != new_section.entries.keys():
        return False
    start, old_end, new_end = span
    if mentions(old.lines(document)[start:old_end]) != mentions(new.lines(document)[start:new_end]):
        return False
    group = _edited_entry(old, new, document, span)
    if group is None and old_section.meets_entry(start, old_end):
        return False
    if group is not None and old_end != new_end:
        return False
    moved = old_section.shifted(old_end, new_end - old_end)
    if start <= old_section.line < max(old_end, start + 1) or moved.line != new_section.line:
        return False
    return all(moved.entries[name] == span_ for name, span_ in new_section.entries.items() if name != group)


def _owner(scoper: Scoper, document: str, start: int, end: int) -> Owner | None:
    """The VM or zone whose rules block holds lines [start, end) of `document`, if one does."""
    for owner, block in scoper.blocks.items():
        if block.document == document and block.start < start and end <= block.end:
            return owner
    return None
