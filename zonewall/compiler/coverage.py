"""Which keys of a policy are validated but not enforced by this version (what the
analyzer approximates is analysis/approximations.py's).

The loader accepts every key of the format (a policy is checked whole), but some
features are not compiled yet. Saying so loudly beats silently ignoring them.
"""

from __future__ import annotations

from ..policy.resolve import Policy
from .ct_objects import UNSUPPORTED_TIMEOUTS


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
