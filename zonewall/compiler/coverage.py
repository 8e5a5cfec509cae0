"""Which keys of a policy are validated but not enforced by this version,
and which are enforced but not modelled exactly by the analyzer.

The loader accepts every key of the format (a policy is checked whole), but some
features are not compiled yet. Saying so loudly beats silently ignoring them.
"""

from __future__ import annotations

from ..policy.resolve import Policy
from .conntrack import UNSUPPORTED_TIMEOUTS


def not_enforced(policy: Policy) -> list[str]:
    doc = policy.doc
    notes: list[str] = []
    places = [("settings.conntrack.timeouts", doc.settings.conntrack.timeouts)]
    places += [(f"zones.{name}.conntrack.timeouts", zone.conntrack.timeouts) for name, zone in sorted(doc.zones.items()) if zone.conntrack]
    for where, timeouts in places:
        for key in UNSUPPORTED_TIMEOUTS:
            if key in timeouts:
                notes.append(f"{where}.{key}: validated but not enforced (nft 1.0.6 has ct timeout policies for tcp and udp only); the node's default ICMP timeout applies")
    return notes


def not_analyzed(policy: Policy) -> list[str]:
    """Enforced by the compiler but not modelled exactly by the analyzer."""
    doc = policy.doc
    notes: list[str] = []
    if doc.nat:
        notes.append("nat: snat/masquerade are not modelled (they change addresses, not verdicts); dnat is followed by trace only (reach, diff and lint see a forwarded port as the node's own)")
    if doc.settings.conntrack.timeouts or any(zone.conntrack and zone.conntrack.timeouts for zone in doc.zones.values()):
        notes.append("conntrack timeouts: not modelled (they decide how long an idle connection stays established; trace sees every flow as a new connection)")
    if doc.settings.conntrack.helpers:
        notes.append("conntrack helpers: the data connections they admit as related are not modelled (trace sees every flow as a new connection)")
    for name, network in sorted(doc.networks.items()):
        if network.mode != "bridged":
            notes.append(f"networks.{name}.mode {network.mode}: routing through the node and the mode's restrictions are not modelled")
        if network.host_services or network.mode != "bridged":
            notes.append(f"networks.{name}.host_services: the node's restriction to these services is not modelled")
    return notes
