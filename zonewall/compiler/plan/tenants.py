"""Tenants: networks whose connections live in their own conntrack zone.

Networks of different tenants (`networks.NAME.tenant`) may use the same addresses
(policy/checks_dataplane.py allows it between bridged networks). Conntrack tells
connections apart by their addresses and ports only, so two tenants' guests with
the same addresses would share entries: a packet of one tenant would pass as
"established" on the other tenant's connection. Every packet arriving on a tenant
network's bridge is therefore put in the tenant's zone (a hash of its name,
policy/dataplane_keys.tenant_zone) before conntrack sees it; networks without a
tenant stay in zone 0. Bridged networks only: the node routes none of them, so both
directions of a connection arrive on the same bridge.

Nothing here changes a verdict of a new connection: the analyzer judges within one
tenant exactly (flows follow networks, not addresses).
"""

from __future__ import annotations

from dataclasses import dataclass

from ...policy.dataplane_keys import tenant_zone
from ...policy.resolve import Policy


@dataclass(frozen=True)
class ConntrackZone:
    network: str
    bridge: str
    tenant: str
    zone: int


def conntrack_zones(policy: Policy, networks: tuple[str, ...]) -> tuple[ConntrackZone, ...]:
    """The zones of those of `networks` that belong to a tenant."""
    out = []
    for name in networks:
        network = policy.doc.networks[name]
        if network.tenant is not None:
            out.append(ConntrackZone(name, network.bridge, network.tenant, tenant_zone(network.tenant)))
    return tuple(out)
