"""Which keys of a policy are validated but not enforced by this version,
and which are enforced but not modelled exactly by the analyzer.

The loader accepts every key of the format (a policy is checked whole), but some
features are not compiled yet. Saying so loudly beats silently ignoring them.
"""

from __future__ import annotations

from ..policy.resolve import Policy


def not_enforced(policy: Policy) -> list[str]:
    doc = policy.doc
    notes: list[str] = []
    conntrack = doc.settings.conntrack
    if conntrack.timeouts or any(zone.conntrack for zone in doc.zones.values()):
        notes.append("conntrack timeouts: validated but not enforced yet (the kernel's defaults apply: libnftables 1.0.6 drops ct timeout policies given as JSON)")
    return notes


def not_analyzed(policy: Policy) -> list[str]:
    """Enforced by the compiler but not modelled exactly by the analyzer."""
    doc = policy.doc
    notes: list[str] = []
    if doc.nat:
        notes.append("nat: snat/masquerade are not modelled (they change addresses, not verdicts); dnat is followed by trace only (reach, diff and lint see a forwarded port as the node's own)")
    if doc.settings.conntrack.helpers:
        notes.append("conntrack helpers: the data connections they admit as related are not modelled (trace sees every flow as a new connection)")
    for name, network in sorted(doc.networks.items()):
        if network.mode != "bridged":
            notes.append(f"networks.{name}.mode {network.mode}: routing through the node and the mode's restrictions are not modelled")
        if network.host_services or network.mode != "bridged":
            notes.append(f"networks.{name}.host_services: the node's restriction to these services is not modelled")
    return notes
