"""Conntrack helpers for zonewall's traffic (`settings.conntrack.helpers`).

Each helper becomes a `ct helper` object in `inet zonewall`, assigned to new guest
connections to the helper's well-known port (ftp tcp/21, tftp udp/69, ...) in the
forward chain (and in the routed-network chains, compiler/modes.py). The data
connections the helper then expects are `related` and accepted by the state rule;
no other port is opened. Nothing outside zonewall's traffic gets a helper (the node's
own connections, other tables), and no sysctl or module option is changed.

Timeouts (`settings.conntrack.timeouts`, a zone's `conntrack.timeouts`) are not
compiled: libnftables 1.0.6 drops a `ct timeout` object's policy when it comes as JSON
(measured; upstream fix "parser_json: Wrong check in json_parse_ct_timeout_policy()",
nftables 1.0.9), and the dataplane applies JSON only. See docs/architecture.md.
"""

from __future__ import annotations

from ..policy.resolve import Policy
from . import nftexpr as x
from .ir import CtHelper, Rule

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
        statements = [x.match(x.payload(protocol, "dport"), port), {"ct helper": f"helper-{name}"}]
        if l3proto == "ip":  # an IPv4-only helper: IPv6 connections keep none
            statements.insert(0, x.match(x.meta("nfproto"), "ipv4"))
        rules.append(Rule(tuple(statements), f"conntrack helper {name}"))
    return rules
