"""A policy edited in place, validated from the previous one (issue 14).

Loading a 10,000-VM policy costs seconds; a commit that changes one rule of one VM
should not. `load_edit` builds the new policy from the previous revision's when the
only difference is some one-line rules of one VM (or of one zone) rewritten in place (the same
number of lines, so every other rule keeps its position and derived id): it reads
and validates just those lines, runs the checks a rule takes (references, scopes,
ids) and shares everything else with the previous policy (its VM rule index with
the edited VM refiled: policy/ownrules.py).

A group's member line rewritten in place (`  NAME: [member, ...]`, the whole group
on its line) is the other shape: the group is read and validated alone, and what
its members can break is checked again: its references, cycles of nested groups,
the family of every rule naming it or a group that holds it.

Rule lines added or removed (`lines=True`, the controller's commit: `moved_lines`)
are the third: every later line of the file moves, and with it the default rule ids
(`file:line`) and positions the whole load derives; the rule table is the previous
one's with those moves, made per owner when first read (ruletable.py).

It never decides alone that a policy is wrong: any problem, and any edit outside
that shape, answers None, and the caller loads the whole policy, which then
reports every problem with its position exactly as always. A property test
(tests/policy/test_incremental.py) holds it to the whole load.
"""

from __future__ import annotations

import bisect
from typing import Any

from pydantic import ValidationError

from .delta import common_prefix, common_suffix
from .emptylines import first_filled_line, outside_scalars
from .errors import Loc
from .model import Group, Rule, group_bodies
from .naming import MEMO as _NAMING
from .naming import vms_naming_groups
from .ownrules import MEMO as _OWN_RULES
from .ownrules import edited_indexes
from .plain import plain_data
from .resolve import Checker, Policy, RuleRef, default_rule_id, file_stem, groups_holding, names_group
from .ruletable import RuleTable, Runs, moved_ref
from .source import LDict, LList, read_plain


def load_edit(old_documents: dict[str, str], old: Policy, new_documents: dict[str, str], *, groups: bool = False,
              lines: bool = False, empty_lines: bool = False) -> Policy | None:
    """The policy of `new_documents`, or None: load it whole. Without `groups`, only
    rule edits are taken: every reference then means the same addresses as in `old`
    (the agent shares `old`'s address memos on that promise, agent/enforcer.py); with
    it, a group's member line too; with `lines`, rule lines added or removed too
    (both: the controller's commit, policy.documents.load_edited); with `empty_lines`
    also empty lines added or removed where no scalar holds them (`moved_empty_lines`:
    the agent, whose documents gain one when a rule line is added on another node)."""
    if old_documents.keys() != new_documents.keys():
        return None
    changed = [name for name in new_documents if new_documents[name] != old_documents[name]]
    if len(changed) != 1:
        return None
    name = changed[0]
    first, old_lines, new_lines, end = _edited_region(old_documents[name], new_documents[name])
    span = _edited_lines(first, old_lines, new_lines)
    if span is None:
        if not lines or any(file_stem(other) == file_stem(name) for other in new_documents if other != name):
            return None  # (two files with one stem share derived ids: moving one file's lines could make them collide)
        if empty_lines:
            moved = moved_empty_lines(old, name, new_documents[name], first, old_lines, new_lines, end)
            if moved is not None:
                return moved
        return moved_lines(old, name, first, old_lines, new_lines)
    edited, texts, was = span
    found = _owner(old, name, edited)
    if found is None:
        return _group_edit(old, name, edited, texts, was) if groups else None
    owner, indexes = found
    rules: dict[int, tuple[Rule, LDict]] = {}
    for index, line, text in zip(indexes, edited, texts, strict=True):
        parsed = _read_rule(text, name, line)
        if parsed is None:
            return None
        rules[index] = parsed
    return _rebuilt(old, owner, rules)


def _edited_lines(first: int, old_lines: list[str], new_lines: list[str]) -> tuple[list[int], list[str], list[str]] | None:
    """The numbers, new and old texts of the lines that differ in an edited region
    (`_edited_region`), when the edit keeps the number of lines (None otherwise)."""
    if len(old_lines) != len(new_lines):
        return None
    changed = [(first + k, b, a) for k, (a, b) in enumerate(zip(old_lines, new_lines, strict=True)) if a != b]
    return [number for number, _, _ in changed], [text for _, text, _ in changed], [text for _, _, text in changed]


def edited_from(policy: Policy, previous: Policy) -> bool:
    """Whether `load_edit` made `policy` from `previous` (every way it does shares the
    previous zone membership), rather than a whole load."""
    return policy.__dict__.get("_zone_members") is previous.__dict__.get("_zone_members") is not None


def _edited_region(old: str, new: str) -> tuple[int, list[str], list[str], int]:
    """The number of the first line of the region the edit replaced, its old and new
    lines, and where the region ends in `new`. Only the span between the common
    prefix and suffix is split into lines: the documents of 10,000 VMs are 16 MB."""
    prefix = common_prefix(old, new)
    suffix = common_suffix(old, new, min(len(old), len(new)) - prefix)
    start = new.rfind("\n", 0, prefix) + 1  # the edited region, whole lines
    if start:  # and the line before it, and the one after (where lines were added, they say whose)
        start = new.rfind("\n", 0, start - 1) + 1
    old_lines = old[start : _line_end(old, _line_end(old, len(old) - suffix) + 1)].split("\n")
    end = _line_end(new, _line_end(new, len(new) - suffix) + 1)
    return new.count("\n", 0, start) + 1, old_lines, new[start:end].split("\n"), end


def _line_end(text: str, at: int) -> int:
    """The end of the line holding position `at` (its newline, or the text's end)."""
    end = text.find("\n", at)
    return len(text) if end < 0 else end


# where rule lists live that an in-place edit may touch: (section, level of its rules)
SECTIONS = (("vms", "vm"), ("zones", "zone"))
Owner = tuple[str, str, str]  # (section, level, name)


Span = tuple[int, int, Owner, tuple[int, ...]]  # first and last line of an owner's rules, the owner, each rule's line
NAMING_INDEX = True  # a group edit checks only the rules of VMs the naming index finds (False: every rule)
_SPANS = "_rule_spans"  # where a policy keeps its spans (per file, sorted by first line)


def _spans(policy: Policy) -> dict[str, list[Span]]:
    """Where each VM's and zone's rules are written, per file; built once per whole
    load and handed on to each policy edited in place (its lines do not move)."""
    found: dict[str, list[Span]] | None = policy.__dict__.get(_SPANS)
    if found is not None:
        return found
    out: dict[str, list[Span]] = {}
    source = policy.source
    for section, level in SECTIONS:
        specs = source.get(section) if isinstance(source, LDict) else None
        if not isinstance(specs, LDict):
            continue
        for name, spec in specs.items():
            rules = spec.get("rules") if isinstance(spec, LDict) else None
            if not isinstance(rules, LList) or not rules.value_locs:
                continue
            by_file: dict[str, list[int]] = {}
            for loc in rules.value_locs:
                by_file.setdefault(loc.file, []).append(loc.line)
            for file, lines in by_file.items():
                out.setdefault(file, []).append((min(lines), max(lines), (section, level, name), tuple(lines)))
    for spans in out.values():
        spans.sort(key=lambda span: span[0])
    policy.__dict__[_SPANS] = out
    return out


def index_for_edits(policy: Policy) -> None:
    """Build now what the first edit of a policy loaded whole would build: where each
    VM's and zone's rules are written (~0.17 s at 10,000 VMs, on the path of that
    edit's commit otherwise: the slowest change of every run of bench/cluster.py),
    and which owners use each explicit rule id (~45 ms: `Runs.index_ids`)."""
    _spans(policy)
    policy._rule_table.runs.index_ids()


def _owner(policy: Policy, file: str, lines: list[int]) -> tuple[Owner, list[int]] | None:
    """The VM or zone whose rules are each of `lines` (one rule per line, in file
    `file`), and the index of each; None when a line is anything else."""
    spans = _spans(policy).get(file, [])
    firsts = [span[0] for span in spans]
    owners: list[list[tuple[Owner, int]]] = []
    for line in lines:
        here: list[tuple[Owner, int]] = []
        at = bisect.bisect_right(firsts, line) - 1
        # every span that covers the line (several only where a line holds rules of two owners)
        while at >= 0 and spans[at][1] >= line:
            _, _, owner, rule_lines = spans[at]
            here.extend((owner, index) for index, rule_line in enumerate(rule_lines) if rule_line == line)
            at -= 1
        owners.append(here)
    if any(len(owner) != 1 for owner in owners):
        return None  # a line that is no rule of a VM's or zone's, or holds two
    names = {owner[0][0] for owner in owners}
    if len(names) != 1:
        return None
    return names.pop(), [owner[0][1] for owner in owners]


def _read_rule(text: str, file: str, line: int) -> tuple[Rule, LDict] | None:
    """One rule written on one line (`- {...}`), read and validated where it stands."""
    stripped = text.lstrip(" ")
    if not stripped.startswith("- {") or line < 2 or "\r" in text or not text.isprintable():
        return None  # (the whole load reports what is not plain text: not UTF-8, control characters)
    # the line alone, at its own line and column: positions are the document's
    document = "\n" * (line - 2) + "x:\n" + text + "\n"
    data = read_plain(document, file)
    item = data.get("x") if data is not None else None
    if not isinstance(item, LList) or len(item) != 1 or not isinstance(item[0], LDict):
        return None
    try:
        return Rule.model_validate(plain_data(item[0])), item[0]
    except ValidationError:
        return None


def _rebuilt(old: Policy, owner: Owner, rules: dict[int, tuple[Rule, LDict]]) -> Policy | None:
    """`old` with those rules of `owner` replaced, if every check a rule takes passes."""
    section, level, name = owner
    specs = getattr(old.doc, section)
    spec = specs[name]
    new_rules = list(spec.rules)
    for index, (rule, _) in rules.items():
        new_rules[index] = rule
    doc = old.doc.model_copy(update={section: {**specs, name: spec.model_copy(update={"rules": new_rules})}})
    source = _replaced_source(old.source, section, name, {index: data for index, (_, data) in rules.items()})
    policy = Policy(doc, source)
    table = _rule_table(old, level, name, rules)
    if table is None:
        return None
    policy.__dict__["_rule_table"] = table  # what build_indexes makes, shared but for this owner's run
    policy.__dict__["_zone_members"] = old._zone_members  # membership is not a rule's business
    policy.__dict__[_SPANS] = _spans(old)  # every line is where it was
    _carry_index(old, policy, level, name, table)
    checker = Checker(doc, source)
    checker.__dict__["policy"] = policy
    for ref in table.runs[(level, name)]:
        if ref.index in rules:
            checker.check_rule(ref, policy)
    return None if checker.problems else policy


def _carry_index(old: Policy, policy: Policy, level: str, name: str, table: RuleTable) -> None:
    """The previous policy's VM rules by their other end (policy/ownrules.py), if it
    has them, for the edited one: the edited VM refiled (a zone's rules are not in
    it). The index files rules by owner and place, which a line moved elsewhere
    does not change."""
    indexes = old.__dict__.get(_OWN_RULES)
    if indexes is not None:
        before, after = old._rule_table.runs.unmoved((level, name)), table.runs[(level, name)]
        policy.__dict__[_OWN_RULES] = edited_indexes(indexes, name, before, after) if level == "vm" else indexes


def _replaced_source(root: LDict, section: str, name: str, items: dict[int, LDict]) -> LDict:
    specs: LDict = root[section]
    spec: LDict = specs[name]
    rules = _copy_list(spec["rules"])
    for index, item in items.items():
        rules[index] = item
        rules.value_locs[index] = item.loc
    return _copy_dict(root, section, _copy_dict(specs, name, _copy_dict(spec, "rules", rules)))


def _copy_dict(node: LDict, key: str, value: Any) -> LDict:
    out = LDict(node)
    out[key] = value
    out.loc, out.key_locs, out.value_locs = node.loc, node.key_locs, node.value_locs
    return out


def _copy_list(node: LList) -> LList:
    out = LList(node)
    out.loc, out.value_locs = node.loc, list(node.value_locs)
    return out


def _rule_table(old: Policy, level: str, name: str, rules: dict[int, tuple[Rule, LDict]]) -> RuleTable | None:
    """The previous rule table with the owner's edited rules re-made; None when an id
    check the whole load makes (unique explicit ids, packet-limit marks) could differ."""
    runs = old._rule_table.runs
    made: list[RuleRef] = []
    for ref in runs[(level, name)]:
        if ref.index not in rules:
            made.append(ref)
            continue
        rule, data = rules[ref.index]
        if rule.packet_limit is not None or ref.rule.packet_limit is not None:
            return None  # its connection mark is checked against every other rule's
        loc: Loc = data.loc
        made.append(RuleRef(rule, ref.level, name, ref.index, rule.id or default_rule_id(loc, ref.path), ref.path, loc))
    if not _ids_unique(runs, (level, name), made):
        return None
    return RuleTable(runs.then(None, (level, name), made))


def _ids_unique(runs: Runs, owner: tuple[str, str], made: list[RuleRef]) -> bool:
    """Whether the owner's explicit ids are used nowhere else (the whole load names both places)."""
    mine = [r.id for r in made if r.rule.id is not None]
    if not mine:
        return True
    return len(set(mine)) == len(mine) and not runs.id_elsewhere(set(mine), owner)


# -- a group's members rewritten in place -------------------------------------------


def _group_edit(old: Policy, file: str, lines: list[int], texts: list[str], was_texts: list[str]) -> Policy | None:
    """`old` with one group's members replaced, when the edit is one line that holds
    the whole group before and after (`  NAME: [member, ...]`); None otherwise or when
    a check could fail. What can depend on a group's members: its references (they
    must exist), cycles of nested groups, and the family check of every rule that
    names it or a group holding it; rule ids, scopes and positions cannot."""
    if len(lines) != 1:
        return None
    line, text = lines[0], texts[0]
    groups = old.source.get("groups") if isinstance(old.source, LDict) else None
    if not isinstance(groups, LDict):
        return None
    name = next((key for key, loc in groups.key_locs.items() if loc.file == file and loc.line == line), None)
    if name is None or groups.value_locs[name].line != line:
        return None
    was = _read_entry(was_texts[0], file, line)
    if was is None or was[0] != name or was[1] != groups[name]:
        return None  # the line did not hold the whole group (a block list below it)
    now = _read_entry(text, file, line)
    if now is None or now[0] != name:
        return None
    try:
        group = Group.model_validate(group_bodies({name: plain_data(now[1])})[name])
    except (ValidationError, AttributeError, TypeError):
        return None
    doc = old.doc.model_copy(update={"groups": {**old.doc.groups, name: group}})
    entries = _copy_dict(groups, name, now[1])
    entries.value_locs = {**groups.value_locs, name: now[1].loc}
    source = _copy_dict(old.source, "groups", entries)
    policy = Policy(doc, source)
    for memo in ("_rule_table", "_zone_members", _SPANS, _OWN_RULES, _NAMING):  # rules and membership are not a group's business
        if memo in old.__dict__:
            policy.__dict__[memo] = old.__dict__[memo]
    checker = Checker(doc, source)
    checker.__dict__["policy"] = policy
    checker.check_groups()
    if checker.problems:
        return None
    holders = groups_holding(doc.groups, [name])
    runs = policy._rule_table.runs
    naming = vms_naming_groups(policy, holders) if NAMING_INDEX else None  # (the other VMs' rules name none of them)
    for ref in (ref for key in runs if naming is None or key[0] != "vm" or key[1] in naming for ref in runs.unmoved(key)):  # (positions are read only for problems)
        rule = ref.rule
        if rule.family is not None and any(names_group(refs, holders) for refs in (rule.from_, rule.to)):
            checker.check_rule(ref, policy)
    return None if checker.problems else policy


def _read_entry(text: str, file: str, line: int) -> tuple[str, Any] | None:
    """One `NAME: value` line of `groups:`, read where it stands; the value must be a
    flow collection (the whole group on this line)."""
    if line < 2 or "\r" in text or not text.isprintable() or not text.startswith("  ") or text.startswith("   "):
        return None
    data = read_plain("\n" * (line - 2) + "x:\n" + text + "\n", file)
    entry = data.get("x") if data is not None else None
    if not isinstance(entry, LDict) or len(entry) != 1:
        return None
    key, value = next(iter(entry.items()))
    if not isinstance(key, str) or not isinstance(value, (LDict, LList)) or value.loc.line != line:
        return None
    return key, value


# -- rule lines added or removed ----------------------------------------------------

MAX_MOVED_LINES = 64  # an edit adding or removing more lines than this loads whole


def moved_lines(old: Policy, file: str, first: int, old_lines: list[str], new_lines: list[str]) -> Policy | None:
    """`old` with one-line rules of one VM or zone added, removed, or replaced by a
    different number of them (`old_lines`, the region of file `file` from line
    `first` that the edit replaced with `new_lines`); None otherwise or when a check
    could fail. Every later line of the file moves by the difference, and with it
    what the whole load derives from positions: the default rule ids (`file:line`),
    each rule's position, the rule spans. What else could depend on them is refused:
    a packet-limited rule whose derived id moves (its connection mark), an explicit
    id shaped like a derived one of this file (the col suffix of colliding ids).

    Positions inside `source` below the edit (other than the rule table, the rule
    spans and the groups' entries, which later edits read) are those of the previous
    text: positions there are read only for problems, and any problem sends the
    commit to the whole load, which reports it where it is."""
    lead, trail = _trimmed(old_lines, new_lines)
    removed, added = old_lines[lead : len(old_lines) - trail], new_lines[lead : len(new_lines) - trail]
    first += lead
    m, n = len(removed), len(added)
    if m == n or m + n > MAX_MOVED_LINES:
        return None
    place = _place(old, file, first, removed, old_lines[lead - 1] if lead else None, old_lines[len(old_lines) - trail] if trail else None)
    if place is None:
        return None
    owner, at, indent = place
    section, level, name = owner
    made: list[tuple[Rule, LDict]] = []
    for k, text in enumerate(added):
        parsed = _read_rule(text, file, first + k) if text.startswith(indent + "- {") else None
        if parsed is None or parsed[0].packet_limit is not None:
            return None
        made.append(parsed)
    spec = getattr(old.doc, section)[name]
    if any(rule.packet_limit is not None for rule in spec.rules[at : at + m]) or len(spec.rules) - m + n == 0:
        return None  # (a mark checked against every other rule's; `rules:` left empty means null)
    delta = n - m
    table = _moved_table(old, owner, at, m, made, file, first + m, delta)
    if table is None:
        return None
    new_rules = list(spec.rules[:at]) + [rule for rule, _ in made] + list(spec.rules[at + m :])
    specs = getattr(old.doc, section)
    doc = old.doc.model_copy(update={section: {**specs, name: spec.model_copy(update={"rules": new_rules})}})
    policy = Policy(doc, _moved_source(old.source, owner, at, m, made, file, first + m, delta))
    policy.__dict__["_rule_table"] = table
    policy.__dict__["_zone_members"] = old._zone_members  # membership is not a rule's business
    _carry_index(old, policy, level, name, table)
    policy.__dict__[_SPANS] = _moved_spans(_spans(old), file, first + m, delta, owner, [ref.loc.line for ref in table.runs[(level, name)] if ref.loc is not None and ref.loc.file == file])
    checker = Checker(doc, policy.source)
    checker.__dict__["policy"] = policy
    for ref in table.runs[(level, name)][at : at + n]:
        checker.check_rule(ref, policy)
    return None if checker.problems else policy


def _trimmed(old_lines: list[str], new_lines: list[str]) -> tuple[int, int]:
    """How many lines at the start and at the end of an edited region are the same."""
    lead = 0
    while lead < min(len(old_lines), len(new_lines)) and old_lines[lead] == new_lines[lead]:
        lead += 1
    trail = 0
    while trail < min(len(old_lines), len(new_lines)) - lead and old_lines[-1 - trail] == new_lines[-1 - trail]:
        trail += 1
    return lead, trail


def moved_empty_lines(old: Policy, file: str, text: str, first: int, old_lines: list[str], new_lines: list[str], end: int) -> Policy | None:
    """`old` with empty lines added or removed at one place of file `file` (its new
    text `text`; the region from line `first` replaced, ending at offset `end`), when
    no scalar can hold them (policy/emptylines.py): nothing changes but the positions
    below, as for rule lines added (`moved_lines`: the rule table, the rule spans and
    the groups' entries move; what a moved line could change in an id check refuses).
    None otherwise."""
    lead, trail = _trimmed(old_lines, new_lines)
    removed, added = old_lines[lead : len(old_lines) - trail], new_lines[lead : len(new_lines) - trail]
    m, n = len(removed), len(added)
    if m == n or m + n > MAX_MOVED_LINES or any(line.strip() for line in (*removed, *added)):
        return None
    after = next((line for line in new_lines[len(new_lines) - trail :] if line.strip()), None)
    if after is None:
        after = first_filled_line(text, end + 1)
    if not outside_scalars(text, after):
        return None
    runs = old._rule_table.runs
    if _ids_could_move(runs, file):
        return None
    below, delta = first + lead + m, n - m
    policy = Policy(old.doc, _moved_groups(old.source, file, below, delta))
    policy.__dict__["_rule_table"] = RuleTable(runs.after((file, below, delta)))
    policy.__dict__["_zone_members"] = old._zone_members  # membership is not a line's business
    for memo in (_OWN_RULES, _NAMING):  # they file rules by owner and place, and VMs: no line moves them
        if memo in old.__dict__:
            policy.__dict__[memo] = old.__dict__[memo]
    policy.__dict__[_SPANS] = _moved_spans(_spans(old), file, below, delta, None, [])
    return policy


def _place(old: Policy, file: str, first: int, removed: list[str], before: str | None, after: str | None) -> tuple[Owner, int, str] | None:
    """Whose rules the edit touches, the index of the first one removed or added, and
    the indentation of their lines (`- {` follows it); None unless the removed lines
    are whole one-line rules of one owner, one after the other, or the added lines
    stand before one of its rules or after its last one."""
    if removed:
        lines = list(range(first, first + len(removed)))
        found = _owner(old, file, lines)
        indent = _indent_of(removed)
        if found is None or indent is None:
            return None
        owner, indexes = found
        if indexes != list(range(indexes[0], indexes[0] + len(indexes))):
            return None
        if not all(_whole_line(old, file, owner, index, text, line) for index, text, line in zip(indexes, removed, lines, strict=True)):
            return None
        return owner, indexes[0], indent
    found = _owner(old, file, [first]) if after is not None else None  # added before a rule
    if found is not None:
        owner, (index,) = found
        indent = _indent_of([after]) if after is not None else None
        return (owner, index, indent) if indent is not None else None
    found = _owner(old, file, [first - 1]) if before is not None else None  # added after the last rule
    if found is None or before is None:
        return None
    owner, (index,) = found
    section, _, name = owner
    indent = _indent_of([before])
    if indent is None or index != len(getattr(old.doc, section)[name].rules) - 1 or not _whole_line(old, file, owner, index, before, first - 1):
        return None
    return owner, index + 1, indent


def _indent_of(texts: list[str]) -> str | None:
    """The indentation before `- {` that every line has (None: they differ, or one is no such line)."""
    indents = {text[: len(text) - len(text.lstrip(" "))] for text in texts}
    if len(indents) != 1:
        return None
    indent = indents.pop()
    return indent if all(text.startswith(indent + "- {") for text in texts) else None


def _whole_line(old: Policy, file: str, owner: Owner, index: int, text: str, line: int) -> bool:
    """Whether rule `index` of `owner` is written whole on its line `text` (a line
    added after it, or its removal, then leaves every other rule as it was)."""
    section, _, name = owner
    parsed = _read_rule(text, file, line)
    return parsed is not None and parsed[1] == old.source[section][name]["rules"][index]


def _moved(loc: Loc, delta: int) -> Loc:
    return Loc(loc.file, loc.line + delta, loc.col)


def _moved_table(old: Policy, owner: Owner, at: int, removed: int, made: list[tuple[Rule, LDict]], file: str, below: int, delta: int) -> RuleTable | None:
    """The rule table with the owner's rules `at`..`at + removed` replaced by `made`
    and every rule of `file` from line `below` on moved by `delta` lines (its derived
    id with it: made when first read, ruletable.py); None when an id check the whole
    load makes could differ."""
    runs = old._rule_table.runs
    _, level, name = owner
    if _ids_could_move(runs, file):
        return None
    run = runs[(level, name)]
    mine: list[RuleRef] = list(run[:at])
    for k, (rule, data) in enumerate(made):
        path = run[0].path[:-1] + (at + k,)
        mine.append(RuleRef(rule, run[0].level, name, at + k, rule.id or default_rule_id(data.loc, path), path, data.loc))
    for ref in run[at + removed :]:
        if ref.loc is None:
            return None  # (an id made from its path, which moves)
        now = moved_ref(ref, delta) if ref.loc.file == file and ref.loc.line >= below else ref
        index = ref.index + delta
        mine.append(RuleRef(now.rule, now.level, name, index, now.id, now.path[:-1] + (index,), now.loc))
    if not _ids_unique(runs, (level, name), mine):
        return None
    return RuleTable(runs.then((file, below, delta), (level, name), mine))


def _ids_could_move(runs: Runs, file: str) -> bool:
    """Whether moving lines of `file` could change an id check of the whole load: a
    packet-limited rule of the file with a derived id (its connection mark comes from
    it), or an explicit id shaped like one of the file's derived ids (whether a
    derived id equals it, and gets its column, would change)."""
    derived = f"{file_stem(file)}:"

    def could(ref: RuleRef) -> bool:
        rule = ref.rule
        if rule.id is not None:
            return rule.id.startswith(derived)
        return rule.packet_limit is not None and ref.loc is not None and ref.loc.file == file

    return runs.any_rule(f"ids could move: {file}", could)


def _moved_source(root: LDict, owner: Owner, at: int, removed: int, made: list[tuple[Rule, LDict]], file: str, below: int, delta: int) -> LDict:
    """The source with the owner's rule list edited, and the groups' entries (read by
    a later group edit) where their lines now are."""
    section, _, name = owner
    specs: LDict = root[section]
    spec: LDict = specs[name]
    was: LList = spec["rules"]
    rules = LList(list(was[:at]) + [data for _, data in made] + list(was[at + removed :]))
    rules.loc = was.loc
    rules.value_locs = list(was.value_locs[:at]) + [data.loc for _, data in made] + [_moved(loc, delta) for loc in was.value_locs[at + removed :]]
    return _moved_groups(_copy_dict(root, section, _copy_dict(specs, name, _copy_dict(spec, "rules", rules))), file, below, delta)


def _moved_groups(root: LDict, file: str, below: int, delta: int) -> LDict:
    """The source with the groups' entries (read by a later group edit) where their lines now are."""
    groups = root.get("groups")
    if not isinstance(groups, LDict):
        return root
    shift = lambda locs: {key: _moved(loc, delta) if loc.file == file and loc.line >= below else loc for key, loc in locs.items()}
    entries = LDict(groups)
    entries.loc, entries.key_locs, entries.value_locs = groups.loc, shift(groups.key_locs), shift(groups.value_locs)
    return _copy_dict(root, "groups", entries)


def _moved_spans(spans: dict[str, list[Span]], file: str, below: int, delta: int, owner: Owner | None, lines: list[int]) -> dict[str, list[Span]]:
    """The rule spans with the owner's anew (None: no owner's) and every line of `file` from `below` on moved."""
    out: list[Span] = []
    for first, last, who, rule_lines in spans.get(file, []):
        if who == owner:
            continue
        if last >= below:
            rule_lines = tuple(line + delta if line >= below else line for line in rule_lines)
            first, last = min(rule_lines), max(rule_lines)
        out.append((first, last, who, rule_lines))
    if lines and owner is not None:
        out.append((min(lines), max(lines), owner, tuple(lines)))
    out.sort(key=lambda span: span[0])
    return {**spans, file: out}
