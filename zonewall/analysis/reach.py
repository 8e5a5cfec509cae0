"""`zonewall reach`: everything that can reach (or be reached from) an endpoint.

For `--to T`, T's side (guards in, its `in` chain or node input) is evaluated once
over every source; what it accepts is then split by who owns the source address:
outside (no chain of ours), a node (its output chain) or a VM NIC (guards out, its
`out` chain, their network's check between them). VM senders whose chains do the same
thing on what T accepts are evaluated together, so the cost follows the number of
distinct behaviours, not the number of VMs. `--from S` is the mirror image.

The ICMPv6 essentials (neighbour/router discovery, MLD) are always allowed and are
not listed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ..gcpause import collector_paused
from ..policy.addresses import AddressSet, address_value
from . import space as s
from .approximations import approximations
from .chains import essentials_region
from .describe import addresses_text, rule_text, services_of, time_text
from .endpoints import Endpoint, EndpointError
from .engine import Analyzer, Decision, GuardOrChain, Outcome, Path
from .peers import PeerSides, PeerSpace
from .space import Intervals, Region

Direction = Literal["to", "from"]
NicKey = tuple[str, str, int | None]  # (kind, name, nic)


class ReachError(ValueError):
    pass


@dataclass
class Row:
    peer_kind: str  # vm | host | outside
    services: tuple[str, ...]
    when: str
    rule: Decision | None  # the deciding rule on the endpoint's side
    peer_rule: Decision | None  # ... and on the peer's side
    vms: dict[str, set[int]] = field(default_factory=dict)  # vm -> families
    hosts: dict[str, set[int]] = field(default_factory=dict)
    outside: dict[int, Intervals] = field(default_factory=dict)  # family -> addresses


@dataclass
class Reach:
    endpoint: Endpoint
    nic: int | None
    direction: Direction
    rows: list[Row]
    labels: dict[int, list[str]]  # id(row) -> compact peer labels
    notes: list[str]

    @property
    def label(self) -> str:
        return self.endpoint.label

    def to_json(self) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint.label,
            "direction": self.direction,
            "rows": [row_json(row, self.labels[id(row)]) for row in self.rows],
            "notes": self.notes,
        }


def decision_json(decision: Decision | None) -> dict[str, Any] | None:
    if decision is None:
        return None
    out = decision.to_json()
    if decision.step is not None and decision.step.ref is not None:
        out["text"] = rule_text(decision.step.ref.rule)
    return out


def row_json(row: Row, labels: list[str]) -> dict[str, Any]:
    families = sorted({f for fams in list(row.vms.values()) + list(row.hosts.values()) for f in fams} | set(row.outside))
    out: dict[str, Any] = {
        "peers": labels,
        "peer_kind": row.peer_kind,
        "families": [f"ipv{f}" for f in families],
        "services": list(row.services),
        "when": row.when,
        "rule": decision_json(row.rule),
        "peer_rule": decision_json(row.peer_rule),
    }
    if row.peer_kind == "vm":
        out["members"] = sorted(row.vms)
    elif row.peer_kind == "host":
        out["members"] = sorted(row.hosts)
    else:
        out["members"] = [a for f in sorted(row.outside) for a in addresses_text(f, row.outside[f], limit=1000)]
    return out


# -- the endpoints a reference names ---------------------------------------------------


def expand(analyzer: Analyzer, ref: str) -> list[tuple[Endpoint, int | None]]:
    """(endpoint, NIC) for every concrete endpoint a reference names."""
    policy = analyzer.policy
    kind, sep, name = ref.partition(":")
    if sep and kind == "zone":
        if name not in policy.doc.zones:
            raise ReachError(f"{ref}: zone {name} is not in the policy")
        return [(Endpoint("vm", vm), n) for vm in sorted(policy.doc.vms) if policy.doc.vms[vm].zone == name for n in range(len(policy.doc.vms[vm].nics))]
    if (sep and kind in ("group", "network")) or (not sep and "/" in ref):
        addresses = policy.address_set([ref]) if not sep or name in (policy.doc.groups if kind == "group" else policy.doc.networks) else None
        if addresses is None:
            raise ReachError(f"{ref}: {kind} {name} is not in the policy")
        found: dict[NicKey, None] = {}
        for family in (4, 6):
            for _address, owner in analyzer.directory.owned_within(family, addresses.v4 if family == 4 else addresses.v6):
                found[owner] = None
        if not found:
            raise ReachError(f"{ref}: no VM or node has an address in it")
        return [(Endpoint(k, n), nic) for k, n, nic in found]  # type: ignore[arg-type]
    try:
        endpoint = analyzer.directory.parse(ref)
    except EndpointError as exc:
        raise ReachError(str(exc)) from None
    if endpoint.kind != "vm":
        return [(endpoint, None)]
    nics = policy.doc.vms[endpoint.name].nics
    chosen = [n for n in range(len(nics)) if (endpoint.nic is None or n == endpoint.nic) and (endpoint.network is None or nics[n].network == endpoint.network)]
    return [(Endpoint("vm", endpoint.name, network=nics[n].network if len(nics) > 1 else None), n) for n in chosen]


def endpoint_addresses(analyzer: Analyzer, endpoint: Endpoint, nic: int | None) -> dict[int, Intervals]:
    """The endpoint's addresses per family (memoised on the analyzer: asked per peer)."""
    memo: dict[tuple[str, str, int | None], dict[int, Intervals]] = analyzer.__dict__.setdefault("_endpoint_addresses", {})
    key = (endpoint.kind, endpoint.name, nic)
    found = memo.get(key)
    if found is None:
        found = memo[key] = _addresses(analyzer, endpoint, nic)
    return found


def _addresses(analyzer: Analyzer, endpoint: Endpoint, nic: int | None) -> dict[int, Intervals]:
    if endpoint.kind == "outside":
        family, value = address_value(endpoint.name)
        return {family: ((value, value),)}
    # a VM NIC's or a node's: the directory has read them once
    owned = analyzer.directory.addresses((endpoint.kind, endpoint.name, (nic or 0) if endpoint.kind == "vm" else None))
    return {f: ((values[0], values[0]),) if len(values) == 1 else s.merge((v, v) for v in values) for f, values in owned.items() if values}


# -- reach ------------------------------------------------------------------------------


def reach(analyzer: Analyzer, ref: str, direction: Direction, services: Region | None = None, *, grouped: bool = True, indexed: bool | None = None) -> list[Reach]:
    # Tens of thousands of small tuples and memos, no cycles: the cyclic collector
    # would only walk the whole policy again (as when linting and compiling).
    with collector_paused():
        return [reach_endpoint(analyzer, endpoint, nic, direction, services, grouped=grouped, indexed=indexed) for endpoint, nic in expand(analyzer, ref)]


def reach_endpoint(analyzer: Analyzer, endpoint: Endpoint, nic: int | None, direction: Direction, services: Region | None = None, *, grouped: bool = True,
                   indexed: bool | None = None) -> Reach:
    """`grouped`: peers' sides from pieces they share (peers.PeerSides.reduced);
    False: each peer's side built whole and reduced (the same answer, slower).
    `indexed`: the peers' own rules found through the policy's index (PeerSides);
    False: by a scan of every VM's rules (the same answer); None: the index if the
    policy has it built (a loaded policy), else the scan."""
    own_dim, peer_dim = (s.DST, s.SRC) if direction == "to" else (s.SRC, s.DST)
    own = endpoint_addresses(analyzer, endpoint, nic)
    base = s.subtract(s.universe(), essentials_region())
    if services is not None:
        base = s.intersect(base, services)
    base = tuple(b for b in (s.box_restrict(box, own_dim, own.get(box[s.FAM][0][0], ())) for box in base) if b is not None)
    side = analyzer.receiver_stages(endpoint, nic) if direction == "to" else analyzer.sender_stages(endpoint, nic)
    accepted = [(region, outcome) for region, outcome in analyzer.run(side, base) if outcome.verdict == "accept"]
    builder = _RowBuilder(analyzer, direction, endpoint, nic)
    pieces = [region for region, _ in accepted]

    # peers outside the cluster: no stage of ours on their side
    cluster = analyzer.directory.cluster
    for region, outcome in accepted:
        outside = tuple(
            b for b in (s.box_restrict(box, peer_dim, s.iv_subtract(box[peer_dim], cluster.v4 if box[s.FAM][0][0] == 4 else cluster.v6)) for box in region) if b is not None
        )
        if endpoint.kind == "outside":
            outside = ()  # outside to outside does not cross a node
        if outside:
            builder.add("outside", None, outside, outcome)

    # peers in the cluster, found through the addresses the accepted space contains
    # (pieces with the same addresses are looked up once; owners keep the order in
    # which the pieces first name them)
    projections: dict[tuple[int, Intervals], list[int]] = {}
    for index, region in enumerate(pieces):
        for family in (4, 6):
            values = s.family_projection(region, peer_dim, family)
            if values:
                projections.setdefault((family, values), []).append(index)
    signatures: dict[NicKey, set[int]] = {}
    for (family, values), indexes in projections.items():
        for _address, owner in analyzer.directory.owned_within(family, values):
            found = signatures.get(owner)
            if found is None:
                signatures[owner] = set(indexes)
            else:
                found.update(indexes)
    groups: dict[tuple[object, ...], tuple[tuple[GuardOrChain, ...], list[NicKey], tuple[int, ...]]] = {}
    # each peer's chain only for packets that have this endpoint at the other end
    own_addresses = AddressSet(own.get(4, ()), own.get(6, ()))
    mine: NicKey = (endpoint.kind, endpoint.name, nic)
    role = "receiver" if direction == "to" else "sender"
    sides = PeerSides(analyzer, mine, role, own_addresses, pieces, peer_dim, grouped=grouped, indexed=indexed)
    whole: list[NicKey] = []  # peers whose flows do not split into two sides
    for owner, indexes in signatures.items():
        kind, name, peer_nic = owner
        if kind == endpoint.kind and name == endpoint.name:
            continue  # itself
        signature = tuple(sorted(indexes))
        own_region = PeerSpace(pieces, signature, endpoint_addresses(analyzer, Endpoint(kind, name), peer_nic), peer_dim)  # type: ignore[arg-type]
        found = sides.reduced(owner, signature, own_region)
        if found is None:
            whole.append(owner)
            continue
        reduced, key = found
        group_key = (kind, signature, key)
        if group_key in groups:
            groups[group_key][1].append(owner)
        else:
            groups[group_key] = (reduced, [owner], signature)
    for (kind, _sig, _key), (stages, members, signature) in groups.items():
        member_addresses: dict[int, list[tuple[int, int]]] = {4: [], 6: []}
        for _kind, name, peer_nic in members:
            for family, values in endpoint_addresses(analyzer, Endpoint(_kind, name), peer_nic).items():  # type: ignore[arg-type]
                member_addresses[family].extend(values)
        merged = {f: s.merge(v) for f, v in member_addresses.items()}
        for index in signature:
            region, outcome = accepted[index]
            sub = tuple(b for b in (s.box_restrict(box, peer_dim, merged[box[s.FAM][0][0]]) for box in region) if b is not None)
            if not sub:
                continue
            for part, result in analyzer.run(stages, sub, outcome.decisions):
                if result.verdict == "accept":
                    builder.add(kind, members, part, result)
    for owner in whole:  # the whole flow, over this peer's addresses
        flow = (owner, mine) if direction == "to" else (mine, owner)
        addresses = endpoint_addresses(analyzer, Endpoint(owner[0], owner[1]), owner[2])  # type: ignore[arg-type]
        space = tuple(b for b in (s.box_restrict(box, peer_dim, addresses.get(box[s.FAM][0][0], ())) for box in base) if b is not None)
        for part, result in analyzer.run(analyzer.paths.flow(*flow), space):
            if result.verdict == "accept":
                builder.add(owner[0], [owner], part, result)
    rows = builder.rows()
    notes = ["ICMPv6 neighbour/router discovery and MLD are always allowed (RFC 4890) and not listed"]
    if any(d.step is not None and d.step.limited for row in rows for d in (row.rule, row.peer_rule) if d is not None):
        notes.append("rows opened by a rate-limited rule hold within the rate only")
    notes += sorted(set(builder.notes))
    notes += [f"approximated: {w}" for w in approximations(analyzer.policy)]
    zones = zone_members(analyzer)
    return Reach(endpoint, nic, direction, rows, {id(row): peer_labels(analyzer, row, zones) for row in rows}, notes)


class _RowBuilder:
    """Accepted packets -> rows. Boxes are collected per peer (a VM, a node, or an
    outside address range) and per deciding rules; a peer's services are described
    from the union of its boxes, then peers with the same services share a row."""

    def __init__(self, analyzer: Analyzer, direction: Direction, endpoint: Endpoint, nic: int | None = None):
        self.analyzer, self.direction, self.endpoint, self.nic = analyzer, direction, endpoint, nic
        self.notes: list[str] = []
        # the endpoint's own stages are named after it ("vm:a in", "guards vm:a nic 0 in", "host:n in")
        self.own_names = (f"{endpoint.kind}:{endpoint.name} ", f"guards {endpoint.kind}:{endpoint.name} ")
        self.peer_dim = s.SRC if direction == "to" else s.DST
        # (kind, when, rule, peer rule) -> peer -> boxes
        self._boxes: dict[tuple[object, ...], dict[tuple[object, ...], list[s.Box]]] = {}
        self._decisions: dict[tuple[object, ...], tuple[Decision | None, Decision | None]] = {}
        self._refusing: dict[NicKey, bool] = {}
        self._owned: dict[tuple[int, Intervals], set[NicKey]] = {}  # boxes of many groups cover the same addresses

    def path(self, peer: NicKey) -> Path:
        me, other = Endpoint(self.endpoint.kind, self.endpoint.name), Endpoint(peer[0], peer[1])  # type: ignore[arg-type]
        return Path(other, me, peer[2], self.nic) if self.direction == "to" else Path(me, other, self.nic, peer[2])

    def replied(self, peer: NicKey, region: Region, outcome: Outcome) -> Region:
        """The part of an accepted region whose replies get back through the guards
        (stateless: the bridge family has no conntrack)."""
        out: list[s.Box] = []
        for part, judged, note in self.analyzer.with_replies(self.path(peer), region, outcome):
            if note is not None:
                self.notes.append(note)
            if judged.verdict == "accept":
                out.extend(part)
        return tuple(out)

    def _refuses(self, peer: NicKey) -> bool:
        """Whether a guard on the way back can drop replies of flows with this peer."""
        found = self._refusing.get(peer)
        if found is None:
            found = self._refusing[peer] = bool(self.analyzer.reply_guards(self.path(peer)))
        return found

    def add(self, kind: str, members: list[NicKey] | None, region: Region, outcome: Outcome) -> None:
        own = [d for d in outcome.decisions if d.step is not None and d.stage.startswith(self.own_names)]
        peer = [d for d in outcome.decisions if d.step is not None and not d.stage.startswith(self.own_names)]
        rule = own[-1] if own else None
        peer_rule = peer[0] if peer else None
        if kind == "outside":
            region = self.replied(("outside", "outside", None), region, outcome)
        else:
            refusing = [m for m in members or [] if self._refuses(m)]
            if refusing:  # those peers one by one; the others share the boxes (fast path)
                for member in refusing:
                    addresses = endpoint_addresses(self.analyzer, Endpoint(member[0], member[1]), member[2])  # type: ignore[arg-type]
                    sub = tuple(b for b in (s.box_restrict(box, self.peer_dim, addresses.get(box[s.FAM][0][0], ())) for box in region) if b is not None)
                    self._add(kind, [member], self.replied(member, sub, outcome), rule, peer_rule)
                members = [m for m in members or [] if m not in refusing]
        self._add(kind, members, region, rule, peer_rule)

    def _add(self, kind: str, members: list[NicKey] | None, region: Region, rule: Decision | None, peer_rule: Decision | None) -> None:
        for box in region:
            key = (kind, box[s.TIME], rule.stage if rule else None, rule.label if rule else None, peer_rule.label if peer_rule else None)
            self._decisions.setdefault(key, (rule, peer_rule))
            peers = self._boxes.setdefault(key, {})
            family = box[s.FAM][0][0]
            if kind == "outside":
                peers.setdefault(("outside", family, box[self.peer_dim]), []).append(box)
                continue
            owned = self._owned.get((family, box[self.peer_dim]))
            if owned is None:
                owned = self._owned[family, box[self.peer_dim]] = {owner for _a, owner in self.analyzer.directory.owned_within(family, box[self.peer_dim])}
            for owner in members or []:
                if owner in owned:
                    peers.setdefault((kind, owner[1]), []).append(box)

    def rows(self) -> list[Row]:
        out: dict[tuple[object, ...], Row] = {}
        described: dict[tuple[int, ...], tuple[str, ...]] = {}  # peers of one group share boxes
        for key, peers in self._boxes.items():
            kind, time, _stage, _rule, _peer = key
            rule, peer_rule = self._decisions[key]
            for peer, boxes in peers.items():
                ids = tuple(map(id, boxes))
                services = described.get(ids)
                if services is None:
                    services = described[ids] = tuple(services_of(tuple(boxes)))
                families = {b[s.FAM][0][0] for b in boxes}
                row_key = key + (services,)
                row = out.get(row_key)
                if row is None:
                    row = out[row_key] = Row(kind, services, time_text(time), rule, peer_rule)  # type: ignore[arg-type]
                if kind == "outside":
                    family, values = peer[1], peer[2]
                    row.outside[family] = s.iv_union(row.outside.get(family, ()), values)  # type: ignore[index, arg-type]
                else:
                    (row.vms if kind == "vm" else row.hosts).setdefault(peer[1], set()).update(families)  # type: ignore[arg-type]
        return sorted(out.values(), key=lambda r: ({"vm": 0, "host": 1, "outside": 2}[r.peer_kind], r.services, r.when))


def zone_members(analyzer: Analyzer) -> dict[str, set[str]]:
    """Every zone's VMs (zones without VMs left out)."""
    zones: dict[str, set[str]] = {}
    for vm, body in analyzer.policy.doc.vms.items():
        if body.zone:
            zones.setdefault(body.zone, set()).add(vm)
    return zones


def peer_labels(analyzer: Analyzer, row: Row, zones: dict[str, set[str]] | None = None) -> list[str]:
    """Compact names for a row's peers: whole zones, groups, `any`. `zones`:
    zone_members(analyzer), when the caller labels many rows."""
    policy = analyzer.policy
    if row.peer_kind == "host":
        return [f"host:{h}" for h in sorted(row.hosts)]
    if row.peer_kind == "vm":
        members = set(row.vms)
        labels = []
        for zone, vms in sorted((zones if zones is not None else zone_members(analyzer)).items()):
            if vms and vms <= members and len(vms) > 1:
                labels.append(f"zone:{zone}")
                members -= vms
        return labels + [f"vm:{vm}" for vm in sorted(members)]
    labels = []
    cluster = analyzer.directory.cluster
    for family, values in sorted(row.outside.items()):
        everything_outside = s.iv_subtract(((0, s.ADDRESS_MAX[family]),), cluster.v4 if family == 4 else cluster.v6)
        if values == everything_outside:
            labels.append(f"any ipv{family}")
            continue
        named = None
        for group in sorted(policy.doc.groups):
            members = policy.group_set(group)
            outside_part = s.iv_subtract(members.v4 if family == 4 else members.v6, cluster.v4 if family == 4 else cluster.v6)
            if outside_part and outside_part == values:
                named = f"group:{group}"
                break
        labels += [named] if named else addresses_text(family, values)
    if "any ipv4" in labels and "any ipv6" in labels:
        labels = ["any"] + [label for label in labels if label not in ("any ipv4", "any ipv6")]
    return list(dict.fromkeys(labels))
