"""Address learning in the bridge table (libvirt's CTRL_IP_LEARNING), per family.

A NIC learns an address of a family when it has none of its own there and its
anti-spoofing filter for that family is on: IPv4 when it has no `ips` at all and
`no-ip-spoofing` or `no-arp-ip-spoofing` (mode `learning.ipv4`: `any`, the default,
or `dhcp`; `none` never learns); IPv6 when it has no IPv6 `ips`, `no-ipv6-spoofing`
and `learning.ipv6: any` (IPv6 is not learned by default). The learned address is
the only element of a size-1 set, `learned4-PORT` / `learned6-PORT`:

* `any`: the anti-spoofing filters look the port up in `nic-learn4`/`-6` just
  before their "not the NIC's address" drop and `goto` its `learn4-PORT` chain: the
  learned address returns (leaves the filter), else the first learnable source (an
  IPv4 packet's or an ARP sender's; IPv6: a packet's) is added, and once the set is
  full the add fails and the chain's drop applies;
* `dhcp`: the guest's own packets never fill the set. A DHCPACK on its way to the
  port does (bridge postrouting, after every filter and rule let it through, also
  for a DHCP server on the node itself): from one of the network's `dhcp_servers`,
  a BOOTREPLY for the port's MAC whose first option is the message type ACK; its
  `yiaddr`, if learnable, is added. An OFFER, an ACK for another MAC or from another
  server, and every address the guest invents teach nothing.

Learnable: inside the network's subnets of the family when it has some; never
0/8, 127/8, 169.254/16, 224/3 (IPv4), ::/128, ::1, fe80::/10, ff00::/8,
::ffff:0:0/96 (IPv6).

Addresses the agent read back come in as `learned` and are the sets' initial
elements, so a re-apply keeps the lock (agent/learning.py).

A learned IPv6 address must be advertisable (neighbour advertisements): the NA
target check of a learning port cannot compare the target with the set (nft 1.0.6
has no typed `icmpv6 taddr`, and a raw 128-bit field does not match an address
set), so it refuses targets outside the network's IPv6 subnets and link-local
range and every address the policy or the learned state gives anyone else.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..policy.resolve import Policy
from . import nftexpr as x
from .ir import Chain, Hook, NamedSet, Rule
from .naming import LOG_LIMIT, log_prefix, port_object
from .nics import LocalNic, local_nics
from .plan.switches import guard_filters
from .stmt import Match, SetUpdate, Statement

Json = dict[str, Any]
LEARNING_FILTERS = {4: frozenset({"no-ip-spoofing", "no-arp-ip-spoofing"}), 6: frozenset({"no-ipv6-spoofing"})}
NIC_LEARN = {4: "nic-learn4", 6: "nic-learn6"}  # learning port -> goto its learn chain
DHCP_SNOOP = "nic-dhcp-snoop"  # dhcp-learning port -> its ACK check
# nft 1.0.6 JSON neither takes nor lists "dynamic": a timeout is what marks the set as
# the packet path's (readback ignores its elements, so learning is not drift). Ten
# years: in effect the lock is permanent; the agent re-adds it on every apply.
LEARNED_TIMEOUT = 3650 * 86400
NOT_LEARNABLE = {
    4: tuple(ipaddress.ip_network(n) for n in ("0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/3")),
    6: tuple(ipaddress.ip_network(n) for n in ("::/128", "::1/128", "fe80::/10", "ff00::/8", "::ffff:0:0/96")),
}
IP = {4: "ip", 6: "ip6"}
# BOOTP/DHCP in the UDP payload, as bit offsets from the transport header (UDP: 8 bytes)
BOOTP_OP, BOOTP_YIADDR, BOOTP_CHADDR = (8 * 8, 8), ((8 + 16) * 8, 32), ((8 + 28) * 8, 48)
DHCP_COOKIE, DHCP_FIRST_OPTION = ((8 + 236) * 8, 32), ((8 + 240) * 8, 24)
MAGIC_COOKIE, OPTION_TYPE_ACK = 0x63825363, 0x350105  # option 53, length 1, DHCPACK (5)


def learning_mode(policy: Policy, nic: LocalNic, family: int) -> str | None:
    """How the NIC learns its address of `family`: `any`, `dhcp`, or None (it does not)."""
    spec = nic.nic
    if family == 4:
        mode = spec.learning.ipv4
        learns = not spec.ips and mode != "none"
    else:
        mode = spec.learning.ipv6
        learns = mode != "none" and not any(":" in ip for ip in spec.ips)
    if not learns or LEARNING_FILTERS[family].isdisjoint(guard_filters(policy, nic.vm, nic.nic_index)):
        return None
    return mode


def is_learning(policy: Policy, nic: LocalNic) -> bool:
    """A NIC that learns an address of some family."""
    return any(learning_mode(policy, nic, family) for family in (4, 6))


def learned_set(family: int, tap: str) -> str:
    return port_object(f"learned{family}", tap)


def learned_addresses(addresses: Sequence[str], family: int) -> tuple[str, ...]:
    """The first valid address of the family among what the agent saved (the set holds one)."""
    for text in addresses:
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            continue
        if address.version == family:
            return (str(address),)
    return ()


def _is(proto: str) -> Match:
    return x.match(x.payload("ether", "type"), proto)


def _prefixes(networks: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> list[Json]:
    return [x.prefix(str(n.network_address), n.prefixlen) for n in networks]


def _int_ranges(networks: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> list[Json]:
    """Networks as ranges of plain integers: what a raw payload field compares with."""
    return [x.value_range(int(n.network_address), int(n.broadcast_address)) for n in networks]


def _raw(offset_len: tuple[int, int]) -> Json:
    return {"payload": {"base": "th", "offset": offset_len[0], "len": offset_len[1]}}


def _set_add(set_name: str, key: Json) -> SetUpdate:
    return x.set_add(set_name, key)


@dataclass
class NodeLearning:
    """The learning NICs of one node and what the bridge table needs for them."""

    policy: Policy
    node: str
    nics: list[LocalNic]
    learned: Mapping[tuple[str, int], Sequence[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.modes = {(n.tap, family): mode for n in self.nics for family in (4, 6) if (mode := learning_mode(self.policy, n, family))}

    def learners(self, family: int) -> list[LocalNic]:
        return [n for n in self.nics if (n.tap, family) in self.modes]

    def any(self, family: int) -> bool:
        return any(f == family for _tap, f in self.modes)

    # -- the objects ---------------------------------------------------------------

    def objects(self) -> tuple[list[Chain], list[NamedSet]]:
        """Learn chains, learned sets, the port maps and the DHCP snooping (only
        what the node's learning NICs need)."""
        chains: list[Chain] = []
        sets: list[NamedSet] = []
        for family in (4, 6):
            learners = self.learners(family)
            if not learners:
                continue
            entries = []
            for nic in learners:
                chain = self.learn_chain(nic, family)
                chains.append(chain)
                entries.append((nic.tap, x.goto_value(chain.name)))
                first = learned_addresses(self.learned.get((nic.vm, nic.nic_index), ()), family)
                comment = f"{nic.vm} nic {nic.nic_index}: learned IPv{family} address"
                sets.append(NamedSet(learned_set(family, nic.tap), f"ipv{family}_addr", first, flags=("timeout",), timeout=LEARNED_TIMEOUT, size=1, comment=comment))
            sets.append(NamedSet(NIC_LEARN[family], "ifname", tuple(sorted(entries)), map="verdict", comment=f"learning port -> its IPv{family} learn chain"))
        snooping = [n for n in self.learners(4) if self.modes[(n.tap, 4)] == "dhcp"]
        if snooping:
            entries = []
            for nic in snooping:
                name = port_object("snoop4", nic.tap)
                chains.append(self.snoop_chain(nic, name))
                entries.append((nic.tap, x.jump_value(name)))
            sets.append(NamedSet(DHCP_SNOOP, "ifname", tuple(sorted(entries)), map="verdict", comment="dhcp-learning port -> its DHCPACK check"))
            ack = Rule((_is("ip"), x.match(x.payload("udp", "sport"), 67), x.match(x.payload("udp", "dport"), 68), x.vmap(x.meta("oifname"), DHCP_SNOOP)), "DHCP replies to a dhcp-learning port")
            chains.append(Chain("postrouting", (ack,), Hook("filter", "postrouting", -200)))
        return chains, sets

    def subnets(self, nic: LocalNic, family: int) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [n for n in map(ipaddress.ip_network, self.policy.doc.networks[nic.nic.network].subnets) if n.version == family]

    def learn_chain(self, nic: LocalNic, family: int) -> Chain:
        """A learning port's source check, reached by goto from the anti-spoofing
        filter (its `return` leaves that filter as the filter's own would)."""
        set_ref = x.set_ref(learned_set(family, nic.tap))
        sources = [("ip", x.payload("ip", "saddr"), "no-ip-spoofing"), ("arp", x.payload("arp", "saddr ip"), "no-arp-ip-spoofing")] if family == 4 else [("ip6", x.payload("ip6", "saddr"), "no-ipv6-spoofing")]
        rules: list[Rule] = []
        if family == 6:  # the NIC's own (link-local) addresses: the filter's usual pass
            rules.append(Rule((_is("ip6"), x.match(x.concat(x.meta("iifname"), x.payload("ip6", "saddr")), x.set_ref("nic-ip6")), x.ret()), "filter no-ipv6-spoofing: the NIC's own"))
        for ethertype, source, filter_name in sources:
            rules.append(Rule((_is(ethertype), x.match(source, set_ref), x.ret()), f"filter {filter_name}: the learned address"))
        if self.modes[(nic.tap, family)] == "any":
            subnets = self.subnets(nic, family)
            for ethertype, source, filter_name in sources:
                learnable = [x.match(source, {"set": _prefixes(NOT_LEARNABLE[family])}, "!=")]
                if subnets:
                    learnable.append(x.match(source, {"set": _prefixes(subnets)}))
                rules.append(Rule((_is(ethertype), *learnable, _set_add(learned_set(family, nic.tap), source), x.counter(), x.ret()), f"filter {filter_name}: learn the first address"))
        for ethertype, _source, filter_name in sources:
            if self.policy.doc.settings.log.denied:
                prefix = log_prefix(self.node, f"guard:{filter_name}", "out", filter_name, "drop", self.policy.doc.settings.log.level)
                rules.append(Rule((_is(ethertype), x.limit_ref(LOG_LIMIT), x.log_group(self.policy.doc.settings.log.group, prefix)), f"filter {filter_name}"))
        rules.append(Rule((x.counter(), x.drop()), "not the learned address, nor learnable"))
        return Chain(port_object(f"learn{family}", nic.tap), tuple(rules))

    def snoop_chain(self, nic: LocalNic, name: str) -> Chain:
        """Learn the address a trusted DHCP server acks for the port's MAC."""
        network = self.policy.doc.networks[nic.nic.network]
        servers = sorted(s for s in network.dhcp_servers if ":" not in s)
        assert nic.nic.mac is not None and servers, (nic.vm, "checked by policy/checks_dataplane.py")
        yiaddr = _raw(BOOTP_YIADDR)
        learnable = [x.match(yiaddr, {"set": _int_ranges(NOT_LEARNABLE[4])}, "!=")]
        subnets = self.subnets(nic, 4)
        if subnets:
            learnable.append(x.match(yiaddr, {"set": _int_ranges(subnets)}))
        rule: tuple[Statement, ...] = (
            x.match(x.payload("ip", "saddr"), {"set": servers} if len(servers) > 1 else servers[0]),
            x.match(_raw(BOOTP_OP), 2),  # BOOTREPLY
            x.match(_raw(BOOTP_CHADDR), int(nic.nic.mac.replace(":", ""), 16)),
            x.match(_raw(DHCP_COOKIE), MAGIC_COOKIE),
            x.match(_raw(DHCP_FIRST_OPTION), OPTION_TYPE_ACK),
            *learnable,
            _set_add(learned_set(4, nic.tap), yiaddr),
            x.counter(),
        )
        return Chain(name, (Rule(rule, f"{nic.vm} nic {nic.nic_index}: learn the acked address"),))

    # -- neighbour advertisements of IPv6-learning ports ------------------------------

    def na_target_rules(self, nic: LocalNic, own: list[str]) -> list[list[Statement]] | None:
        """For an IPv6-learning port: the targets its advertisements may not name
        (a match list whose hit is dropped), else None (the usual own-address check)."""
        if (nic.tap, 6) not in self.modes:
            return None
        others: set[int] = set()
        for vm_name, vm in self.policy.doc.vms.items():
            for index, spec in enumerate(vm.nics):
                if spec.network == nic.nic.network and (vm_name, index) != (nic.vm, nic.nic_index):
                    others.update(int(ipaddress.ip_address(ip)) for ip in spec.ips if ":" in ip)
                    others.update(int(ipaddress.ip_address(ip)) for ip in learned_addresses(self.learned.get((vm_name, index), ()), 6))
        network = self.policy.doc.networks[nic.nic.network]
        others.update(int(ipaddress.ip_address(g)) for g in network.gateway if ":" in g)
        others -= {int(ipaddress.ip_address(o)) for o in own}
        allowed = self.subnets(nic, 6) + [ipaddress.ip_network("fe80::/10")]
        target = {"payload": {"base": "th", "offset": 64, "len": 128}}
        ranges = [x.value_range(f"0x{int(n.network_address):032x}", f"0x{int(n.broadcast_address):032x}") for n in allowed]
        refused = [x.match(target, {"set": ranges}, "!=")]
        out = [refused]
        if others:
            out.append([x.match(target, {"set": [f"0x{v:032x}" for v in sorted(others)]})])
        return out  # type: ignore[return-value]


def node_learners(policy: Policy, node: str) -> list[LocalNic]:
    """The node's NICs that learn an address (agent/learning.py harvests their sets)."""
    if node not in policy.doc.hosts:
        return []
    return [n for n in local_nics(policy, node) if is_learning(policy, n)]
