"""Tenants' conntrack zones (plan/tenants.py) as one prerouting rule.

`ct zone set iifname map { BRIDGE : ZONE, ... }` in a base chain before conntrack
(priority raw, -300): with br_netfilter the inet hooks see a bridged packet's bridge
as `iifname`, so every packet arriving on a tenant network's bridge is looked up in
its tenant's zone. Only on nodes hosting a tenant network: no hook otherwise.
"""

from __future__ import annotations

from . import nftexpr as x
from .ir import Chain, Hook, Rule
from .plan.tenants import ConntrackZone
from .stmt import Mangle

RAW_PRIORITY = -300  # before conntrack (-200)


def conntrack_zone_chain(zones: tuple[ConntrackZone, ...]) -> Chain | None:
    if not zones:
        return None
    mapping = {"set": [[zone.bridge, zone.zone] for zone in sorted(zones, key=lambda z: z.bridge)]}
    value = {"map": {"key": x.meta("iifname"), "data": mapping}}
    rule = Rule((Mangle(x.ct("zone"), value),), "tenant networks: their own conntrack zone")
    return Chain("conntrack-zones", (rule,), Hook("filter", "prerouting", RAW_PRIORITY))
