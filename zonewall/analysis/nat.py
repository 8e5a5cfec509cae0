"""dnat (port forwarding) for `zonewall trace`: follow a forwarded port to its VM.

The kernel translates before filtering (spec, evaluation order 5): a flow to a node's
forwarded port is evaluated as a flow to the target VM's address and port, and with
`open: true` (compiler/nat.py) it is accepted where the VM's default would decide.
`forward_of` finds the entry a flow hits (same host, protocol, listen port, and
listen address: given, else the host's addresses of the flow's family); the open
accept is a step of the VM's inbound chain in the plan (compiler/plan/chains.py)
that matches only on a path the entry forwarded.

Not modelled: snat/masquerade (they change no verdict), the network modes' routing
checks (compiler/modes.py), hairpin; trace says so in its notes.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from ..policy.model import Dnat
from ..policy.resolve import Policy
from .endpoints import Endpoint

PROTOCOL_NUMBERS = {"tcp": 6, "udp": 17}


@dataclass(frozen=True)
class Forward:
    index: int
    entry: Dnat
    vm: str
    nic: int
    address: str
    port: int

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint("vm", self.vm, self.nic)

    def describe(self, listen: str, listen_port: int) -> str:
        openness = "accepted unless the VM's rules decide first (open)" if self.entry.open else "left to the VM's rules (open: false)"
        return f"dnat nat[{self.index}]: {listen} port {listen_port} is forwarded to vm:{self.vm} {self.address} port {self.port}; {openness}"


def _version(address: str) -> int:
    return ipaddress.ip_address(address).version


def forward_of(policy: Policy, dst: Endpoint, dst_address: str, proto: int, dport: int) -> Forward | None:
    """The dnat entry a new flow to (dst, dst_address, proto, dport) hits, if any."""
    if dst.kind == "host":
        node = dst.name
    else:
        node = next((name for name, host in policy.doc.hosts.items() if dst_address in host.address), None)
        if node is None:
            return None
    for index, entry in enumerate(policy.doc.nat):
        if not isinstance(entry, Dnat) or entry.host != node:
            continue
        listen_proto = "tcp" if entry.listen.tcp is not None else "udp"
        listen_port = entry.listen.tcp if entry.listen.tcp is not None else entry.listen.udp
        if PROTOCOL_NUMBERS[listen_proto] != proto or listen_port != dport:
            continue
        listen = list(entry.listen.address) or list(policy.doc.hosts[node].address)
        if dst_address not in listen:
            continue
        vm = policy.doc.vms[entry.to.vm]
        candidates = [entry.to.address] if entry.to.address is not None else [ip for nic in vm.nics for ip in nic.ips]
        target = next((ip for ip in candidates if _version(ip) == _version(dst_address)), None)
        if target is None:
            continue  # the compiler makes no rule for this family either
        nic = next(i for i, n in enumerate(vm.nics) if target in n.ips)
        return Forward(index, entry, entry.to.vm, nic, target, entry.to.port or listen_port)
    return None
