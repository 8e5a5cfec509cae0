"""Probes between lab endpoints named as in the policy, and the reachability matrix.

An endpoint is `vm:NAME` (or just NAME), `vm:NAME@NETWORK` (that VM's NIC on that
network), `host:NODE`, `outside:ADDR`, or an address of a VM or node (that very
address: a source binds to it). The matrix
probes every source (VMs, a management address, an internet address) against every
target (VMs and nodes) for each service port the policy's rules mention.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal

from ..policy.addresses import Family
from ..policy.resolve import Policy
from ..compiler.plan.nat import port_forwards
from ..compiler.plan.rules import ProtocolKeys
from .cluster import LabError, LabState, ensure_outside_address
from .probe import ProbeResult, ProbeSpec, run_probes

INTERNET = {"ipv4": "203.0.113.10", "ipv6": "2001:db8:ffff::10"}
Proto = Literal["tcp", "udp", "icmp"]


@dataclass(frozen=True)
class Endpoint:
    ref: str
    ns: str
    address: str | None  # source: bind address (None: the kernel chooses); target: where to connect


@dataclass(frozen=True)
class Service:
    proto: Proto
    port: int | None  # None for icmp (echo-request)

    def __str__(self) -> str:
        return f"{self.proto}/{self.port}" if self.port is not None else "icmp/echo"


def _family_of(address: str) -> Family:
    return "ipv6" if ipaddress.ip_address(address).version == 6 else "ipv4"


def _vm_address(policy: Policy, vm: str, family: Family, near: str | None, network: str | None = None) -> str:
    """The VM's address in `family`: on `network` if given, else preferring a NIC on
    a network the `near` VM shares."""
    nics = [nic for nic in policy.doc.vms[vm].nics if network is None or nic.network == network]
    if not nics:
        raise LabError(f"vm {vm} has no NIC on network {network}")
    shared = {nic.network for nic in policy.doc.vms[near].nics} if near in policy.doc.vms else set()
    ordered = sorted(nics, key=lambda nic: nic.network not in shared)
    for nic in ordered:
        for ip in nic.ips:
            if _family_of(ip) == family:
                return ip
    raise LabError(f"vm {vm} has no {family} address")


def endpoint(state: LabState, policy: Policy, ref: str, family: Family, *, role: str, peer: str | None = None) -> Endpoint:
    kind, _, name = ref.partition(":") if ":" in ref and not ref.startswith("outside:") else ("", "", "")
    if ref.startswith("outside:"):
        address = ref[len("outside:"):]
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise LabError(f"{ref}: expected outside:ADDRESS") from None
        ensure_outside_address(state, address)
        return Endpoint(ref, state.outside, address)
    owner = _owner(policy, ref) if not kind else None
    if owner is not None:  # an address of a VM or node: exactly that address
        owner_kind, owner_name = owner
        ns = state.vms[owner_name] if owner_kind == "vm" else state.nodes[owner_name]
        return Endpoint(f"{owner_kind}:{owner_name}", ns, ref)
    if kind == "host" or ref in state.nodes and ref not in state.vms:
        node = name or ref
        if node not in state.nodes:
            raise LabError(f"{ref}: no such node in the lab ({', '.join(sorted(state.nodes))})")
        addresses = [a for a in policy.doc.hosts[node].address if _family_of(a) == family]
        if not addresses:
            raise LabError(f"host {node} has no {family} address")
        return Endpoint(f"host:{node}", state.nodes[node], addresses[0])
    vm = name if kind == "vm" else ref
    vm, _, network = vm.partition("@")
    if vm not in state.vms:
        raise LabError(f"{ref}: no such VM in the lab (use vm:NAME, host:NODE or outside:ADDR)")
    if role == "source":
        return Endpoint(f"vm:{vm}", state.vms[vm], None)
    near = peer[3:] if peer and peer.startswith("vm:") else peer
    label = f"vm:{vm}" + (f"@{network}" if network else "")
    return Endpoint(label, state.vms[vm], _vm_address(policy, vm, family, near, network or None))


def _owner(policy: Policy, ref: str) -> tuple[str, str] | None:
    """(kind, name) of the VM or node that has the address `ref`, if it is one."""
    try:
        address = str(ipaddress.ip_address(ref))
    except ValueError:
        return None
    for name, vm in policy.doc.vms.items():
        if any(address in nic.ips for nic in vm.nics):
            return "vm", name
    for name, host in policy.doc.hosts.items():
        if address in host.address:
            return "host", name
    return None


def probe_spec(src: Endpoint, dst: Endpoint, service: Service, timeout: float, forward: tuple[str, str, int] | None = None) -> ProbeSpec:
    """`forward`: (namespace, address, port) where a port forward lands the probe (`landing`)."""
    assert dst.address is not None
    ns, landing = (forward[0], (forward[1], forward[2])) if forward else (dst.ns, None)
    return ProbeSpec(proto=service.proto, src_ns=src.ns, dst_ns=ns, dst_addr=dst.address, port=service.port, src_addr=src.address, timeout=timeout, landing=landing)


def landing(state: LabState, policy: Policy, dst: Endpoint, service: Service) -> tuple[str, str, int] | None:
    """Where a port forward (the policy's dnat, plan/nat.py) lands a probe to a node:
    (the VM's namespace, its address, its port); None when it is not forwarded."""
    owner = _owner(policy, dst.address) if dst.address else None
    if owner is None or owner[0] != "host" or service.proto not in ("tcp", "udp"):
        return None
    for forward in port_forwards(policy, owner[1]):
        if forward.protocol == service.proto and forward.port == service.port and dst.address in forward.listen:
            return state.vms[forward.vm], forward.address, forward.to_port
    return None


def probe(state: LabState, policy: Policy, source: str, target: str, service: Service, family: Family | None = None, timeout: float = 1.0) -> ProbeResult:
    if family is None:
        family = _family_of(source[8:]) if source.startswith("outside:") else _family_of(target[8:]) if target.startswith("outside:") else "ipv4"
    src = endpoint(state, policy, source, family, role="source")
    dst = endpoint(state, policy, target, family, role="target", peer=src.ref)
    return run_probes([probe_spec(src, dst, service, timeout, landing(state, policy, dst, service))])[0]


def policy_services(policy: Policy) -> list[Service]:
    """One probe per port/ICMP the policy's rules mention (the first port of a range)."""
    found: set[Service] = set()
    for ref in policy.rules:
        keys = ProtocolKeys.of(policy, ref.rule)
        for proto in ("tcp", "udp"):
            for port in getattr(keys, proto):
                found.add(Service(proto, int(port.split("-")[0])))  # type: ignore[arg-type]
        if "echo-request" in keys.icmp or "any" in keys.icmp:
            found.add(Service("icmp", None))
    return sorted(found, key=lambda s: (s.proto, s.port or 0))


def matrix_sources(policy: Policy, family: Family) -> list[tuple[str, str]]:
    """(label, endpoint) pairs; outside sources get family-independent labels."""
    sources = [(f"vm:{vm}", f"vm:{vm}") for vm in sorted(policy.doc.vms)]
    management = policy.address_set(policy.doc.settings.management) if policy.doc.settings.management else None
    if management is not None and management.family(family):
        hosts = {a for h in policy.doc.hosts.values() for a in h.address}
        low, high = management.family(family)[0]
        cls = ipaddress.IPv4Address if family == "ipv4" else ipaddress.IPv6Address
        candidate = next(str(cls(v)) for v in range(low + 1, min(high, low + 1000) + 1) if str(cls(v)) not in hosts)
        sources.append(("mgmt", f"outside:{candidate}"))
    sources.append(("internet", f"outside:{INTERNET[family]}"))
    return sources


def matrix_targets(policy: Policy, family: Family) -> list[str]:
    """Every VM (each NIC separately when it has several) and every node."""
    targets = []
    for vm in sorted(policy.doc.vms):
        nics = [nic for nic in policy.doc.vms[vm].nics if any(_family_of(ip) == family for ip in nic.ips)]
        targets += [f"vm:{vm}@{nic.network}" for nic in nics] if len(nics) > 1 else [f"vm:{vm}"] if nics else []
    targets += [f"host:{node}" for node in sorted(policy.doc.hosts) if any(_family_of(a) == family for a in policy.doc.hosts[node].address)]
    return targets


def reachability_matrix(state: LabState, policy: Policy, family: Family, timeout: float = 0.6) -> dict[str, dict[str, list[str]]]:
    """{source label: {target: [services delivered]}} measured with real packets."""
    services = policy_services(policy)
    specs, keys = [], []
    for label, source in matrix_sources(policy, family):
        src = endpoint(state, policy, source, family, role="source")
        for target in matrix_targets(policy, family):
            if target.split("@")[0] == source:
                continue
            dst = endpoint(state, policy, target, family, role="target", peer=src.ref)
            for service in services:
                specs.append(probe_spec(src, dst, service, timeout))
                keys.append((label, target, str(service)))
    results = run_probes(specs, max_workers=64)
    matrix: dict[str, dict[str, list[str]]] = {}
    for (source, target, service), result in zip(keys, results):
        if result.verdict == "error":
            raise LabError(f"probe {source} -> {target} {service} failed: {result.detail}")
        row = matrix.setdefault(source, {}).setdefault(target, [])
        if result.delivered:
            row.append(service)
    return matrix
