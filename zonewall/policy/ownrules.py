"""The VM rules of a policy by the address references of their other end.

A query about one endpoint (`reach`: who can reach vm:a, whom can vm:a reach) asks
of every other VM which of its own rules can meet the endpoint's addresses: the
`to` of its out rules, the `from` of its in rules. Scanning every VM's rules for
that costs the whole rule list per query (200,000 rules at 10,000 VMs, ~250 ms of
a cold query). Indexed by the reference texts, each distinct text is tested once
and only the rules of those that meet are taken.

The index is built with the policy's other indexes (`Policy.build_indexes`, which
the loader calls), in one pass over the VM rules for both directions: ~0.16 s at
10,000 VMs (a list entry per rule reference, no object of its own), next to the
~5 s of the load itself; an agent's policy holds
only its node's VMs' rules, so it costs an agent next to nothing. A policy made
from another by an edit (policy/incremental.py) inherits the previous policy's
index: a group's members change nothing in it (it holds no addresses); rules
rewritten, added or removed refile the edited VM (`edited_indexes`: the lists
naming it copied; a rule of another VM keeps its place in its VM's rules when
lines move, only its derived id and line change). So the controller's semantic
diff of a commit asks the index. A policy without one answers a single query by
scanning the VM's rules; one that serves many builds it (the console's zone matrix).
"""

from __future__ import annotations

from collections.abc import Callable
from operator import attrgetter
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .resolve import Policy, RuleRef

MEMO = "_own_rule_index"  # where a policy keeps both directions' indexes


class OwnRuleIndex:
    """A policy's VM rules in one direction (enabled, applying in it) by the address
    references of their other end (`to` of an out rule, `from` of an in rule):

    * `by_text`: a reference text -> the rules whose list names it (a list without
      exclusions meets when one of its items does);
    * `everyone`: per VM, its rules without the other end (open to every address);
    * `excluding`: rules whose list has an exclusion (`!...`): tested whole;
    * `grouped`: VMs with a security group reference (the general way, as before).
    The lists hold rule table RuleRefs (its owner is the VM, its index the
    position), no object of their own: a process that keeps loaded policies
    does not carry 200,000 more objects through every garbage collection. A rule is
    filed by owner and place: after an edit that moved lines (a carried index) a
    ref's id and line may be the previous policy's; readers take the rule at that
    place from the policy (`PeerSides`)."""

    def __init__(self, direction: str) -> None:
        self.by_text: dict[str, list[RuleRef]] = {}
        self.everyone: dict[str, list[RuleRef]] = {}  # VM -> its rules open to everyone, in order
        self.excluding: list[RuleRef] = []
        self.grouped: set[str] = set()
        self.outbound = direction == "out"

    def add(self, vm: str, ref: RuleRef, refs: list[str] | None) -> None:
        """One rule of `vm` that applies in this direction; `refs`: its other end."""
        if refs is None:
            found_all = self.everyone.get(vm)
            if found_all is None:
                self.everyone[vm] = [ref]
            else:
                found_all.append(ref)
            return
        by_text = self.by_text
        if len(refs) == 1:
            text = refs[0]
            if "!" in text:
                self.excluding.append(ref)
                return
            found = by_text.get(text)
            if found is None:
                by_text[text] = [ref]
            else:
                found.append(ref)
        elif "!" in "".join(refs):  # an exclusion (or a "!" elsewhere: tested whole all the same)
            self.excluding.append(ref)
        else:
            for text in dict.fromkeys(refs):  # a text named twice in one list: once
                found = by_text.get(text)
                if found is None:
                    by_text[text] = [ref]
                else:
                    found.append(ref)

    def meeting(self, meets: Callable[[Any], bool]) -> dict[str, list[RuleRef]]:
        """VM -> its rules (in their order) whose other end names an address that can
        meet the endpoint (`meets`: a test of a reference list, such as
        `RulePlanner.meets_test` of its addresses); the rules open to everyone are
        `everyone`'s."""
        hits: dict[str, dict[int, RuleRef]] = {}
        chosen = [refs for text, refs in self.by_text.items() if meets((text,))]
        chosen.append([ref for ref in self.excluding if meets(ref.rule.to if self.outbound else ref.rule.from_)])
        for refs in chosen:
            for ref in refs:
                found = hits.get(ref.owner)
                if found is None:
                    hits[ref.owner] = {ref.index: ref}
                else:
                    found[ref.index] = ref
        return {vm: [found[p] for p in sorted(found)] for vm, found in hits.items()}

    def candidates(self, vm: str, hits: dict[str, list[RuleRef]]) -> list[RuleRef] | None:
        """The VM's rules that can meet the endpoint, in order (`hits`: `meeting`'s);
        None: it references a security group."""
        if vm in self.grouped:
            return None
        found, everyone = hits.get(vm), self.everyone.get(vm)
        if found is None:
            return everyone or []
        if everyone is None:
            return found
        return sorted(found + everyone, key=attrgetter("index"))


def build_own_rule_indexes(policy: Policy) -> dict[str, OwnRuleIndex]:
    """Both directions' indexes, from one pass over every VM's rules in order."""
    inbound, outbound = OwnRuleIndex("in"), OwnRuleIndex("out")
    for (level, vm), run in policy._rule_table.runs.items():
        if level != "vm":
            continue
        for ref in run:
            rule = ref.rule
            if rule.security_group is not None:
                inbound.grouped.add(vm)
                outbound.grouped.add(vm)
                continue
            if not rule.enabled:
                continue
            direction = rule.direction
            if direction != "out":
                inbound.add(vm, ref, rule.from_)
            if direction != "in":
                outbound.add(vm, ref, rule.to)
    return {"in": inbound, "out": outbound}


def edited_indexes(indexes: dict[str, OwnRuleIndex], vm: str, before: list[RuleRef], after: list[RuleRef]) -> dict[str, OwnRuleIndex]:
    """Both directions' indexes of a policy whose VM `vm` had its rules `before`
    replaced by `after` (policy/incremental.py: every other VM's rules are the
    previous policy's, at the same places), as `build_own_rule_indexes` would file
    them. The previous policy keeps its own: only the lists that name the VM are
    copied (a commit's diff then asks the index, not 200,000 rules)."""
    return {direction: _edited(index, vm, before, after) for direction, index in indexes.items()}


def _edited(index: OwnRuleIndex, vm: str, before: list[RuleRef], after: list[RuleRef]) -> OwnRuleIndex:
    out = OwnRuleIndex("out" if index.outbound else "in")
    fresh = OwnRuleIndex("out" if index.outbound else "in")  # the VM's new rules alone, as the build adds them
    grouped = False
    for ref in after:
        rule = ref.rule
        if rule.security_group is not None:
            grouped = True
        elif rule.enabled and rule.direction != ("in" if index.outbound else "out"):
            fresh.add(vm, ref, rule.to if index.outbound else rule.from_)
    touched = {text for ref in before for text in _texts(ref, index.outbound)} | fresh.by_text.keys()
    out.by_text = dict(index.by_text)
    for text in touched:
        kept = [ref for ref in index.by_text.get(text, ()) if ref.owner != vm] + fresh.by_text.get(text, [])
        if kept:
            out.by_text[text] = kept
        else:
            out.by_text.pop(text, None)
    out.everyone = dict(index.everyone)
    out.everyone.pop(vm, None)
    if vm in fresh.everyone:
        out.everyone[vm] = fresh.everyone[vm]
    out.excluding = [ref for ref in index.excluding if ref.owner != vm] + fresh.excluding
    out.grouped = (index.grouped - {vm}) | ({vm} if grouped else set())
    return out


def _texts(ref: RuleRef, outbound: bool) -> list[str]:
    """The reference texts under which `add` may have filed the rule."""
    refs = ref.rule.to if outbound else ref.rule.from_
    return list(refs) if refs is not None else []


def has_own_rule_index(policy: Policy) -> bool:
    """Whether the policy's index is built (the loader builds it, an edit's policy
    inherits it; else building it, ~0.2 s at 10,000 VMs, costs a single query more
    than a scan)."""
    return MEMO in policy.__dict__


def own_rule_index(policy: Policy, direction: str) -> OwnRuleIndex:
    """The policy's `OwnRuleIndex` for a direction ("in" or "out"), kept with it."""
    found: dict[str, OwnRuleIndex] | None = policy.__dict__.get(MEMO)
    if found is None:
        found = policy.__dict__[MEMO] = build_own_rule_indexes(policy)
    return found[direction]
