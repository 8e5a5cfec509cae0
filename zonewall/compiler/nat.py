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

from typing import Any, Literal

from ..policy.addresses import Family
from ..policy.resolve import Policy
from . import nftexpr as x
from .ir import Chain, Hook, Rule
from .matches import IP_PROTO, interval_elements
from .plan.nat import SourceNat, port_forwards, source_nats
from .plan.vocabulary import DnatOrigin, Step
from .stmt import Nat, Statement

Json = dict[str, Any]
NAT_FAMILY = {"ipv4": "ip", "ipv6": "ip6"}
PREROUTING_CHAIN, POSTROUTING_CHAIN = "nat-prerouting", "nat-postrouting"


def _one_or_set(values: list[Any]) -> Any:
    return values[0] if len(values) == 1 else {"set": values}


def nat_statement(kind: Literal["snat", "dnat"], family: Family, address: str | None = None, port: int | None = None) -> Nat:
    return x.nat(kind, NAT_FAMILY[family], address, port)


def prerouting_rules(policy: Policy, node: str) -> list[Rule]:
    rules: list[Rule] = []
    for forward in port_forwards(policy, node):
        statements: list[Statement] = [
            x.match(x.payload(IP_PROTO[forward.family], "daddr"), _one_or_set(list(forward.listen))),
            x.match(x.payload(forward.protocol, "dport"), forward.port),
            x.counter(),
            nat_statement("dnat", forward.family, forward.address, forward.to_port),
        ]
        rules.append(Rule(tuple(statements), forward.label))
    return rules


def _leaving(translation: SourceNat) -> list[Statement]:
    """Matches for 'leaving the node towards the outside' from the sources."""
    sources = _one_or_set(interval_elements(translation.sources, translation.family))
    field = x.payload(IP_PROTO[translation.family], "saddr")
    if translation.uplink:
        return [x.match(x.meta("oifname"), translation.uplink), x.match(field, sources)]
    every = interval_elements(translation.sources, translation.family)
    return [x.match(field, sources), x.match(x.payload(IP_PROTO[translation.family], "daddr"), {"set": every}, "!=")]


def postrouting_rules(policy: Policy, node: str) -> list[Rule]:
    rules: list[Rule] = []
    for translation in source_nats(policy, node):
        action = nat_statement("snat", translation.family, translation.to) if translation.kind == "snat" else x.masquerade()
        rules.append(Rule((*_leaving(translation), x.counter(), action), translation.label))
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
    assert isinstance(origin, DnatOrigin), step
    statements: list[Statement] = [
        x.match(x.ct("status"), "dnat", "in"),
        x.match(x.payload(origin.protocol, "dport"), origin.port),
        x.match({"ct": {"key": "proto-dst", "dir": "original"}}, origin.original_port),
        x.counter(),
        x.ret(),
    ]
    return Rule(tuple(statements), step.label)
