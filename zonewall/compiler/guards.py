"""The bridge table: port classification (packet marks) and guard filters.

Guard filters run on every frame (a verdict-map lookup on the port name into the
port's guard profile). Classification writes the source and destination guest NIC
indexes into the packet mark for the inet table's dispatch, in the bridge forward
(and input) hook: a map lookup straight into the mark for the source, a verdict-map
jump that ORs in the destination. Skipping it for established packets (a mark set
by an extra inet prerouting chain) was measured and gained nothing: the extra hook
cost what the skipped lookups saved (docs/performance.md).

Guard filters are chains shared by every NIC that uses them. Per-NIC values ($MAC,
$IP) are not copied into rules; rules look up the pair (port, value) in sets keyed
by port name, so a filter is written once per node however many guests use it.

Learning mode (libvirt's CTRL_IP_LEARNING, per family) is compiler/learning.py's:
the anti-spoofing filters of a node with learning NICs look the port up in
`nic-learn4`/`nic-learn6` before their "not the NIC's address" drop.

libvirt's RARP filters (`qemu-announce-self-rarp`) compare the RARP payload's MAC
fields with the port's MAC in a per-port chain (`rarp-PORT`, through `nic-rarp`):
nft's `arp` fields imply ethertype ARP, so RARP's are raw payload, which a set of
(port, MAC) pairs cannot be matched against.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from typing import Any

from ..policy.model import FilterRule, Rule
from ..policy.resolve import Policy
from . import nftexpr as x
from .ir import Chain, Hook, Limit, NamedSet, Table
from .ir import Rule as NftRule
from .learning import NIC_LEARN, NodeLearning
from .matches import SetRegistry, rule_matches
from .naming import LOG_LIMIT, TABLE, log_prefix, port_object
from .nics import LocalNic
from .plan.switches import guard_filters, nic_filtered
from .stmt import Match, Statement

Json = dict[str, Any]
NIC_MAC, NIC_IP4, NIC_IP6 = "nic-mac", "nic-ip4", "nic-ip6"
NIC_NA = "nic-na"  # port -> the chain checking the target of its neighbour advertisements
# ICMPv6 neighbour advertisement: type, code, checksum (32 bits), flags (32 bits), target
NA_TARGET = {"payload": {"base": "th", "offset": 64, "len": 128}}
NIC_DHCP_SERVERS = "nic-dhcp-servers"  # (port, server): its network's dhcp_servers (allow-dhcp-server)
NIC_RARP = "nic-rarp"  # port -> the chain comparing a RARP payload's MACs with its own
RARP, RARP_REQUEST_REVERSE = 0x8035, 3
# the ARP header of a RARP frame, as raw (offset, length) bits from the network header
RARP_OP, RARP_SHA, RARP_SPA, RARP_THA, RARP_TPA = (48, 16), (64, 48), (112, 32), (144, 48), (192, 32)
IPV6_ND_FROM_UNSPECIFIED = ["nd-neighbor-solicit", "nd-router-solicit", "mld2-listener-report", "mld-listener-report"]


def _port(direction: str) -> Json:
    return x.meta("iifname" if direction == "out" else "oifname")


def _ether(field: str) -> Json:
    return x.payload("ether", field)


def _in_nic_set(direction: str, value: Json, set_name: str, negate: bool = False) -> Match:
    return x.match(x.concat(_port(direction), value), x.set_ref(set_name), "!=" if negate else "==")


def _is(proto: str) -> Match:
    return x.match(_ether("type"), proto)


def _nh(offset_len: tuple[int, int]) -> Json:
    return {"payload": {"base": "nh", "offset": offset_len[0], "len": offset_len[1]}}


def builtin_filter_rules(name: str, direction: str, learning: frozenset[int] = frozenset()) -> list[tuple[Sequence[Statement], str]]:
    """(matches, action) rules of a built-in filter for one direction; `learning`:
    the families the node has learning NICs of (their checks consult the port first)."""
    out_only = direction == "out"
    learn_ip = [([_is("ip")], "learn4")] if 4 in learning else []
    learn_arp = [([_is("arp")], "learn4")] if 4 in learning else []
    na_check = ([_is("ip6"), x.match(x.payload("icmpv6", "type"), "nd-neighbor-advert")], "check-na-target")
    # a learning port's advertisements are checked first: its learn chain leaves the filter
    ipv6_sources = [na_check, ([_is("ip6")], "learn6")] if 6 in learning else []
    rarp = [x.match(_ether("type"), RARP), x.match(_ether("daddr"), "ff:ff:ff:ff:ff:ff"), x.match(_nh(RARP_OP), RARP_REQUEST_REVERSE), x.match(_nh(RARP_SPA), 0), x.match(_nh(RARP_TPA), 0)]
    ip_dhcp_discover = [_is("ip"), x.match(x.payload("ip", "saddr"), "0.0.0.0"), x.match(x.payload("udp", "sport"), 68), x.match(x.payload("udp", "dport"), 67)]
    rules: dict[str, list[tuple[Sequence[Statement], str]]] = {
        "no-mac-spoofing": [([_in_nic_set("out", _ether("saddr"), NIC_MAC, negate=True)], "drop")] if out_only else [],
        "no-ip-spoofing": [
            (ip_dhcp_discover, "return"),
            *learn_ip,
            ([_is("ip"), _in_nic_set("out", x.payload("ip", "saddr"), NIC_IP4, negate=True)], "drop"),
        ]
        if out_only
        else [],
        "no-ipv6-spoofing": [
            ([_is("ip6"), x.match(x.payload("ip6", "saddr"), "::"), x.match(x.payload("icmpv6", "type"), {"set": IPV6_ND_FROM_UNSPECIFIED})], "return"),
            # guests are not routers: router advertisements and redirects from them are forged
            ([_is("ip6"), x.match(x.payload("icmpv6", "type"), {"set": ["nd-router-advert", "nd-redirect"]})], "drop"),
            *ipv6_sources,
            ([_is("ip6"), _in_nic_set("out", x.payload("ip6", "saddr"), NIC_IP6, negate=True)], "drop"),
            # the IPv6 twin of ARP spoofing: an advertisement for someone else's address
            *([na_check] if 6 not in learning else []),
        ]
        if out_only
        else [],
        "no-arp-mac-spoofing": [([_is("arp"), _in_nic_set("out", x.payload("arp", "saddr ether"), NIC_MAC, negate=True)], "drop")] if out_only else [],
        "no-arp-ip-spoofing": [
            ([_is("arp"), x.match(x.payload("arp", "operation"), {"set": ["request", "reply"]}, "!=")], "drop"),
            ([_is("arp"), x.match(x.payload("arp", "saddr ip"), "0.0.0.0")], "return"),  # RFC 5227 probe
            *learn_arp,
            ([_is("arp"), _in_nic_set("out", x.payload("arp", "saddr ip"), NIC_IP4, negate=True)], "drop"),
        ]
        if out_only
        else [],
        "allow-arp": [([_is("arp")], "accept")],
        "allow-dhcp": [
            ([_is("ip"), x.match(x.payload("udp", "sport"), 68 if out_only else 67), x.match(x.payload("udp", "dport"), 67 if out_only else 68)], "accept")
        ],
        "allow-dhcpv6": [
            ([_is("ip6"), x.match(x.payload("udp", "sport"), 546 if out_only else 547), x.match(x.payload("udp", "dport"), 547 if out_only else 546)], "accept")
        ],
        "no-ip-multicast": [([_is("ip"), x.match(x.payload("ip", "daddr"), x.prefix("224.0.0.0", 4))], "drop")] if out_only else [],
        "no-mac-broadcast": [([x.match(_ether("daddr"), "ff:ff:ff:ff:ff:ff")], "drop")] if out_only else [],
        "no-other-l2-traffic": [([x.match(_ether("type"), {"set": ["ip", "ip6", "arp"]}, "!=")], "drop")],
        "qemu-announce-self": [
            ([x.match(_ether("type"), 0x8035), _in_nic_set("out", _ether("saddr"), NIC_MAC), x.match(_ether("daddr"), "ff:ff:ff:ff:ff:ff")], "accept")
        ]
        if out_only
        else [],
        # libvirt's stock filters (issue 18); allow-dhcp-server trusts its network's dhcp_servers
        "allow-dhcp-server": [
            ([_is("ip"), x.match(x.payload("ip", "saddr"), "0.0.0.0"), x.match(x.payload("ip", "daddr"), "255.255.255.255"), x.match(x.payload("udp", "sport"), 68), x.match(x.payload("udp", "dport"), 67)], "accept")
        ]
        if out_only
        else [([_is("ip"), _in_nic_set("in", x.payload("ip", "saddr"), NIC_DHCP_SERVERS), x.match(x.payload("udp", "sport"), 67), x.match(x.payload("udp", "dport"), 68)], "accept")],
        "allow-incoming-ipv4": [] if out_only else [([_is("ip")], "accept")],
        "allow-ipv4": [([_is("ip")], "accept")],
        "no-other-rarp-traffic": [([x.match(_ether("type"), RARP)], "drop")],
        "qemu-announce-self-rarp": [
            (rarp + ([_in_nic_set("out", _ether("saddr"), NIC_MAC)] if out_only else []), "check-rarp"),
            ([x.has_bits(x.GUARD_ACCEPT_BIT)], "accept"),
        ],
    }
    return rules.get(name, [])


def _l2_matches(rule: FilterRule, direction: str) -> list[Statement]:
    """mac/arp/ethertype keys; $MAC and $IP become per-port set lookups."""
    out: list[Statement] = []
    if rule.ethertype is not None:
        out.append(x.match(_ether("type"), rule.ethertype))
    if rule.mac is not None:
        for field, text in (("saddr", rule.mac.src), ("daddr", rule.mac.dst)):
            if text == "$MAC":
                out.append(_in_nic_set(direction, _ether(field), NIC_MAC))
            elif text is not None:
                out.append(x.match(_ether(field), text.lower()))
    if rule.arp is not None:
        out.append(_is("arp"))
        if rule.arp.op is not None:
            out.append(x.match(x.payload("arp", "operation"), rule.arp.op))
        for field, text, variable, set_name in (
            ("saddr ip", rule.arp.ip_src, "$IP", NIC_IP4),
            ("daddr ip", rule.arp.ip_dst, "$IP", NIC_IP4),
            ("saddr ether", rule.arp.mac_src, "$MAC", NIC_MAC),
            ("daddr ether", rule.arp.mac_dst, "$MAC", NIC_MAC),
        ):
            if text == variable:
                out.append(_in_nic_set(direction, x.payload("arp", field), set_name))
            elif text is not None:
                out.append(x.match(x.payload("arp", field), text.lower()))
    return out


def custom_filter_rules(policy: Policy, registry: SetRegistry, rule: FilterRule, direction: str) -> list[list[Statement]]:
    """A user filter rule's match lists (L2 keys, then any L3/L4 alternatives)."""
    l2 = _l2_matches(rule, direction)
    has_l3 = any(getattr(rule, k) is not None for k in ("from_", "to", "tcp", "udp", "sport", "icmp", "proto"))
    if not has_l3:
        return [l2]
    as_rule = Rule(action="accept", **{k: getattr(rule, k) for k in ("from_", "to", "tcp", "udp", "sport", "icmp", "proto")})
    return [l2 + statements for _family, statements in rule_matches(policy, registry, as_rule)]


def _guard_verdict(action: str, direction: str, inline: bool) -> list[Statement]:
    if action == "check-na-target":  # per-port data, so one map lookup into the port's check
        return [x.vmap(x.meta("iifname"), NIC_NA)]
    if action in ("learn4", "learn6"):  # learning ports only: goto, so the learn chain's return leaves the filter
        return [x.vmap(x.meta("iifname"), NIC_LEARN[int(action[-1])])]
    if action == "check-rarp":  # the port's chain sets the accept bit when the payload's MACs are its own
        return [x.clear_bits(x.GUARD_ACCEPT_BIT), x.vmap(_port(direction), NIC_RARP)]
    if action == "accept":  # ends the guard stage only; the inet table still decides
        if inline:  # written into the profile chain itself: returning ends the stage
            return [x.ret()]
        return [x.or_mark(x.GUARD_ACCEPT_BIT), x.ret()]
    if action == "return":  # libvirt's return: leave this filter, go on with the next
        return [x.ret()]
    return [x.drop()]  # drop; reject is a drop here (the bridge family cannot reject)


def filter_bodies(policy: Policy, registry: SetRegistry, name: str, direction: str, learning: frozenset[int] = frozenset()) -> list[tuple[Sequence[Statement], str]]:
    """(matches, action) of a filter's rules for one direction, in evaluation order."""
    if name in policy.doc.filters:
        ordered = sorted(policy.doc.filters[name].rules, key=lambda r: r.priority)  # stable: same priority keeps file order
        return [
            (statements, r.action)
            for r in ordered
            if r.direction in (direction, "inout")
            for statements in custom_filter_rules(policy, registry, r, direction)
        ]
    return builtin_filter_rules(name, direction, learning)


def filter_rules(policy: Policy, node: str, name: str, direction: str, bodies: list[tuple[Sequence[Statement], str]], inline: bool) -> list[NftRule]:
    rules: list[NftRule] = []
    comment = f"filter {name}"
    for statements, action in bodies:
        if action in ("drop", "reject") and policy.doc.settings.log.denied:
            prefix = log_prefix(node, f"guard:{name}", direction, name, "drop", policy.doc.settings.log.level)
            rules.append(NftRule((*statements, x.limit_ref(LOG_LIMIT), x.log_group(policy.doc.settings.log.group, prefix)), comment))
        counter = () if action in ("learn4", "learn6") else (x.counter(),)  # the learn chain counts
        rules.append(NftRule((*statements, *counter, *_guard_verdict(action, direction, inline)), comment))
    return rules


def _flooded_copy(nic: LocalNic) -> tuple[NftRule, ...]:
    """A unicast frame for another MAC reaches a guest's port only as a copy the bridge
    floods to every port (it does not know the destination's port yet). It was not sent
    to this guest: judging it by this guest's `in` rules logged and counted it against
    the guest (and a promiscuous guest would see it when they accept). Dropped here,
    before any rule, log or counter; the copy towards the real destination passes."""
    if not nic.nic.mac:
        return ()  # without the NIC's MAC a copy cannot be told from the real thing
    unicast = x.match({"&": [_ether("daddr"), "01:00:00:00:00:00"]}, "00:00:00:00:00:00")
    return (NftRule((unicast, x.match(_ether("daddr"), nic.nic.mac, "!="), x.drop()), "unicast for another MAC: a flooded copy"),)


def bridge_table(policy: Policy, node: str, nics: list[LocalNic], learned: Mapping[tuple[str, int], Sequence[str]] | None = None) -> Table:
    """`learned`: (vm, nic index) -> addresses a learning NIC learned (from the agent)."""
    registry = SetRegistry()
    learning = NodeLearning(policy, node, nics, learned or {})
    families = frozenset(f for f in (4, 6) if learning.any(f))
    chains: dict[str, Chain] = {}
    profiles: dict[tuple[str, ...], str] = {}
    guards_out: list[tuple[str, Json]] = []
    guards_in: list[tuple[str, Json]] = []
    dst_map: list[tuple[str, Json]] = []
    used: set[str] = set()  # every built-in filter some local NIC uses
    for nic in nics:
        filters = tuple(guard_filters(policy, nic.vm, nic.nic_index))  # none when the NIC is not filtered (issue 18)
        used.update(filters)
        for direction, target in (("out", guards_out), ("in", guards_in)):
            profile_chain = _profile(policy, registry, node, filters, direction, chains, profiles, families) if filters else None
            if profile_chain is not None:
                target.append((nic.tap, x.jump_value(profile_chain)))
        name = port_object("nic", nic.tap, "in")
        flooded = _flooded_copy(nic) if nic_filtered(policy, nic.vm, nic.nic_index) else ()
        chains[name] = Chain(name, (*flooded, NftRule((x.or_mark(nic.dst_mark),), f"{nic.vm} nic {nic.nic_index}")))
        dst_map.append((nic.tap, x.jump_value(name)))
    src_mark = NftRule((x.set_mark(x.map_lookup(x.meta("iifname"), "nic-src")),), "source guest port -> mark")
    # Every hook a packet passes costs; chains and lookups exist only where needed.
    forward = [NftRule((x.vmap(x.meta("oifname"), "guards-in"),), "guards towards the guest, on every frame")] if guards_in else []
    forward += [
        src_mark,
        NftRule((x.vmap(x.meta("oifname"), "nic-in"),), "destination guest port -> mark"),
    ]
    unknown_from, unknown_to = unknown_guest_port_rules(policy.doc.settings.guest_ports)
    forward += unknown_from + unknown_to
    base = []
    if guards_out:
        base.append(Chain("prerouting", (NftRule((x.vmap(x.meta("iifname"), "guards-out"),), "guards from the guest, on every frame"),), Hook("filter", "prerouting", -200)))
    base += [
        Chain("forward", tuple(forward), Hook("filter", "forward", -200)),
        Chain("input", (src_mark, *unknown_from), Hook("filter", "input", -200)),
    ]
    sets = [
        NamedSet("nic-src", "ifname", tuple(sorted((n.tap, n.src_mark) for n in nics)), map="mark", comment="guest port -> source NIC mark"),
        NamedSet("nic-in", "ifname", tuple(sorted(dst_map)), map="verdict", comment="guest port -> destination NIC mark"),
        NamedSet("guards-out", "ifname", tuple(sorted(guards_out)), map="verdict", comment="guest port -> its guard filters"),
        NamedSet("guards-in", "ifname", tuple(sorted(guards_in)), map="verdict", comment="guest port -> its guard filters"),
        NamedSet(NIC_MAC, ("ifname", "ether_addr"), tuple(x.concat(n.tap, n.nic.mac) for n in nics if n.nic.mac), comment="$MAC of each port"),
        NamedSet(NIC_IP4, ("ifname", "ipv4_addr"), tuple(x.concat(n.tap, ip) for n in nics for ip in n.ipv4()), comment="$IP of each port"),
        NamedSet(NIC_IP6, ("ifname", "ipv6_addr"), tuple(x.concat(n.tap, ip) for n in nics for ip in n.ipv6()), comment="IPv6 $IP of each port (incl. link-local)"),
    ]
    if "allow-dhcp-server" in used:
        servers = [x.concat(n.tap, ip) for n in nics for ip in policy.doc.networks[n.nic.network].dhcp_servers if ":" not in ip]
        sets.append(NamedSet(NIC_DHCP_SERVERS, ("ifname", "ipv4_addr"), tuple(servers), comment="the DHCP servers each port's network trusts"))
    sets += sorted(registry.sets.values(), key=lambda s: s.name)
    na_map: list[tuple[str, Json]] = []
    if "no-ipv6-spoofing" in used:
        for nic in nics:
            name = port_object("na", nic.tap)
            chains[name] = na_target_chain(policy, node, nic, name, learning)
            na_map.append((nic.tap, x.jump_value(name)))
        sets.append(NamedSet(NIC_NA, "ifname", tuple(sorted(na_map)), map="verdict", comment="port -> neighbour advertisement check"))
    if "qemu-announce-self-rarp" in used:
        rarp_map = []
        for nic in nics:
            if nic.nic.mac:
                chains[port_object("rarp", nic.tap)] = rarp_chain(nic)
                rarp_map.append((nic.tap, x.jump_value(port_object("rarp", nic.tap))))
        sets.append(NamedSet(NIC_RARP, "ifname", tuple(sorted(rarp_map)), map="verdict", comment="port -> its RARP payload check"))
    learn_chains, learn_sets = learning.objects()
    base += [c for c in learn_chains if c.hook is not None]
    chains.update((c.name, c) for c in learn_chains if c.hook is None)
    sets += learn_sets
    rate, per = policy.doc.settings.log.rate.split("/")
    limits = (Limit(LOG_LIMIT, int(rate), per, policy.doc.settings.log.burst),)
    ordered = base + [chains[name] for name in sorted(chains)]
    return Table("bridge", TABLE, tuple(ordered), tuple(sets), limits)


def rarp_chain(nic: LocalNic) -> Chain:
    """qemu-announce-self-rarp's payload check: sender and target MAC are the port's
    own (libvirt's arpsrcmacaddr/arpdstmacaddr = $MAC); then the filter accepts."""
    mac = int((nic.nic.mac or "").replace(":", ""), 16)
    rule = (x.match(_nh(RARP_SHA), mac), x.match(_nh(RARP_THA), mac), x.or_mark(x.GUARD_ACCEPT_BIT))
    return Chain(port_object("rarp", nic.tap), (NftRule(rule, f"filter qemu-announce-self-rarp: {nic.vm} nic {nic.nic_index}"),))


def unknown_guest_port_rules(patterns: Sequence[str]) -> tuple[list[NftRule], list[NftRule]]:
    """Fail closed for guest ports no NIC of the policy is known on yet (a guest that
    started before the agent found its port, or one the policy does not have): a
    frame from or to a port named like a guest's (`settings.guest_ports`) that the
    NIC maps did not mark is dropped, instead of passing the inet stage as "not guest
    traffic". A frame of a known port fails the first match (its NIC bits are set),
    so it pays one comparison. Returns (from such a port, to such a port)."""
    if not patterns:
        return [], []
    names = {"set": sorted(patterns)}  # a trailing * matches any suffix (nft interface wildcards)
    unmarked_src = x.match(x.masked(x.meta("mark"), x.SRC_NIC_MASK), 0)
    unmarked_dst = x.match(x.masked(x.meta("mark"), x.DST_NIC_MASK), 0)
    return (
        [NftRule((unmarked_src, x.match(x.meta("iifname"), names), x.counter(), x.drop()), "from a guest port no NIC is known on: closed")],
        [NftRule((unmarked_dst, x.match(x.meta("oifname"), names), x.counter(), x.drop()), "to a guest port no NIC is known on: closed")],
    )


def na_target_chain(policy: Policy, node: str, nic: LocalNic, name: str, learning: NodeLearning) -> Chain:
    """Drop neighbour advertisements whose target is not one of the port's addresses
    (an IPv6-learning port: see compiler/learning.py).

    nft 1.0.6 has no `icmpv6 taddr` and its JSON cannot concatenate a raw payload in
    a set, so the target is compared as a 128-bit number with this port's addresses.
    """
    own = sorted({f"0x{int(ipaddress.IPv6Address(ip)):032x}" for ip in nic.ipv6()})
    refused = learning.na_target_rules(nic, list(nic.ipv6()))
    rules = []
    if refused is None:
        refused = [[x.match(NA_TARGET, {"set": own} if len(own) > 1 else own[0], "!=")] if own else []]
    elif own:
        rules.append(NftRule((x.match(NA_TARGET, {"set": own} if len(own) > 1 else own[0]), x.ret()), "filter no-ipv6-spoofing: the port's own"))
    for matches in refused:
        if policy.doc.settings.log.denied:
            prefix = log_prefix(node, "guard:no-ipv6-spoofing", "out", "no-ipv6-spoofing", "drop", policy.doc.settings.log.level)
            rules.append(NftRule(tuple(matches + [x.limit_ref(LOG_LIMIT), x.log_group(policy.doc.settings.log.group, prefix)]), "filter no-ipv6-spoofing"))
        rules.append(NftRule(tuple(matches + [x.counter(), x.drop()]), "filter no-ipv6-spoofing"))
    return Chain(name, tuple(rules))


def _profile(
    policy: Policy,
    registry: SetRegistry,
    node: str,
    filters: tuple[str, ...],
    direction: str,
    chains: dict[str, Chain],
    profiles: dict[tuple[str, ...], str],
    learning: frozenset[int] = frozenset(),
) -> str | None:
    """The chain running a NIC's filters in order (shared by NICs with the same list)."""
    key = (direction,) + filters
    if key in profiles:
        return profiles[key] or None
    steps: list[NftRule] = []
    bit = x.GUARD_ACCEPT_BIT
    for name in filters:
        bodies = filter_bodies(policy, registry, name, direction, learning)
        if not bodies:
            continue
        actions = {action for _, action in bodies}
        if "return" not in actions:
            # Guards run on every frame: a filter without libvirt-style `return`
            # is written straight into the profile (no jump, no accepted-check).
            steps += filter_rules(policy, node, name, direction, bodies, inline=True)
            continue
        chain = Chain(f"filter-{name}-{direction}", tuple(filter_rules(policy, node, name, direction, bodies, inline=False)))
        chains[chain.name] = chain
        steps.append(NftRule((x.jump(chain.name),), f"filter {name}"))
        if "accept" in actions:
            steps.append(NftRule((x.has_bits(bit), x.ret()), f"filter {name} accepted"))
    if not steps:
        profiles[key] = ""
        return None
    if steps[-1].comment and steps[-1].comment.endswith(" accepted"):
        steps.pop()  # no accepted-check needed after the last filter
    if direction == "in" and any(step.comment and step.comment.endswith(" accepted") for step in steps):
        # the sender's guards (same node, same packet) may have set the shared bit
        steps.insert(0, NftRule((x.clear_bits(bit),), "guards towards the guest start afresh"))
    name = f"guards-{direction}-{len([p for p in profiles if p[0] == direction]) + 1}"
    chains[name] = Chain(name, tuple(steps), comment=" ".join(filters)[:127])
    profiles[key] = name
    return name
