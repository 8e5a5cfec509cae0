"""dnat (port forwarding) for `zonewall trace`: follow a forwarded port to its VM.

The kernel translates before filtering (spec, evaluation order 5): a flow to a node's
forwarded port is evaluated as a flow to the target VM's address and port, and with
`open: true` (compiler/nat.py) it is accepted where the VM's default would decide.
`forward_of` finds the entry a flow hits (same host, protocol, listen port, and
listen address: given, else the host's addresses of the flow's family); the open
accept is a step of the VM's inbound chain in the plan (compiler/plan/chains.py)
that matches only on a path the entry forwarded.

Not modelled: hairpin (a guest using its own node's forwarded port; the compiler
does not do it either).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..compiler.plan.nat import port_forwards
from ..policy.model import Dnat
from ..policy.resolve import Policy
from .endpoints import Endpoint

PROTOCOL_NUMBERS = {"tcp": 6, "udp": 17}


@dataclass(frozen=True)
class Forward:
    node: str
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


def forward_of(policy: Policy, dst: Endpoint, dst_address: str, proto: int, dport: int) -> Forward | None:
    """The port forward (plan/nat.py) a new flow to (dst, dst_address, proto, dport) hits, if any."""
    if dst.kind == "host":
        node = dst.name
    else:
        node = next((name for name, host in policy.doc.hosts.items() if dst_address in host.address), None)
        if node is None:
            return None
    for forward in port_forwards(policy, node):
        if PROTOCOL_NUMBERS[forward.protocol] != proto or forward.port != dport or dst_address not in forward.listen:
            continue
        vm = policy.doc.vms[forward.vm]
        nic = next(i for i, n in enumerate(vm.nics) if forward.address in n.ips)
        entry = policy.doc.nat[forward.entry]
        assert isinstance(entry, Dnat)
        return Forward(node, forward.entry, entry, forward.vm, nic, forward.address, forward.to_port)
    return None
