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

Between the guests of two different tenants there is no path at all: their
addresses may be the same, so a packet for the other tenant's address stays on the
sender's own segment (`tenant_boundary`: a drop step the analyzer puts on such a
flow). Within one tenant the analyzer judges exactly (flows follow networks, not
addresses).
"""

from __future__ import annotations

from dataclasses import dataclass

from ...policy.dataplane_keys import tenant_zone
from ...policy.resolve import Policy
from .vocabulary import Step


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


def tenant_boundary(policy: Policy, a: str, b: str) -> Step | None:
    """The step that ends a flow between guests of networks `a` and `b` when they
    belong to different tenants (a network without one is tenant ""), else None."""
    ta, tb = (policy.doc.networks[n].tenant or "" for n in (a, b))
    if ta == tb:
        return None
    return Step(None, "drop", f"tenants: {ta or 'no tenant'} and {tb or 'no tenant'} share no path (their addresses may overlap)")
