"""`zonewall trace`: would this connection get through, and which rule decides?

The flow is one packet of a new connection, exact in every field the policy can
match except those left open: the source port (unless `--sport`, the kernel's
ephemeral range 32768-60999) and the time (unless `--at`, the whole week). When
the verdict depends on them, every case is listed.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..compiler.coverage import not_enforced
from ..policy.builtins import IP_PROTOCOLS
from ..policy.icmpcodes import is_coded, type_and_code
from . import space as s
from .approximations import approximations
from .describe import minute_of_week, rule_text, time_text
from .endpoints import Endpoint, EndpointError, family_number
from .engine import EPHEMERAL_PORTS, Analyzer, Decision, Outcome, Path
from .nat import forward_of
from .regions import ICMP_PROTO, ICMP_TABLE

EPHEMERAL = EPHEMERAL_PORTS  # the source ports a flow is traced from unless --sport


class TraceError(ValueError):
    pass


@dataclass(frozen=True)
class FlowSpec:
    proto: str  # tcp | udp | sctp | icmp | a protocol name or number
    port: int | None = None  # destination port (tcp/udp/sctp)
    icmp_type: str | None = None  # icmp type name or number
    sport: int | None = None
    family: int | None = None  # 4 | 6 (default: from the addresses, else 4)
    at: datetime | None = None

    def describe(self) -> str:
        if self.proto in ("tcp", "udp", "sctp"):
            return f"{self.proto}/{self.port}"
        if self.proto == "icmp":
            return f"icmp {self.icmp_type or 'echo-request'}"
        return self.proto


@dataclass
class Case:
    verdict: str
    outcome: Outcome
    time: s.Intervals
    sport: s.Intervals


@dataclass
class TraceResult:
    src: Endpoint
    dst: Endpoint
    src_address: str
    dst_address: str
    family: int
    flow: FlowSpec
    cases: list[Case]
    over_rate: list[Case] = field(default_factory=list)  # when a rate-limited accept decided
    notes: list[str] = field(default_factory=list)
    # whether src/dst are the very addresses asked for (an address, outside:ADDR), or
    # the address trace chose for a vm:/host: reference (the NIC's first of the family)
    src_exact: bool = False
    dst_exact: bool = False

    @property
    def verdict(self) -> str:
        verdicts = {case.verdict for case in self.cases}
        return verdicts.pop() if len(verdicts) == 1 else "depends"

    @property
    def delivered(self) -> bool:
        return self.verdict == "accept"

    def to_json(self) -> dict[str, Any]:
        return {
            "flow": {
                "from": self.src.label,
                "to": self.dst.label,
                "src": self.src_address,
                "dst": self.dst_address,
                "family": f"ipv{self.family}",
                "protocol": self.flow.describe(),
                "src_exact": self.src_exact,
                "dst_exact": self.dst_exact,
                "sport": self.flow.sport,
                "at": self.flow.at.isoformat() if self.flow.at else None,
            },
            "verdict": self.verdict,
            "cases": [_case_json(c) for c in self.cases],
            "over_rate": [_case_json(c) for c in self.over_rate],
            "notes": self.notes,
        }


def _decision_json(decision: Decision) -> dict[str, Any]:
    out = decision.to_json()
    if decision.step is not None and decision.step.ref is not None:
        out["text"] = rule_text(decision.step.ref.rule)
    return out


def _case_json(case: Case) -> dict[str, Any]:
    decisive = case.outcome.decisive
    return {
        "verdict": case.verdict,
        "when": time_text(case.time),
        "sport": ",".join(f"{a}-{b}" if a != b else str(a) for a, b in case.sport),
        "decided_by": _decision_json(decisive) if decisive else None,
        "stages": [_decision_json(d) for d in case.outcome.decisions],
    }


def protocol_point(flow: FlowSpec, family: int) -> tuple[int, int]:
    """(PROTO, DPORT) of the flow."""
    if flow.proto in ("tcp", "udp", "sctp"):
        if flow.port is None:
            raise TraceError(f"--{flow.proto} needs a destination port")
        return IP_PROTOCOLS[flow.proto], flow.port
    if flow.proto == "icmp":
        name = flow.icmp_type or "echo-request"
        table = ICMP_TABLE[family]
        if name.isdigit():
            return ICMP_PROTO[family], int(name)
        if is_coded(name):  # a type and a code (issue 18): the code is the packet's SPORT
            found = type_and_code(name, "ipv4" if family == 4 else "ipv6")
            if found is None:
                raise TraceError(f"ICMP code {name} does not exist in IPv{family}")
            return ICMP_PROTO[family], found[0]
        if name not in table:
            raise TraceError(f"ICMP type {name} does not exist in IPv{family}")
        return ICMP_PROTO[family], table[name]
    text = flow.proto
    if text.isdigit() and 0 <= int(text) <= 255:
        return int(text), 0
    if text in IP_PROTOCOLS:
        return IP_PROTOCOLS[text], 0
    raise TraceError(f"unknown protocol {text!r}")


def icmp_code(flow: FlowSpec, family: int) -> int:
    """The ICMP code of the flow (its SPORT, analysis/space.py): a code item's
    (`host-unreachable`, `destination-unreachable/4`), else 0."""
    if flow.proto != "icmp" or not flow.icmp_type or not is_coded(flow.icmp_type):
        return 0
    found = type_and_code(flow.icmp_type, "ipv4" if family == 4 else "ipv6")
    return found[1] if found is not None else 0


def choose_family(analyzer: Analyzer, src: Endpoint, dst: Endpoint, requested: int | None) -> int:
    for endpoint in (src, dst):
        if endpoint.kind == "outside" or endpoint.address is not None:
            family = family_number(endpoint.address or endpoint.name)
            if requested is not None and requested != family:
                raise TraceError(f"{endpoint.label} is IPv{family} but the flow was asked for IPv{requested}")
            return family
    if requested is not None:
        return requested
    return 4


def trace(analyzer: Analyzer, source: str, destination: str, flow: FlowSpec) -> TraceResult:
    try:
        src = analyzer.directory.parse(source)
        dst = analyzer.directory.parse(destination)
        exact_src = src.kind == "outside" or src.address is not None
        exact_dst = dst.kind == "outside" or dst.address is not None
        family = choose_family(analyzer, src, dst, flow.family)
        dst_address, dst_nic = analyzer.directory.target_address(dst, family, near=src)
        src_address, src_nic = analyzer.directory.source_address(src, family, dst_address)
    except EndpointError as exc:
        raise TraceError(str(exc)) from None
    if src.kind == "vm" and src.network is None:
        src = Endpoint("vm", src.name, src_nic, analyzer.policy.doc.vms[src.name].nics[src_nic].network if len(analyzer.policy.doc.vms[src.name].nics) > 1 else None)  # type: ignore[index]
    if dst.kind == "vm" and dst.network is None and len(analyzer.policy.doc.vms[dst.name].nics) > 1:
        dst = Endpoint("vm", dst.name, dst_nic, analyzer.policy.doc.vms[dst.name].nics[dst_nic].network)  # type: ignore[index]
    proto, dport = protocol_point(flow, family)
    forward = forward_of(analyzer.policy, dst, dst_address, proto, dport)
    untranslated_note = None
    if forward is not None and not analyzer.paths.forwarded_from(forward.node, (src.kind, src.name, src_nic), (forward.vm, forward.nic)):
        why = ("the node bridges its guest's connection out first and tracks it untranslated, so it arrives at the node itself"
               if not analyzer.paths.routed((src.name, src_nic)) else  # type: ignore[arg-type]
               "hairpin (the target shares the sender's segment: the reply would bypass the translation) is treated as traffic to the node")
        untranslated_note = f"nat[{forward.index}] forwards {dst_address} port {dport}, but not for {src.label}: {why}"
        forward = None
    if forward is not None:  # the node's prerouting takes it on to the VM (a stage of the path)
        nat_note = forward.describe(f"{dst.label} {dst_address}", dport)
    sport = ((flow.sport, flow.sport),) if flow.sport is not None else (EPHEMERAL,) if proto in (6, 17, 132) else ((icmp_code(flow, family),) * 2,)
    time = ((minute_of_week(flow.at),) * 2,) if flow.at is not None else s.FULL[s.TIME]
    packet = (
        ((proto, proto),),
        ((dport, dport),),
        ((family, family),),
        ((int(ipaddress.ip_address(src_address)),) * 2,),
        ((int(ipaddress.ip_address(dst_address)),) * 2,),
        sport,
        time,
    )
    path = Path(Endpoint(src.kind, src.name), Endpoint(dst.kind, dst.name), src_nic, dst_nic)
    if forward is not None:  # what the flow reaches, as the result names it
        dst, dst_address, exact_dst = forward.endpoint, forward.address, False
    reply_notes: list[str] = []
    cases = _cases(analyzer, path, packet, over_rate=False, notes=reply_notes)
    result = TraceResult(src, dst, src_address, dst_address, family, flow, cases, src_exact=exact_src, dst_exact=exact_dst)
    result.notes += sorted(set(reply_notes))
    if forward is not None:
        result.notes.append(nat_note)
    if untranslated_note is not None:
        result.notes.append(untranslated_note)
    if any(case.outcome.rate_limited() for case in cases) or analyzer.meets_rate_drops(path):
        over = _cases(analyzer, path, packet, over_rate=True)
        if [c.outcome for c in over] != [c.outcome for c in cases]:
            result.over_rate = over
            result.notes += _rate_notes(cases, over)
    for stage in analyzer.stages(path):
        for approximation in getattr(stage, "approximations", list)():
            result.notes.append(f"approximated: {approximation}")
    result.notes += [f"not enforced yet: {w}" for w in not_enforced(analyzer.policy)]
    result.notes += [f"approximated: {w}" for w in approximations(analyzer.policy)]
    return result


def _rate_notes(cases: list[Case], over: list[Case]) -> list[str]:
    """What `over_rate` shows: which rates the flow's verdict depends on."""
    within = [d.step for c in cases for d in c.outcome.decisions if d.step is not None]
    beyond = [d.step for c in over for d in c.outcome.decisions if d.step is not None]
    notes = []
    if any(st.limited for st in within):
        notes.append("a rate-limited rule accepted this flow: within the rate it is accepted; over the rate it falls through (see over_rate)")
    if any(st.packet_limited for st in within):
        notes.append("a packet_limit rule accepted this flow: over its packet rate the connection's packets are dropped (see over_rate)")
    if any(st.over_only for st in beyond):
        notes.append("protection.synflood: over its rate of new TCP connections per source, the SYN is dropped (see over_rate)")
    return notes


def _cases(analyzer: Analyzer, path: Path, packet: s.Box, *, over_rate: bool, notes: list[str] | None = None) -> list[Case]:
    cases = []
    # guards are stateless (no conntrack in the bridge family): an accepted
    # connection also needs its replies through them
    for whole, first in analyzer.evaluate(path, (packet,), over_rate=over_rate):
        for part, outcome, note in analyzer.with_replies(path, whole, first):
            if note is not None and notes is not None:
                notes.append(note)
            for box in part:
                cases.append(Case(outcome.verdict, outcome, box[s.TIME], box[s.SPORT]))
    cases.sort(key=lambda c: (c.time, c.sport))
    return _merge_cases(cases)


def _merge_cases(cases: list[Case]) -> list[Case]:
    """Cases with the same decisions over several pieces of time/sport become one."""
    out: list[Case] = []
    for case in cases:
        for other in out:
            if other.outcome == case.outcome:
                if other.sport == case.sport:
                    other.time = s.iv_union(other.time, case.time)
                    break
                if other.time == case.time:
                    other.sport = s.iv_union(other.sport, case.sport)
                    break
        else:
            out.append(case)
    return out
