"""Probes between lab endpoints named as in the policy, and the reachability matrix.

An endpoint is `vm:NAME` (or just NAME), `vm:NAME@NETWORK` (that VM's NIC on that
network), `host:NODE`, `outside:ADDR`, or an address of a VM or node (that very
address: a source binds to it). The matrix
probes every source (VMs, a management address, an internet address) against every
target (VMs and nodes) for each service port the policy's rules mention.
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

from ..compiler.plan.nat import port_forwards
from ..compiler.plan.rules import ProtocolKeys
from ..policy.addresses import Family
from ..policy.resolve import Policy
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
    if kind == "host" or (ref in state.nodes and ref not in state.vms):
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
                found.add(Service(proto, int(port.split("-")[0])))
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


def parse_service(text: str) -> Service:
    """`tcp/80`, `udp/53` or `icmp` (echo-request)."""
    proto, _, port = text.strip().partition("/")
    if proto == "icmp" and not port:
        return Service("icmp", None)
    if proto in ("tcp", "udp") and port.isdigit() and 0 < int(port) < 65536:
        return Service(proto, int(port))  # type: ignore[arg-type]
    raise LabError(f"--service {text!r}: expected tcp/PORT, udp/PORT or icmp")


def _select(kind: str, available: list[str], wanted: list[str] | None, policy: Policy, labels: dict[str, str] | None = None) -> list[str]:
    """The entries of `available` that `wanted` names: an entry itself (vm:NAME also
    matches its NICs vm:NAME@NET), a bare VM name, zone:NAME (its VMs) or a label."""
    if not wanted:
        return available
    chosen: list[str] = []
    for ref in wanted:
        if ref.startswith("zone:"):
            zone = ref[5:]
            if zone not in policy.doc.zones:
                raise LabError(f"{kind} {ref}: no such zone (zones: {', '.join(sorted(policy.doc.zones)) or 'none'})")
            names = {f"vm:{vm}" for vm, spec in policy.doc.vms.items() if spec.zone == zone}
            found = [a for a in available if a.split("@")[0] in names]
        else:
            key = ref if ":" in ref or ref in (labels or {}) else f"vm:{ref}"
            found = [a for a in available if a == key or a.split("@")[0] == key or (labels or {}).get(a) == key]
        if not found:
            shown = ", ".join(available[:8]) + (f", ... ({len(available)} in all)" if len(available) > 8 else "")
            raise LabError(f"{kind} {ref}: not in the matrix (choose from {shown}, or zone:NAME)")
        chosen += [a for a in found if a not in chosen]
    return [a for a in available if a in chosen]


def plan_matrix(state: LabState, policy: Policy, family: Family, timeout: float = 0.6, *, sources: list[str] | None = None,
                targets: list[str] | None = None, services: list[str] | None = None) -> list[tuple[tuple[str, str, str], ProbeSpec]]:
    """Every (source label, target, service) probe of the matrix, filtered."""
    chosen_services = [parse_service(s) for s in services] if services else policy_services(policy)
    all_sources = matrix_sources(policy, family)
    by_label = dict(all_sources)
    source_labels = _select("--from", [label for label, _ in all_sources], sources, policy, labels=dict(all_sources))
    target_refs = _select("--to", matrix_targets(policy, family), targets, policy)
    plan = []
    for label in source_labels:
        source = by_label[label]
        src = endpoint(state, policy, source, family, role="source")
        for target in target_refs:
            if target.split("@")[0] == source:
                continue
            dst = endpoint(state, policy, target, family, role="target", peer=src.ref)
            for service in chosen_services:
                plan.append(((label, target, str(service)), probe_spec(src, dst, service, timeout)))
    return plan


FDS_PER_LISTENER = 4  # its socket, a wake-up socket pair and its thread's epoll
FDS_PER_PROBE = 3  # a client socket, the accepted connection (or ICMP's observer), slack


def open_file_budget(reserve: int = 64) -> int:
    """File descriptors this process may still open (soft limit minus those open)."""
    import os
    import resource

    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    try:
        used = len(os.listdir("/proc/self/fd"))
    except OSError:
        used = 64
    return max(16, soft - used - reserve)


def run_bounded(specs: list[ProbeSpec], *, concurrency: int = 64, progress: Callable[[int, int], None] | None = None) -> list[ProbeResult]:
    """run_probes in batches whose listeners and concurrent probes fit the open-file
    limit (all at once, a 40-VM policy's 344,000 probes needed ~40,000 listeners: EMFILE).
    Results in the order of `specs`; `progress(done, total)` after each probe."""
    budget = open_file_budget()
    workers = max(1, min(concurrency, budget // (2 * FDS_PER_PROBE)))
    max_listeners = max(1, (budget - workers * FDS_PER_PROBE) // FDS_PER_LISTENER)
    order = sorted(range(len(specs)), key=lambda i: (specs[i].dst_ns, specs[i].proto, specs[i].port or 0, specs[i].dst_addr))
    results: list[ProbeResult | None] = [None] * len(specs)
    done = 0
    lock = threading.Lock()

    def tick(_: ProbeResult) -> None:
        nonlocal done
        with lock:
            done += 1
            count = done
        if progress is not None:
            progress(count, len(specs))

    position = 0
    while position < len(order):
        batch: list[int] = []
        listeners: set[tuple[str, str, int | None, str]] = set()
        while position < len(order) and len(batch) < 50_000:
            spec = specs[order[position]]
            key = (spec.dst_ns, spec.proto, spec.port, spec.dst_addr)
            if spec.proto in ("tcp", "udp") and key not in listeners:
                if len(listeners) >= max_listeners:
                    break
                listeners.add(key)
            batch.append(order[position])
            position += 1
        # batches are cut by listener; inside one, spread the probes over their targets
        # (grouped, dozens of sources would hit one guest at the same moment)
        batch.sort(key=lambda i: (hash((specs[i].src_ns, specs[i].dst_ns, specs[i].port)), i))
        for index, result in zip(batch, run_probes([specs[i] for i in batch], max_workers=workers, on_done=tick)):
            results[index] = result
    return results  # type: ignore[return-value]


def reachability_matrix(state: LabState, policy: Policy, family: Family, timeout: float = 0.6, *, sources: list[str] | None = None,
                        targets: list[str] | None = None, services: list[str] | None = None, concurrency: int = 64,
                        progress: Callable[[int, int], None] | None = None) -> dict[str, dict[str, list[str]]]:
    """{source label: {target: [services delivered]}} measured with real packets."""
    plan = plan_matrix(state, policy, family, timeout, sources=sources, targets=targets, services=services)
    results = run_bounded([spec for _, spec in plan], concurrency=concurrency, progress=progress)
    # A probe that timed out is tried once more with twice the time before it counts as
    # blocked: on a busy machine a handshake can take longer than the timeout, and a
    # matrix must not show a flow as closed because the machine was busy. They mostly
    # wait, so they run with as many workers as the open-file limit allows.
    again = [i for i, result in enumerate(results) if result.verdict == "blocked"]
    if again:
        first = len(plan)
        retried = run_bounded([replace(plan[i][1], timeout=timeout * 2) for i in again], concurrency=max(concurrency, 256),
                              progress=(lambda done, total: progress(first + done, first + total)) if progress else None)
        for index, result in zip(again, retried):
            results[index] = result
    matrix: dict[str, dict[str, list[str]]] = {}
    for ((source, target, service), _), result in zip(plan, results):
        if result.verdict == "error":
            raise LabError(f"probe {source} -> {target} {service} failed: {result.detail}")
        row = matrix.setdefault(source, {}).setdefault(target, [])
        if result.delivered:
            row.append(service)
    return matrix
