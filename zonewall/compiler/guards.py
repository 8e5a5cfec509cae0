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

Learning mode (libvirt's CTRL_IP_LEARNING=any, IPv4): a NIC without `ips` under
no-ip-spoofing or no-arp-ip-spoofing gets a dynamic set of size 1,
`learned4-PORT`. Where those filters would drop a source that is not the NIC's,
they first look the port up in `nic-learn4` and go to its `learn4-PORT` chain: a
source in the set passes, else the first learnable source (IPv4 packet or ARP
sender; DHCP from 0.0.0.0 and ARP probes were let through before) is added, and
once the set is full the add fails and the chain drops. Addresses the agent read
back from the kernel come in as `learned` and are the set's initial elements, so a
re-apply keeps the lock (zonewall/agent/learning.py).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from typing import Any

from ..policy.model import FilterRule, Rule
from ..policy.resolve import Policy
from . import nftexpr as x
from .ir import Chain, Hook, Limit, NamedSet, Rule as NftRule, Table
from .matches import SetRegistry, rule_matches
from .naming import LOG_LIMIT, TABLE, log_prefix, port_object
from .nics import LocalNic

Json = dict[str, Any]
NIC_MAC, NIC_IP4, NIC_IP6 = "nic-mac", "nic-ip4", "nic-ip6"
NIC_NA = "nic-na"  # port -> the chain checking the target of its neighbour advertisements
# ICMPv6 neighbour advertisement: type, code, checksum (32 bits), flags (32 bits), target
NA_TARGET = {"payload": {"base": "th", "offset": 64, "len": 128}}
NIC_LEARN4 = "nic-learn4"  # learning port -> goto its learn4-PORT chain
# nft 1.0.6 JSON neither takes nor lists "dynamic": a timeout is what marks the set as
# the packet path's (readback ignores its elements, so learning is not drift). Ten
# years: in effect the lock is permanent; the agent re-adds it on every apply.
LEARNED_TIMEOUT = 3650 * 86400
LEARNING_FILTERS = frozenset({"no-ip-spoofing", "no-arp-ip-spoofing"})
# never learned, whatever the network: this-network, loopback, link-local, multicast/reserved/broadcast
NOT_LEARNABLE4 = [x.prefix("0.0.0.0", 8), x.prefix("127.0.0.0", 8), x.prefix("169.254.0.0", 16), x.prefix("224.0.0.0", 3)]
IPV6_ND_FROM_UNSPECIFIED = ["nd-neighbor-solicit", "nd-router-solicit", "mld2-listener-report", "mld-listener-report"]


def _port(direction: str) -> Json:
    return x.meta("iifname" if direction == "out" else "oifname")


def _ether(field: str) -> Json:
    return x.payload("ether", field)


def _in_nic_set(direction: str, value: Json, set_name: str, negate: bool = False) -> Json:
    return x.match(x.concat(_port(direction), value), x.set_ref(set_name), "!=" if negate else "==")


def _is(proto: str) -> Json:
    return x.match(_ether("type"), proto)


def is_learning(policy: Policy, nic: LocalNic) -> bool:
    """A NIC in learning mode: no `ips`, and an IPv4 anti-spoofing filter."""
    return not nic.nic.ips and not LEARNING_FILTERS.isdisjoint(policy.nic_filters(nic.vm, nic.nic_index))


def builtin_filter_rules(name: str, direction: str, learning: bool = False) -> list[tuple[list[Json], str]]:
    """(matches, action) rules of a built-in filter for one direction; with
    `learning` (the node has learning NICs) the IPv4 checks consult their ports first."""
    out_only = direction == "out"
    learn_ip = [([_is("ip")], "learn4")] if learning else []
    learn_arp = [([_is("arp")], "learn4")] if learning else []
    ip_dhcp_discover = [_is("ip"), x.match(x.payload("ip", "saddr"), "0.0.0.0"), x.match(x.payload("udp", "sport"), 68), x.match(x.payload("udp", "dport"), 67)]
    rules: dict[str, list[tuple[list[Json], str]]] = {
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
            ([_is("ip6"), _in_nic_set("out", x.payload("ip6", "saddr"), NIC_IP6, negate=True)], "drop"),
            # the IPv6 twin of ARP spoofing: an advertisement for someone else's address
            ([_is("ip6"), x.match(x.payload("icmpv6", "type"), "nd-neighbor-advert")], "check-na-target"),
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
    }
    return rules.get(name, [])


def _l2_matches(rule: FilterRule, direction: str) -> list[Json]:
    """mac/arp/ethertype keys; $MAC and $IP become per-port set lookups."""
    out: list[Json] = []
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


def custom_filter_rules(policy: Policy, registry: SetRegistry, rule: FilterRule, direction: str) -> list[list[Json]]:
    """A user filter rule's match lists (L2 keys, then any L3/L4 alternatives)."""
    l2 = _l2_matches(rule, direction)
    has_l3 = any(getattr(rule, k) is not None for k in ("from_", "to", "tcp", "udp", "sport", "icmp", "proto"))
    if not has_l3:
        return [l2]
    as_rule = Rule(action="accept", **{k: getattr(rule, k) for k in ("from_", "to", "tcp", "udp", "sport", "icmp", "proto")})
    return [l2 + statements for _family, statements in rule_matches(policy, registry, as_rule)]


def _guard_verdict(action: str, direction: str, inline: bool) -> list[Json]:
    if action == "check-na-target":  # per-port data, so one map lookup into the port's check
        return [x.vmap(x.meta("iifname"), NIC_NA)]
    if action == "learn4":  # learning ports only: goto, so the learn chain's return leaves the filter
        return [x.vmap(x.meta("iifname"), NIC_LEARN4)]
    if action == "accept":  # ends the guard stage only; the inet table still decides
        if inline:  # written into the profile chain itself: returning ends the stage
            return [x.ret()]
        return [x.or_mark(x.GUARD_ACCEPT_BIT), x.ret()]
    if action == "return":  # libvirt's return: leave this filter, go on with the next
        return [x.ret()]
    return [x.drop()]  # drop; reject is a drop here (the bridge family cannot reject)


def filter_bodies(policy: Policy, registry: SetRegistry, name: str, direction: str, learning: bool = False) -> list[tuple[list[Json], str]]:
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


def filter_rules(policy: Policy, node: str, name: str, direction: str, bodies: list[tuple[list[Json], str]], inline: bool) -> list[NftRule]:
    rules: list[NftRule] = []
    comment = f"filter {name}"
    for statements, action in bodies:
        if action in ("drop", "reject") and policy.doc.settings.log.denied:
            prefix = log_prefix(node, f"guard:{name}", direction, name, "drop")
            rules.append(NftRule(tuple(statements + [x.limit_ref(LOG_LIMIT), x.log_group(policy.doc.settings.log.group, prefix)]), comment))
        counter = [] if action == "learn4" else [x.counter()]  # the learn chain counts
        rules.append(NftRule(tuple(statements + counter + _guard_verdict(action, direction, inline)), comment))
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
    learners = [n for n in nics if is_learning(policy, n)]
    chains: dict[str, Chain] = {}
    profiles: dict[tuple[str, ...], str] = {}
    guards_out: list[tuple[str, Json]] = []
    guards_in: list[tuple[str, Json]] = []
    dst_map: list[tuple[str, Json]] = []
    for nic in nics:
        filters = tuple(policy.nic_filters(nic.vm, nic.nic_index))
        for direction, target in (("out", guards_out), ("in", guards_in)):
            profile_chain = _profile(policy, registry, node, filters, direction, chains, profiles, bool(learners)) if filters else None
            if profile_chain is not None:
                target.append((nic.tap, x.jump(profile_chain)))
        name = port_object("nic", nic.tap, "in")
        chains[name] = Chain(name, (*_flooded_copy(nic), NftRule((x.or_mark(nic.dst_mark),), f"{nic.vm} nic {nic.nic_index}")))
        dst_map.append((nic.tap, x.jump(name)))
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
    sets += sorted(registry.sets.values(), key=lambda s: s.name)
    na_map: list[tuple[str, Json]] = []
    if any("no-ipv6-spoofing" in policy.nic_filters(n.vm, n.nic_index) for n in nics):
        for nic in nics:
            name = port_object("na", nic.tap)
            chains[name] = na_target_chain(policy, node, nic, name)
            na_map.append((nic.tap, x.jump(name)))
        sets.append(NamedSet(NIC_NA, "ifname", tuple(sorted(na_map)), map="verdict", comment="port -> neighbour advertisement check"))
    if learners:
        learn_map: list[tuple[str, Json]] = []
        for nic in learners:
            chains[port_object("learn4", nic.tap)] = learn_chain(policy, node, nic)
            learn_map.append((nic.tap, x.goto(port_object("learn4", nic.tap))))
            first = learned_ipv4((learned or {}).get((nic.vm, nic.nic_index), ()))
            sets.append(NamedSet(port_object("learned4", nic.tap), "ipv4_addr", first, flags=("timeout",), timeout=LEARNED_TIMEOUT, size=1, comment=f"{nic.vm} nic {nic.nic_index}: learned IPv4 address"))
        sets.append(NamedSet(NIC_LEARN4, "ifname", tuple(sorted(learn_map)), map="verdict", comment="learning port -> its learn chain"))
    rate, per = policy.doc.settings.log.rate.split("/")
    limits = (Limit(LOG_LIMIT, int(rate), per, policy.doc.settings.log.burst),)
    ordered = base + [chains[name] for name in sorted(chains)]
    return Table("bridge", TABLE, tuple(ordered), tuple(sets), limits)


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


def learned_ipv4(addresses: Sequence[str]) -> tuple[str, ...]:
    """The first valid IPv4 address of what the agent saved (the set holds one)."""
    for text in addresses:
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            continue
        if address.version == 4:
            return (str(address),)
    return ()


def _set_add(set_name: str, key: Json) -> Json:
    return {"set": {"op": "add", "elem": key, "set": x.set_ref(set_name)}}


def learn_chain(policy: Policy, node: str, nic: LocalNic) -> Chain:
    """A learning port's IPv4 source check (reached by goto from the anti-spoofing
    filter, so `return` leaves that filter as its own `return` would).

    Known address: passes. Otherwise the first learnable one (inside the network's
    IPv4 subnets when it has some; never 0/8, 127/8, 169.254/16, 224/3) is added to
    the size-1 set; when the set is full the add fails, the rule does not match, and
    the drop at the end applies.
    """
    set_name = port_object("learned4", nic.tap)
    ref = x.set_ref(set_name)
    subnets = [x.prefix(str(n.network_address), n.prefixlen) for n in map(ipaddress.ip_network, policy.doc.networks[nic.nic.network].subnets) if n.version == 4]
    rules: list[NftRule] = []
    for ethertype, source, filter_name in (("ip", x.payload("ip", "saddr"), "no-ip-spoofing"), ("arp", x.payload("arp", "saddr ip"), "no-arp-ip-spoofing")):
        rules.append(NftRule((_is(ethertype), x.match(source, ref), x.ret()), f"filter {filter_name}: the learned address"))
    for ethertype, source, filter_name in (("ip", x.payload("ip", "saddr"), "no-ip-spoofing"), ("arp", x.payload("arp", "saddr ip"), "no-arp-ip-spoofing")):
        learnable = [x.match(source, {"set": NOT_LEARNABLE4}, "!=")]
        if subnets:
            learnable.append(x.match(source, {"set": subnets}))
        rules.append(NftRule((_is(ethertype), *learnable, _set_add(set_name, source), x.counter(), x.ret()), f"filter {filter_name}: learn the first address"))
    for ethertype, filter_name in (("ip", "no-ip-spoofing"), ("arp", "no-arp-ip-spoofing")):
        if policy.doc.settings.log.denied:
            prefix = log_prefix(node, f"guard:{filter_name}", "out", filter_name, "drop")
            rules.append(NftRule((_is(ethertype), x.limit_ref(LOG_LIMIT), x.log_group(policy.doc.settings.log.group, prefix)), f"filter {filter_name}"))
    rules.append(NftRule((x.counter(), x.drop()), "not the learned address, nor learnable"))
    return Chain(port_object("learn4", nic.tap), tuple(rules))


def na_target_chain(policy: Policy, node: str, nic: LocalNic, name: str) -> Chain:
    """Drop neighbour advertisements whose target is not one of the port's addresses.

    nft 1.0.6 has no `icmpv6 taddr` and its JSON cannot concatenate a raw payload in
    a set, so the target is compared as a 128-bit number with this port's addresses.
    """
    own = sorted({f"0x{int(ipaddress.IPv6Address(ip)):032x}" for ip in nic.ipv6()})
    matches: list[Json] = [x.match(NA_TARGET, {"set": own} if len(own) > 1 else own[0], "!=")] if own else []
    rules = []
    if policy.doc.settings.log.denied:
        prefix = log_prefix(node, "guard:no-ipv6-spoofing", "out", "no-ipv6-spoofing", "drop")
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
    learning: bool = False,
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
