"""NAT for one node: masquerade, snat and dnat (port forwarding), in `inet zonewall`.

Two base chains, present only when the node has something to translate (no hook,
no per-packet cost otherwise):

* `nat-prerouting` (type nat, priority dstnat): one rule per dnat entry listening on
  this node and family: `ip daddr LISTEN tcp dport P dnat ip to VM:PORT`. dnat happens
  before filtering, so the VM's rules see the translated address and port (spec,
  evaluation order 5). Without `listen.address` the node's own addresses listen.
* `nat-postrouting` (type nat, priority srcnat): `snat` entries, then masquerade for
  `type: masquerade` entries and for every `mode: nat` network hosted here (IPv4;
  IPv6 only when a masquerade entry asks for `family: ipv6`). With an `uplink` the
  translation applies to what leaves through it; without one, to what leaves the
  source subnet (libvirt's rule). Bridged guest-to-guest traffic (br_netfilter runs
  the inet hooks for it too) is never translated: it leaves through the bridge.

A dnat entry with `open: true` (the default) also accepts the forwarded connection at
the end of the target VM's inbound rules, where the default would otherwise decide
(the plan's `forwards`, `forward_open_rule`): the VM's global/own/zone rules still come first, so an explicit
drop there wins. `open: false` leaves the decision to those rules and the default.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from ..policy.addresses import FAMILIES, Family
from ..policy.model import Dnat, Masquerade, Snat
from ..policy.resolve import Policy
from . import nftexpr as x
from .ir import Chain, Hook, Rule
from .matches import IP_PROTO, address_elements
from .plan.vocabulary import Step

Json = dict[str, Any]
NAT_FAMILY = {"ipv4": "ip", "ipv6": "ip6"}
PREROUTING_CHAIN, POSTROUTING_CHAIN = "nat-prerouting", "nat-postrouting"


def _family(address: str) -> Family:
    return "ipv6" if ipaddress.ip_address(address).version == 6 else "ipv4"


def _one_or_set(values: list[Any]) -> Any:
    return values[0] if len(values) == 1 else {"set": values}


def nat_statement(kind: str, family: Family, address: str | None = None, port: int | None = None) -> Json:
    body: Json = {"family": NAT_FAMILY[family]}
    if address is not None:
        body["addr"] = address
    if port is not None:
        body["port"] = port
    return {kind: body}


def hosted_networks(policy: Policy, node: str) -> list[str]:
    return sorted({nic.network for vm in policy.vms_on(node) for nic in policy.doc.vms[vm].nics})


def dnat_targets(policy: Policy, entry: Dnat, node: str) -> list[tuple[Family, list[str], str]]:
    """(family, listen addresses, VM address) for each family the entry works in."""
    listen = list(entry.listen.address) or list(policy.doc.hosts[node].address)
    vm = policy.doc.vms[entry.to.vm]
    out = []
    for family in FAMILIES:
        here = [a for a in listen if _family(a) == family]
        if entry.to.address is not None:
            target = entry.to.address if _family(entry.to.address) == family else None
        else:
            target = next((ip for nic in vm.nics for ip in nic.ips if _family(ip) == family), None)
        if here and target is not None:
            out.append((family, here, target))
    return out


def _listen_port(entry: Dnat) -> tuple[str, int]:
    return ("tcp", entry.listen.tcp) if entry.listen.tcp is not None else ("udp", entry.listen.udp)  # type: ignore[return-value]


def prerouting_rules(policy: Policy, node: str) -> list[Rule]:
    rules: list[Rule] = []
    for index, entry in enumerate(policy.doc.nat):
        if not isinstance(entry, Dnat) or entry.host != node:
            continue
        proto, port = _listen_port(entry)
        for family, listen, target in dnat_targets(policy, entry, node):
            statements = [
                x.match(x.payload(IP_PROTO[family], "daddr"), _one_or_set(listen)),
                x.match(x.payload(proto, "dport"), port),
                x.counter(),
                nat_statement("dnat", family, target, entry.to.port or port),
            ]
            rules.append(Rule(tuple(statements), f"nat[{index}] dnat to vm {entry.to.vm}"))
    return rules


def _leaving(policy: Policy, node: str, family: Family, sources: list[Any]) -> list[Json]:
    """Matches for 'leaving the node towards the outside' from `sources`."""
    uplink = policy.doc.hosts[node].uplink
    field = x.payload(IP_PROTO[family], "saddr")
    if uplink:
        return [x.match(x.meta("oifname"), uplink), x.match(field, _one_or_set(sources))]
    return [x.match(field, _one_or_set(sources)), x.match(x.payload(IP_PROTO[family], "daddr"), {"set": sources}, "!=")]


def postrouting_rules(policy: Policy, node: str) -> list[Rule]:
    rules: list[Rule] = []
    hosted = hosted_networks(policy, node)
    masqueraded: list[tuple[str, Family, str]] = []  # (network, family, comment)
    for index, entry in enumerate(policy.doc.nat):
        if isinstance(entry, Snat):
            if entry.host is not None and entry.host != node:
                continue
            addresses = policy.address_set(entry.from_)
            for family in FAMILIES:
                sources = address_elements(addresses, family)
                target = next((a for a in entry.to if _family(a) == family), None)
                if sources and target is not None:
                    statements = [*_leaving(policy, node, family, sources), x.counter(), nat_statement("snat", family, target)]
                    rules.append(Rule(tuple(statements), f"nat[{index}] snat"))
        elif isinstance(entry, Masquerade) and entry.network in hosted:
            masqueraded.append((entry.network, entry.family, f"nat[{index}] masquerade"))
    for network in hosted:
        if policy.doc.networks[network].mode == "nat" and (network, "ipv4") not in {(n, f) for n, f, _ in masqueraded}:
            masqueraded.append((network, "ipv4", f"network {network}: mode nat"))
    for network, family, comment in masqueraded:
        subnets = [s for s in policy.doc.networks[network].subnets if _family(s.split("/")[0]) == family]
        if not subnets:
            continue
        sources = address_elements(policy.address_set(subnets), family)
        rules.append(Rule((*_leaving(policy, node, family, sources), x.counter(), {"masquerade": None}), comment))
    return rules


def nat_chains(policy: Policy, node: str) -> list[Chain]:
    """The node's nat base chains (none when it translates nothing)."""
    chains = []
    pre = prerouting_rules(policy, node)
    if pre:
        chains.append(Chain(PREROUTING_CHAIN, tuple(pre), Hook("nat", "prerouting", -100)))
    post = postrouting_rules(policy, node)
    if post:
        chains.append(Chain(POSTROUTING_CHAIN, tuple(post), Hook("nat", "postrouting", 100)))
    return chains


def forward_open_rule(step: Step) -> Rule:
    """An open port forward's accept (`return`) in its VM's inbound chain (the plan
    places it after the VM's rules, before its default): `ct status dnat` with the
    translated port and the entry's original (pre-translation) listen port."""
    origin = step.condition
    assert origin is not None, step
    statements = [
        x.match(x.ct("status"), "dnat", "in"),
        x.match(x.payload(origin.protocol, "dport"), origin.port),
        x.match({"ct": {"key": "proto-dst", "dir": "original"}}, origin.original_port),
        x.counter(),
        x.ret(),
    ]
    return Rule(tuple(statements), step.label)
