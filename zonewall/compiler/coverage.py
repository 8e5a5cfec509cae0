"""Which keys of a policy are validated but not enforced by this version.

The loader accepts every key of the format (a policy is checked whole), but some
features are not compiled yet. Saying so loudly beats silently ignoring them.
"""

from __future__ import annotations

from ..policy.resolve import Policy


def not_enforced(policy: Policy) -> list[str]:
    doc = policy.doc
    notes: list[str] = []
    if doc.nat:
        notes.append(f"nat: {len(doc.nat)} entr{'y' if len(doc.nat) == 1 else 'ies'} validated but not enforced yet (no NAT or port forwarding is compiled)")
    conntrack = doc.settings.conntrack
    if conntrack.timeouts or any(zone.conntrack for zone in doc.zones.values()):
        notes.append("conntrack timeouts: validated but not enforced yet (the kernel's defaults apply)")
    if conntrack.helpers:
        notes.append("conntrack helpers: validated but not enforced yet (related data connections of ftp/tftp/... are not opened)")
    for name, network in sorted(doc.networks.items()):
        if network.mode != "bridged":
            notes.append(f"networks.{name}.mode {network.mode}: enforced as bridged for now (no node L3, no masquerade)")
        if network.host_services:
            notes.append(f"networks.{name}.host_services: validated but not enforced yet")
    return notes
