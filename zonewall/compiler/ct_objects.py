"""Conntrack objects of the ruleset: `ct helper`s (`settings.conntrack.helpers`) and `ct
timeout`s. (Conntrack *entries*, copied on live migration, are dataplane/conntrack.py.)

Each helper becomes a `ct helper` object in `inet zonewall`, assigned to new guest
connections to the helper's well-known port (ftp tcp/21, tftp udp/69, ...) in the
forward chain (and in the routed-network chains, compiler/modes.py). The data
connections the helper then expects are `related` and accepted by the state rule;
no other port is opened. Nothing outside zonewall's traffic gets a helper (the node's
own connections, other tables), and no sysctl or module option is changed.

Timeouts (`settings.conntrack.timeouts`, a zone's `conntrack.timeouts`) become `ct
timeout` objects, one per protocol and distinct policy, named after a hash of the
policy (`ct-udp-1a2b3c4d5e6f`): a changed policy is a new object, and an object of a
given name never changes. They are bound to new guest connections only:

* the global policy by `meta l4proto P ct timeout set ...` in the forward chain (next
  to the helpers, also in the routed-network chains) and for guest traffic to the
  node in the input chain;
* a zone's override (merged over the global timeouts) at the top of the `in` and `out`
  chains of that zone's VMs. A later `ct timeout set` replaces an earlier one, so for
  a connection between two guests the receiver's zone wins over the sender's, and
  either over the global policy.

A state the policy does not name keeps the node's sysctl default (the kernel fills the
object's unset states from them); nothing outside zonewall's traffic is affected and
no sysctl is changed. nft 1.0.6 has tcp and udp policies only: `icmp` is reported by
`zonewall check` as not enforced (coverage.not_enforced). libnftables 1.0.6 cannot
load these objects from JSON (policy dropped, `delete` aborts), so the dataplane sends
them as nft text (dataplane/apply.py).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

from ..policy.resolve import Policy
from . import nftexpr as x
from .ir import CtHelper, CtTimeout, Rule
from .stmt import Statement

# helper -> (kernel helper name, protocol, well-known port, l3proto as the kernel has it)
HELPERS: dict[str, tuple[str, str, int, str]] = {
    "ftp": ("ftp", "tcp", 21, "inet"),
    "tftp": ("tftp", "udp", 69, "inet"),
    "sip": ("sip", "udp", 5060, "inet"),
    "irc": ("irc", "tcp", 6667, "ip"),
    "h323": ("Q.931", "tcp", 1720, "inet"),
    "pptp": ("pptp", "tcp", 1723, "ip"),
    "amanda": ("amanda", "udp", 10080, "inet"),
    "snmp": ("snmp", "udp", 161, "ip"),
    "netbios-ns": ("netbios-ns", "udp", 137, "ip"),
}


def helper_objects(policy: Policy) -> tuple[CtHelper, ...]:
    out = []
    for name in dict.fromkeys(policy.doc.settings.conntrack.helpers):
        kernel_name, protocol, _port, l3proto = HELPERS[name]
        out.append(CtHelper(f"helper-{name}", kernel_name, protocol, l3proto))
    return tuple(out)


def helper_rules(policy: Policy) -> list[Rule]:
    """For new guest connections: assign the helper of its well-known port."""
    rules = []
    for name in dict.fromkeys(policy.doc.settings.conntrack.helpers):
        _kernel_name, protocol, port, l3proto = HELPERS[name]
        statements: list[Statement] = [x.match(x.payload(protocol, "dport"), port), x.ct_helper_set(f"helper-{name}")]
        if l3proto == "ip":  # an IPv4-only helper: IPv6 connections keep none
            statements.insert(0, x.match(x.meta("nfproto"), "ipv4"))
        rules.append(Rule(tuple(statements), f"conntrack helper {name}"))
    return rules


# settings key -> (protocol, nft's state name). udp: the kernel's unreplied timeout
# (sysctl nf_conntrack_udp_timeout); udp_stream: replied (..._udp_timeout_stream).
TIMEOUT_STATES: dict[str, tuple[str, str]] = {
    "tcp_established": ("tcp", "established"),
    "tcp_syn_sent": ("tcp", "syn_sent"),
    "tcp_syn_recv": ("tcp", "syn_recv"),
    "tcp_fin_wait": ("tcp", "fin_wait"),
    "tcp_close_wait": ("tcp", "close_wait"),
    "tcp_last_ack": ("tcp", "last_ack"),
    "tcp_time_wait": ("tcp", "time_wait"),
    "tcp_close": ("tcp", "close"),
    "udp": ("udp", "unreplied"),
    "udp_stream": ("udp", "replied"),
}
# Keys nft 1.0.6 has no ct timeout policy for (a syntax error there): validated, not enforced.
UNSUPPORTED_TIMEOUTS = ("icmp",)


def timeout_objects_for(timeouts: Mapping[str, int]) -> dict[str, CtTimeout]:
    """protocol -> its timeout object, for one set of `timeouts` keys."""
    per_protocol: dict[str, dict[str, int]] = {}
    for key, seconds in timeouts.items():
        if key in TIMEOUT_STATES:
            protocol, state = TIMEOUT_STATES[key]
            per_protocol.setdefault(protocol, {})[state] = int(seconds)
    out = {}
    for protocol, states in sorted(per_protocol.items()):
        policy = tuple(sorted(states.items()))
        digest = hashlib.sha256(json.dumps([protocol, policy]).encode()).hexdigest()[:12]
        out[protocol] = CtTimeout(f"ct-{protocol}-{digest}", protocol, policy)
    return out


def global_timeouts(policy: Policy) -> dict[str, CtTimeout]:
    return timeout_objects_for(policy.doc.settings.conntrack.timeouts)


def zone_timeouts(policy: Policy, zone: str | None) -> dict[str, CtTimeout]:
    """The objects a zone's VMs get on top of the global ones (only where they differ)."""
    spec = policy.doc.zones.get(zone) if zone else None
    if spec is None or spec.conntrack is None or not spec.conntrack.timeouts:
        return {}
    merged = timeout_objects_for({**policy.doc.settings.conntrack.timeouts, **spec.conntrack.timeouts})
    base = global_timeouts(policy)
    return {protocol: obj for protocol, obj in merged.items() if base.get(protocol) != obj}


def timeout_rules(objects: Mapping[str, CtTimeout], comment: str, *, guest_only: bool = False) -> list[Rule]:
    rules = []
    for protocol, obj in sorted(objects.items()):
        statements: list[Statement] = [x.match(x.meta("l4proto"), protocol), x.ct_timeout_set(obj.name)]
        if guest_only:  # the input chain also sees the node's own traffic
            statements.insert(0, x.match(x.masked(x.meta("mark"), x.SRC_NIC_MASK), 0, "!="))
        rules.append(Rule(tuple(statements), f"{comment} {protocol}"))
    return rules
