"""A diff's rows (analysis/diff.py): what a flow's two sides make of it, whether two
outcomes differ, and the rows of the flows that do, merged for reading."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .engine import Outcome
from .reach import decision_json


@dataclass
class DiffRow:
    change: str  # opened | closed | changed (drop <-> reject)
    src: set[str] = field(default_factory=set)
    dst: set[str] = field(default_factory=set)
    services: tuple[str, ...] = ()
    when: str = "always"
    old: Outcome | None = None
    new: Outcome | None = None

    def to_json(self) -> dict[str, Any]:
        def side(outcome: Outcome | None) -> dict[str, Any] | None:
            if outcome is None:
                return None
            return {"verdict": outcome.verdict, "decided_by": decision_json(outcome.decisive)}

        return {
            "change": self.change,
            "from": sorted(self.src),
            "to": sorted(self.dst),
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


def _merge_rows(rows: list[DiffRow]) -> list[DiffRow]:
    """One row per (change, peers, decisions): services of otherwise equal rows merge,
    then rows equal but for one side's peers merge that side."""
    merged: dict[tuple[object, ...], DiffRow] = {}
    for row in rows:
        # (sets as keys, not sorted: a zone edit's rows hold thousands of peers each)
        key = (row.change, frozenset(row.src), frozenset(row.dst), row.when, _decisive_label(row.old), _decisive_label(row.new))  # type: ignore[arg-type]
        if key in merged:
            merged[key].services = tuple(dict.fromkeys(merged[key].services + row.services))
        else:
            merged[key] = row
    by_src: dict[tuple[object, ...], DiffRow] = {}
    for row in merged.values():
        peers_key = (row.change, frozenset(row.dst), row.services, row.when, _decisive_label(row.old), _decisive_label(row.new))  # type: ignore[arg-type]
        if peers_key in by_src:
            by_src[peers_key].src |= row.src
        else:
            by_src[peers_key] = row
    for row in by_src.values():
        for side in (row.src, row.dst):
            if {"outside: any ipv4", "outside: any ipv6"} <= side:
                side -= {"outside: any ipv4", "outside: any ipv6"}
                side.add("outside: any")
    return sorted(by_src.values(), key=lambda r: (r.change, sorted(r.dst), sorted(r.src), r.services))
