"""A diff's rows (analysis/diff.py): what a flow's two sides make of it, whether two
outcomes differ, and the rows of the flows that do, merged for reading.

A row holds the flows of every endpoint of `from` to every endpoint of `to`, but
never of a VM to itself: its own NICs are not its peers (differ.py compares none of
their flows). That lets the rows of endpoints whose own sides decided alike but for
their names be one row (`_alike_merged`): a zone rule open to everyone changes the
flows of each of the zone's 500 VMs to the 10,000 others in a handful of rows, not in
thousands of rows of 10,000 peers each; the deciding stage of such a row is named
for the role (`from out`, `to in`), as a group of peers' is (`peer in`).
"""

from __future__ import annotations

from collections.abc import Callable, MutableSet
from dataclasses import dataclass, field, replace
from typing import Any

from .engine import Outcome
from .labelsets import Alphabet, Labels
from .reach import decision_json
from .rowsides import SideLister, ZoneLabels

Owner = tuple[str, frozenset[str]]  # an endpoint's name ("vm:web1"), all its labels ("vm:web1@a", "vm:web1@b")
ROLE_WORDS = {"sender": "from", "receiver": "to"}


@dataclass
class DiffRow:
    change: str  # opened | closed | changed (drop <-> reject)
    src: MutableSet[str] = field(default_factory=set)  # (a Labels once merged: labelsets.py)
    dst: MutableSet[str] = field(default_factory=set)
    services: tuple[str, ...] = ()
    when: str = "always"
    old: Outcome | None = None
    new: Outcome | None = None
    # whose own side was run (differ.Differ): "sender" (`src` is theirs) or "receiver"
    # (`dst`), the endpoint its outcomes' stages name ("vm:web1"), and for each own
    # label its endpoint's name and all that endpoint's labels (never its peers);
    # rows merged for reading have none
    role: str = ""
    named: str = ""
    owners: dict[str, Owner] = field(default_factory=dict)
    # `from` and `to` as listed, once the rows are final (rowsides.py; _merge_rows sorts the rows by them)
    listed: tuple[list[str], list[str]] | None = None

    def to_json(self) -> dict[str, Any]:
        def side(outcome: Outcome | None) -> dict[str, Any] | None:
            if outcome is None:
                return None
            return {"verdict": outcome.verdict, "decided_by": decision_json(outcome.decisive)}

        return {
            "change": self.change,
            "from": self.listed[0] if self.listed is not None else sorted(self.src),
            "to": self.listed[1] if self.listed is not None else sorted(self.dst),
            "services": list(self.services),
            "when": self.when,
            "old": side(self.old),
            "new": side(self.new),
        }


@dataclass
class DiffResult:
    rows: list[DiffRow]
    endpoints: list[dict[str, str]]  # VMs/NICs/nodes added, removed or readdressed
    notes: list[str]

    @property
    def identical(self) -> bool:
        return not self.rows and not self.endpoints

    def to_json(self) -> dict[str, Any]:
        return {"identical": self.identical, "flows": [r.to_json() for r in self.rows], "endpoints": self.endpoints, "notes": self.notes}


def _final(peer: Outcome, own: Outcome, own_is_receiver: bool) -> Outcome:
    """A flow's outcome from its two sides: a refusal on the sender's side first,
    then on the receiver's; accepted when both accept."""
    sender, receiver = (peer, own) if own_is_receiver else (own, peer)
    # the bridge's guard filters run before any inet chain (engine.py's order)
    for side in (sender, receiver):
        if side.verdict != "accept" and _by_guard(side):
            return side
    if sender.verdict != "accept":
        return sender
    if receiver.verdict != "accept":
        return receiver
    return Outcome("accept", sender.decisions + receiver.decisions)


def _by_guard(outcome: Outcome) -> bool:
    decision = outcome.decisive
    return decision is not None and "guards" in decision.stage


def _delivery(outcome: Outcome) -> str | None:
    """Where a port forward sent the connection (None: where it was addressed)."""
    return next((d.label for d in outcome.decisions if d.stage.endswith(" dnat")), None)


def _differs(a: Outcome, b: Outcome) -> str | None:
    if a.verdict == b.verdict:
        # accepted both times but delivered elsewhere (a port forward added, removed, retargeted)
        return "changed" if a.verdict == "accept" and _delivery(a) != _delivery(b) else None
    if b.verdict == "accept":
        return "opened"
    if a.verdict == "accept":
        return "closed"
    return "changed"


def _decisive_label(outcome: Outcome) -> tuple[str, str] | None:
    decision = outcome.decisive
    return (decision.stage, decision.label) if decision else None


def _merge_rows(rows: list[DiffRow], zones: Callable[[], ZoneLabels] = dict) -> list[DiffRow]:
    """One row per (change, peers, decisions): rows of endpoints alike but for their
    names merge, then services of otherwise equal rows, then rows equal but for one
    side's peers merge that side. Large sides name the `zones` they hold (rowsides.py).
    Every side is a `Labels` of one alphabet here (labelsets.py): keys and unions of
    thousands of peers are integers."""
    alphabet = _labelled(rows)
    merged: dict[tuple[object, ...], DiffRow] = {}
    for row in _alike_merged(rows, alphabet):
        key = (row.change, _bits(row.src), _bits(row.dst), row.when, _decisive_label(row.old), _decisive_label(row.new))  # type: ignore[arg-type]
        if key in merged:
            merged[key].services = tuple(dict.fromkeys(merged[key].services + row.services))
        else:
            merged[key] = row
    by_src: dict[tuple[object, ...], DiffRow] = {}
    for row in merged.values():
        peers_key = (row.change, _bits(row.dst), row.services, row.when, _decisive_label(row.old), _decisive_label(row.new))  # type: ignore[arg-type]
        if peers_key in by_src:
            by_src[peers_key].src |= row.src
        else:
            by_src[peers_key] = row
    for row in by_src.values():
        for side in (row.src, row.dst):
            if {"outside: any ipv4", "outside: any ipv6"} <= side:
                side -= {"outside: any ipv4", "outside: any ipv6"}
                side.add("outside: any")
    listed = SideLister((side for row in by_src.values() for side in (row.src, row.dst)), zones)
    for row in by_src.values():
        row.listed = (listed(row.src), listed(row.dst))
    return sorted(by_src.values(), key=lambda r: (r.change, r.listed[1], r.listed[0], r.services, r.when,  # type: ignore[index]
                                                   str(_unnamed(r.old, "")), str(_unnamed(r.new, ""))))


def _labelled(rows: list[DiffRow]) -> Alphabet:
    """The rows' sides as `Labels` of one alphabet: the recorder's, whose rows have
    them already (diffrecord.py), or a new one (rows made of plain sets)."""
    alphabet = next((side.alphabet for row in rows for side in (row.src, row.dst) if isinstance(side, Labels)), None) or Alphabet()
    for row in rows:
        if not (isinstance(row.src, Labels) and row.src.alphabet is alphabet):
            row.src = alphabet.of(row.src)
        if not (isinstance(row.dst, Labels) and row.dst.alphabet is alphabet):
            row.dst = alphabet.of(row.dst)
    return alphabet


def _bits(side: MutableSet[str]) -> int:
    assert isinstance(side, Labels)  # (_labelled made it one)
    return side.bits


def _alike_merged(rows: list[DiffRow], alphabet: Alphabet) -> list[DiffRow]:
    """The rows of each endpoint's own side, with those of endpoints that decided alike
    but for their names as one row where that is exact (module docstring).

    Rows alike (the same role, change, services, time and deciding rules up to the
    own endpoint's name) give each own label L its peers T(L) (the union over its
    rows). L's closed peers add back its own labels that are another's peer here;
    labels with the same closed peers share a row of all of them to those peers:
    exact, as each one's own labels are never its peers. The answer depends on the
    flows alone, not on how differ.py gathered them (a class's rows hold many labels)."""
    out: list[DiffRow] = []
    alike: dict[tuple[object, ...], list[DiffRow]] = {}
    for row in rows:
        if not row.role:
            out.append(row)
            continue
        key = (row.role, row.change, row.services, row.when, _unnamed(row.old, row.named), _unnamed(row.new, row.named))
        alike.setdefault(key, []).append(row)
    own_bits = _OwnBits(alphabet)
    for group in alike.values():
        out.extend(_alike_group(group, own_bits))
    return out


class _OwnBits:
    """The bits of an endpoint's own labels (its `Owner`'s set: one object per
    endpoint, kept with the answer so that its id stays its own)."""

    def __init__(self, alphabet: Alphabet) -> None:
        self.alphabet = alphabet
        self._found: dict[int, tuple[frozenset[str], int]] = {}

    def __call__(self, labels: frozenset[str]) -> int:
        found = self._found.get(id(labels))
        if found is None or found[0] is not labels:
            found = self._found[id(labels)] = (labels, self.alphabet.mask(labels))
        return found[1]


def _alike_group(group: list[DiffRow], own_bits: _OwnBits) -> list[DiffRow]:
    sender = group[0].role == "sender"
    ours = (lambda r: r.src) if sender else (lambda r: r.dst)  # the own labels of a row
    theirs = (lambda r: r.dst) if sender else (lambda r: r.src)  # its peers
    if len(group) == 1 and len(group[0].owners) == 1:  # one endpoint's row: nothing to merge
        row = group[0]
        theirs(row).difference_update(next(iter(row.owners.values()))[1])
        return [row] if theirs(row) else []
    everyone = 0  # every label that is someone's peer here (a class's row holds its members among its peers)
    rows_of: dict[str, list[DiffRow]] = {}
    for row in group:
        own_labels = list(ours(row))
        names = {row.owners[label][0] for label in own_labels}
        own = own_bits(row.owners[own_labels[0]][1]) if len(names) == 1 else 0
        everyone |= _bits(theirs(row)) & ~own
        for label in own_labels:
            rows_of.setdefault(label, []).append(row)
    unions: dict[tuple[int, ...], int] = {}
    closed_peers: dict[int, list[tuple[str, DiffRow]]] = {}
    for label, its_rows in rows_of.items():
        ids = tuple(id(r) for r in its_rows)  # (labels in the same rows share their union)
        peers = unions.get(ids)
        if peers is None:
            peers = 0
            for r in its_rows:
                peers |= _bits(theirs(r))
            unions[ids] = peers
        own = own_bits(its_rows[0].owners[label][1])
        if not peers & ~own:
            continue  # its only peers would be itself
        # its own labels that are another's peers: the row of them all holds them
        closed = (peers & ~own) | (own & everyone)
        closed_peers.setdefault(closed, []).append((label, its_rows[0]))
    return [_alike_row(sender, Labels(own_bits.alphabet, closed), members) for closed, members in closed_peers.items()]


def _alike_row(sender: bool, closed: Labels, members: list[tuple[str, DiffRow]]) -> DiffRow:
    """One row of the own labels that share their closed peers."""
    label, sample = members[0]
    names = dict.fromkeys(row.owners[own][0] for own, row in members)
    if len(names) == 1:  # one endpoint (its NICs): its own name, its peers but itself
        name, own = sample.owners[label]
        peers, word = closed - own, name
    else:
        peers, word = closed, ROLE_WORDS[sample.role]
    labels = closed.alphabet.of(own for own, _row in members)
    old, new = _renamed(sample.old, sample.named, word), _renamed(sample.new, sample.named, word)
    src, dst = (labels, peers) if sender else (peers, labels)
    return DiffRow(sample.change, src, dst, sample.services, sample.when, old, new)


def _name_replaced(text: str, name: str, word: str) -> str:
    """`text` with `word` for each `name` in it that stands alone as a name: "vm:web1
    out", not "vm:web10 out" (the regular expression (?<![\\w.:-])NAME(?![\\w.@-]),
    written out: a diff of a group edit meets 500 names once each, and compiling a
    pattern per name was 65 ms of it)."""
    out: list[str] = []
    start, size, at = 0, len(name), text.find(name)
    while at != -1:
        end = at + size
        if (at == 0 or not _joins(text[at - 1], ".:-")) and (end == len(text) or not _joins(text[end], ".@-")):
            out += (text[start:at], word)
            start = end
            at = text.find(name, end)
        else:
            at = text.find(name, at + 1)
    return "".join(out) + text[start:] if out else text


def _joins(char: str, punctuation: str) -> bool:
    """Whether `char` continues a name (a word character, as `\\w` is, or `punctuation`)."""
    return char.isalnum() or char == "_" or char in punctuation


def _unnamed(outcome: Outcome | None, name: str) -> tuple[object, ...] | None:
    """The outcome's verdict and deciding rule, the endpoint's name taken out of its stage."""
    if outcome is None:
        return None
    decision = outcome.decisive
    if decision is None:
        return (outcome.verdict,)
    stage = _name_replaced(decision.stage, name, "\0") if name and name in decision.stage else decision.stage
    return (outcome.verdict, stage, decision.action, decision.label)


def _renamed(outcome: Outcome | None, name: str, word: str) -> Outcome | None:
    """The outcome with `word` in its stages where they name the endpoint `name`."""
    if outcome is None or not name or name == word:
        return outcome
    return Outcome(outcome.verdict, tuple(replace(d, stage=_name_replaced(d.stage, name, word)) if name in d.stage else d for d in outcome.decisions))
