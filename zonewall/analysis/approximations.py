"""What the analyzer judges approximately, for a given policy, and in which direction.

Everything the dataplane enforces is modelled from the evaluation plan; what stays
approximate is named here, once, and every answer (trace, reach, diff) carries the
notes that apply to its policy. docs/analysis.md lists every policy key.
"""

from __future__ import annotations

import ipaddress

from ..compiler.plan.modes import L3_MODES
from ..policy.model import Masquerade
from ..policy.resolve import Policy


def approximations(policy: Policy) -> list[str]:
    doc = policy.doc
    notes: list[str] = []
    if doc.settings.conntrack.timeouts or any(zone.conntrack and zone.conntrack.timeouts for zone in doc.zones.values()):
        notes.append("conntrack timeouts: how long an idle connection stays established is not modelled; every flow is judged as a new connection (exact for that)")
    if doc.settings.conntrack.helpers:
        helpers = ", ".join(dict.fromkeys(doc.settings.conntrack.helpers))
        notes.append(f"conntrack helpers ({helpers}): the data connections they announce are accepted as related without any rule; the analyzer judges them as new connections, so it may refuse (and reach omits) what the kernel lets in as related")
    for name, network in sorted(doc.networks.items()):
        if network.mode != "nat" or not any(ipaddress.ip_network(s).version == 6 for s in network.subnets):
            continue
        if not any(isinstance(e, Masquerade) and e.network == name and e.family == "ipv6" for e in doc.nat):
            notes.append(f"networks.{name}: IPv6 from this nat network is not masqueraded; whether replies find their way back depends on routes outside the policy (the analyzer assumes they do)")
    if any(n.mode in L3_MODES for n in doc.networks.values()) and doc.nat:
        notes.append("nat: a guest using a port forward to a guest of its own network (hairpin) is not translated by the node; the analyzer treats it as traffic to the node")
    return notes
