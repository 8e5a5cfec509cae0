"""Evaluation of flows over packet space: the Analyzer and its stages.

Which stages a flow passes is paths.py's (the plan's hooks over the kernel's packet
path: guards, chains, the ICMPv6 essentials, source translations, port forwards,
stages scoped to part of the space). Every stage must accept. Evaluating a region
splits it into parts with one outcome each (the verdict and the decision of every
stage passed), exactly; `with_replies` judges the way back through the guards.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property

from ..compiler.plan import Plan
from ..compiler.schedule import local_timezone
from ..policy.addresses import AddressSet
from ..policy.model import Rule
from ..policy.resolve import Policy
from . import space as s
from .chains import PASS, Chain, ChainBuilder, Step, essentials_region, first_match
from .describe import address_text
from .endpoints import Directory, Endpoint
from .guards import GuardBuilder, GuardStage, run_guards
from .paths import ESSENTIALS, Forwarding, Paths, PathStage, Scoped, Translation
from .regions import Regions
from .space import Box, Region


@dataclass(frozen=True)
class Decision:
    stage: str  # "guards vm:a nic 0 out", "vm:a out", "network:nas", "host:n1 in", ...
    action: str  # accept | drop | reject | pass (guards)
    label: str  # rule id / default id / filter
    step: Step | None = None  # the chain step (None for guards and essentials)

    @property
    def where(self) -> str:
        return self.step.where if self.step is not None else "built-in"

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"stage": self.stage, "action": self.action, "rule": self.label}
        if self.step is not None and self.step.ref is not None:
            ref = self.step.ref
            out["where"] = ref.where
            out["level"] = ref.level
            if ref.rule.limit is not None:
                out["limit"] = ref.rule.limit.model_dump(exclude_none=True)
        return out


@dataclass(frozen=True)
class Outcome:
    verdict: str  # accept | drop | reject
    decisions: tuple[Decision, ...]

    @property
    def decisive(self) -> Decision | None:
        """The decision that settled it: the refusing stage, or for an accepted flow
        the rule of the last chain that accepted it (the receiver's, usually)."""
        if not self.decisions:
            return None
        if self.verdict != "accept":
            return self.decisions[-1]
        for decision in reversed(self.decisions):
            if decision.step is not None:
                return decision
        return self.decisions[-1]

    def rate_limited(self) -> bool:
        return any(d.step is not None and (d.step.limited or d.step.packet_limited) and d.action == "accept" for d in self.decisions)


@dataclass(frozen=True)
class Path:
    """The endpoints of a flow as the kernel sees them: who, which NIC, which node."""

    src: Endpoint
    dst: Endpoint
    src_nic: int | None = None
    dst_nic: int | None = None


GuardOrChain = PathStage  # what a flow passes: guards, chains, essentials, translations


@dataclass
class Analyzer:
    policy: Policy
    now: datetime | None = None
    timezone: str | None = None

    def __post_init__(self) -> None:
        if self.timezone is None:
            self.timezone = local_timezone()
        self.plan = Plan(self.policy, now=self.now, timezone=self.timezone)
        self.regions = Regions()
        self.chains = ChainBuilder(self.plan, self.regions)
        self.guards = GuardBuilder(self.plan, self.regions)
        self.directory = Directory(self.policy)
        self.paths = Paths(self.plan, self.chains, self.guards)

    def share_meanings(self, other: Analyzer, *, steps: bool = True) -> None:
        """Read rule keys, regions and address owners through `other`'s memos (before
        either has built a chain). Exact only when every name a rule can reference
        (VMs' addresses, zones' members, groups, networks, nodes, services,
        schedules) means the same in both policies: `diff` of rule edits alone.

        The steps too (`steps`): a rule table edited in place keeps the very RuleRefs of the
        owners it did not edit (policy/ruletable.py), and such a rule's step is the
        same in both, so it is `other`'s (and so is its rendered step): a zone edit
        builds its 500 VMs' chains from the old side's steps, and each VM's old and
        new chains share their first steps up to the zone's (twins.py)."""
        self.plan.rules.share_matches(other.plan.rules)
        if steps:
            self.plan.rules.borrow_steps(other.plan.rules)
            self.chains.borrow_steps(other.chains)
        self.regions = self.chains.regions = self.guards.regions = other.regions
        self.share_addresses(other)

    def share_unchanged_meanings(self, other: Analyzer, reads_differently: Callable[[Rule], bool]) -> None:
        """`share_meanings` for the rules `reads_differently` leaves: the matches and
        regions of the others are `other`'s (the same objects: a step of such a rule
        has the same key in both, found equal at once). Exact when every name a rule
        can reference means the same in both policies but those whose rules
        `reads_differently` tells (`diff` of group member edits: a group whose
        addresses changed), and the VMs, NICs and nodes have the same addresses."""
        self.plan.rules.borrow_matches(other.plan.rules, reads_differently)  # (and the rules' steps, by RuleRef)
        self.chains.borrow_steps(other.chains)
        self.regions = self.chains.regions = self.guards.regions = other.regions
        self.share_addresses(other)

    def share_addresses(self, other: Analyzer) -> None:
        """Find address owners through `other`'s directory: exact when both policies'
        VMs, NICs and nodes have the same addresses (`diff` of rule or group edits)."""
        self.directory = other.directory
        other.directory.lend(self.policy)  # and the next diff, where this policy is the old one

    @cached_property
    def essentials(self) -> Region:
        return essentials_region()

    # -- the stages of a path ------------------------------------------------------

    def stages(self, path: Path) -> tuple[GuardOrChain, ...]:
        """What a flow passes, in order (paths.py, memoised there)."""
        return self.paths.flow((path.src.kind, path.src.name, path.src_nic), (path.dst.kind, path.dst.name, path.dst_nic))

    def sender_stages(self, endpoint: Endpoint, nic: int | None, peer: AddressSet | None = None) -> tuple[GuardOrChain, ...]:
        """What a flow passes on its sender's side, whatever its receiver (paths.side).
        `peer`: only for packets to these addresses (ChainBuilder.vm)."""
        return self.paths.side(endpoint.kind, endpoint.name, nic, "sender", peer)

    def receiver_stages(self, endpoint: Endpoint, nic: int | None, peer: AddressSet | None = None) -> tuple[GuardOrChain, ...]:
        """What a flow passes on its receiver's side, whatever its sender (paths.side).
        `peer`: only for packets from these addresses (ChainBuilder.vm)."""
        return self.paths.side(endpoint.kind, endpoint.name, nic, "receiver", peer)

    def meets_rate_drops(self, path: Path) -> bool:
        """Whether a stage of the path drops what exceeds a rate (protection.synflood)."""
        return _drops_over_rate(self.stages(path))

    # -- evaluation ----------------------------------------------------------------

    def evaluate(self, path: Path, space: Region, *, over_rate: bool = False) -> Iterator[tuple[Region, Outcome]]:
        """Split `space` (packets of new connections on this path) by outcome."""
        return self.run(self.stages(path), space, over_rate=over_rate)

    def reply_guards(self, path: Path) -> tuple[GuardStage, ...]:
        """The guard stages a reply crosses that can drop it: the receiver's NIC
        outbound, the sender's inbound. Guards run in the bridge family, which has no
        conntrack: unlike the inet chains they do not let established replies through
        by themselves."""
        out: list[GuardStage] = []
        if path.dst.kind == "vm" and path.dst_nic is not None and self.guards.drops_replies(path.dst.name, path.dst_nic, "out"):
            out.append(self.guards.stage(path.dst.name, path.dst_nic, "out"))  # type: ignore[arg-type]
        if path.src.kind == "vm" and path.src_nic is not None and self.guards.drops_replies(path.src.name, path.src_nic, "in"):
            a = (path.src.name, path.src_nic)
            bridged = not self.paths.routed(a) or (path.dst.kind == "vm" and path.dst_nic is not None and self.paths.same_segment(a, (path.dst.name, path.dst_nic)))
            if bridged:  # a routed reply is the node's own, onto the bridge
                out.append(self.guards.stage(path.src.name, path.src_nic, "in"))  # type: ignore[arg-type]
        return tuple(out)

    def refused_replies(self, path: Path, accepted: Region) -> Iterator[tuple[Region, Decision]]:
        """The parts of an accepted region whose replies a guard filter drops, with the
        guard's decision. Only flows with a modelled reply (TCP, UDP, SCTP, ICMP echo)."""
        stages = self.reply_guards(path)
        if not stages:
            return
        for box in (part for whole in accepted for part in _with_replies(whole)):
            reply = mirror(box)
            if reply is None:
                continue
            remaining: Region = (reply,)
            for stage in stages:
                passed: list[Box] = []
                for part, outcome, label in run_guards(stage, remaining):
                    if outcome == "pass":
                        passed.extend(part)
                    else:
                        forward = tuple(b for b in (mirror(r, back=True) for r in part) if b is not None)
                        if forward:
                            yield forward, Decision(f"{stage.name} (the reply)", outcome, label)
                remaining = tuple(passed)
                if not remaining:
                    break

    def with_replies(self, path: Path, region: Region, outcome: Outcome) -> Iterator[tuple[Region, Outcome, str | None]]:
        """An outcome judged with its replies: the parts of an accepted region whose
        replies a guard filter drops fail there (TCP, SCTP, ICMP echo: drop, at the
        stage `guards ... (the reply)`); a UDP datagram still arrives, with a note
        (third item) that its answers do not."""
        if outcome.verdict != "accept":
            yield region, outcome, None
            return
        for refused, decision in self.refused_replies(path, region):
            if refused[0][s.PROTO][0][0] == 17:
                yield refused, outcome, f"the datagram arrives, but its replies are dropped by {decision.stage}: {decision.label}"
            else:
                yield refused, Outcome("drop", outcome.decisions + (decision,)), None
            region = s.subtract(region, refused)
        if region:
            yield region, outcome, None

    def run(self, stages: tuple[GuardOrChain, ...], space: Region, decisions: tuple[Decision, ...] = (), *, over_rate: bool = False, forwarded: int | None = None) -> Iterator[tuple[Region, Outcome]]:
        """Split `space` by outcome through `stages` (each must accept)."""
        pending: list[tuple[Region, tuple[Decision, ...], int]] = [(space, decisions, 0)]
        while pending:
            region, decisions, index = pending.pop()
            if index == len(stages):
                yield region, Outcome("accept", decisions)
                continue
            stage = stages[index]
            if isinstance(stage, GuardStage):
                for part, outcome, label in run_guards(stage, region):
                    decision = Decision(stage.name, outcome, label)
                    if outcome == "pass":
                        pending.append((part, decisions + (decision,), index + 1))
                    else:
                        yield part, Outcome("drop", decisions + (decision,))
                continue
            if stage is ESSENTIALS:
                # every later stage is an inet forward/input chain, which accepts
                # these before any rule: accepted for good
                if s.overlaps(region, self.essentials):
                    hit = s.intersect(region, self.essentials)
                    yield hit, Outcome("accept", decisions + (Decision("inet forward/input", "accept", "icmpv6-essentials"),))
                    region = s.subtract(region, self.essentials)
                if region:
                    pending.append((region, decisions, index + 1))
                continue
            if isinstance(stage, Scoped):
                inside = s.intersect(region, stage.region) if s.overlaps(region, stage.region) else ()
                outside = s.subtract(region, stage.region) if inside else region
                if outside:
                    pending.append((outside, decisions, index + 1))
                if inside:
                    yield from self.run(stage.stages + stages[index + 1 :], inside, decisions, over_rate=over_rate, forwarded=forwarded)
                continue
            if isinstance(stage, Translation):
                yield from self._translate(stage, stages[index + 1 :], region, decisions, over_rate=over_rate, forwarded=forwarded)
                continue
            if isinstance(stage, Forwarding):
                yield from self._forward(stage, stages[index + 1 :], region, decisions, over_rate=over_rate)
                continue
            assert isinstance(stage, Chain)
            for part, step in first_match(stage, region, over_rate=over_rate, forwarded=forwarded):
                if step.label == PASS and step.ref is None:
                    pending.append((part, decisions, index + 1))
                    continue
                decision = Decision(stage.name, step.action, step.label, step)
                if step.action == "accept" and stage.accept_ends:
                    yield part, Outcome("accept", decisions + (decision,))
                elif step.action == "accept":
                    pending.append((part, decisions + (decision,), index + 1))
                else:
                    yield part, Outcome(step.action, decisions + (decision,))

    def _translate(self, stage: Translation, rest: tuple[GuardOrChain, ...], region: Region, decisions: tuple[Decision, ...], **kw: object) -> Iterator[tuple[Region, Outcome]]:
        """Source NAT: the stages after it see the new source. A translated part's
        results get their original source back (the later stages cut no source:
        it is one address), so the answer stays in the flow's own terms."""
        remaining = region
        for family, sources, new, label in stage.rules:
            if not remaining:
                return
            matched = s.restrict(s.restrict(remaining, s.FAM, ((family, family),)), s.SRC, sources)
            if not matched:
                continue
            remaining = s.subtract(remaining, matched)
            decision = Decision(stage.name, "pass", f"{label}: source {address_text(family, new)}")
            for box in matched:
                moved = box[: s.SRC] + (((new, new),),) + box[s.SRC + 1 :]
                for part, outcome in self.run(rest, (moved,), decisions + (decision,), **kw):  # type: ignore[arg-type]
                    yield tuple(b[: s.SRC] + (box[s.SRC],) + b[s.SRC + 1 :] for b in part), outcome
        if remaining:
            yield from self.run(rest, remaining, decisions, **kw)  # type: ignore[arg-type]

    def _forward(self, stage: Forwarding, rest: tuple[GuardOrChain, ...], region: Region, decisions: tuple[Decision, ...], **kw: object) -> Iterator[tuple[Region, Outcome]]:
        """dnat: a packet to a forwarded port goes on to the VM (its arrival stages,
        as a connection the entry forwarded); the results get the original
        destination and port back. The rest goes on through `rest` (the input)."""
        remaining = s.subtract(region, stage.untranslated) if stage.untranslated and s.overlaps(region, stage.untranslated) else region
        untranslated = s.subtract(region, remaining) if remaining is not region else ()
        if untranslated:
            yield from self.run(rest, untranslated, decisions, **kw)  # type: ignore[arg-type]
        for rule in stage.rules:
            if not remaining:
                return
            listen = ((rule.proto, rule.proto),), ((rule.port, rule.port),), ((rule.family, rule.family),)
            matched = s.restrict(s.restrict(s.restrict(s.restrict(remaining, s.PROTO, listen[0]), s.DPORT, listen[1]), s.FAM, listen[2]), s.DST, rule.listen)
            if not matched:
                continue
            remaining = s.subtract(remaining, matched)
            decision = Decision(stage.name, "pass", f"nat[{rule.entry}] dnat to {address_text(rule.family, rule.address)} port {rule.to_port}")
            for box in matched:
                moved = box[: s.DPORT] + (((rule.to_port, rule.to_port),),) + box[s.DPORT + 1 : s.DST] + (((rule.address, rule.address),),) + box[s.DST + 1 :]
                for part, outcome in self.run(rule.arrive, (moved,), decisions + (decision,), over_rate=kw.get("over_rate", False), forwarded=rule.entry):  # type: ignore[arg-type]
                    yield tuple(b[: s.DPORT] + (box[s.DPORT],) + b[s.DPORT + 1 : s.DST] + (box[s.DST],) + b[s.DST + 1 :] for b in part), outcome
        if remaining:
            yield from self.run(rest, remaining, decisions, **kw)  # type: ignore[arg-type]


def _drops_over_rate(stages: tuple[GuardOrChain, ...]) -> bool:
    """(A function, not a recursive closure: that is a reference cycle.)"""
    for stage in stages:
        if isinstance(stage, Chain) and any(step.over_only for step in stage.steps):
            return True
        if isinstance(stage, Scoped) and _drops_over_rate(stage.stages):
            return True
        if isinstance(stage, Forwarding) and any(_drops_over_rate(rule.arrive) for rule in stage.rules):
            return True
    return False


_PORTED = {6, 17, 132}  # tcp, udp, sctp: the reply swaps the ports
EPHEMERAL_PORTS = (32768, 60999)  # Linux's default net.ipv4.ip_local_port_range
_ECHO = {1: (8, 0), 58: (128, 129)}  # ICMP / ICMPv6: echo request -> echo reply


def _with_replies(box: Box) -> Iterator[Box]:
    """The parts of a box whose replies are modelled, one protocol each: tcp, udp,
    sctp, ICMP/ICMPv6 echo requests."""
    family = box[s.FAM][0][0]
    icmp = 1 if family == 4 else 58
    for number in (6, 17, 132, icmp):
        if not s.iv_overlaps(box[s.PROTO], ((number, number),)):
            continue
        part = s.box_restrict(box, s.PROTO, ((number, number),))
        if part is not None and number == icmp:
            part = s.box_restrict(part, s.DPORT, ((_ECHO[icmp][0],) * 2,))
        if part is not None:
            yield part


def mirror(box: Box, *, back: bool = False) -> Box | None:
    """The replies to a box's packets (or, `back`, the packets a box of replies
    answers); None where no reply is modelled (an ICMP type other than echo, a box
    mixing protocols)."""
    proto = box[s.PROTO]
    if len(proto) != 1 or proto[0][0] != proto[0][1]:
        return None
    number = proto[0][0]
    dport, sport = box[s.DPORT], box[s.SPORT]
    if number in _PORTED:
        dport, sport = sport, dport
    elif number in _ECHO:
        request, reply = _ECHO[number] if not back else _ECHO[number][::-1]
        if dport != ((request, request),):
            return None
        dport = ((reply, reply),)
    else:
        return None
    out = list(box)
    out[s.SRC], out[s.DST] = box[s.DST], box[s.SRC]
    out[s.DPORT], out[s.SPORT] = dport, sport
    return tuple(out)
