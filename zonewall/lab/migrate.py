"""Live migration in the lab: the guest's namespace (and its sockets) lives on, its
node-side veth ends move from the source node's bridges to the target's.

`move_guest` is the lab's hypervisor: it moves each tap of the VM into the target
node's namespace, attaches it to the network's bridge there, and announces the guest
the way QEMU does after a migration (a broadcast RARP frame from the guest's MAC), so
the fabric (the outside's bridge, which joins the nodes' bridges of a network) learns
the new location at once instead of when the guest next talks. Bridged networks only
(on nat/routed/isolated networks the node is the router: moving a guest there changes
its gateway, not only its port).

`lab_migrate` runs the controller's orchestrator (zonewall/controller/migrate.py) with
the agents' steps (zonewall/agent/migration.py) executed directly in the node
namespaces: the same sequence as `zonewall migrate`, without the HTTP in between.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..agent.migration import NodeSteps
from ..compiler.modes import L3_MODES
from ..compiler.naming import tap_name
from ..compiler.node import compile_node
from ..compiler.schedule import local_timezone
from ..controller.migrate import Migration, plan
from ..dataplane.apply import apply_ruleset
from ..dataplane.backend import LibNftBackend
from ..policy.documents import Documents, load_documents, read_directory
from . import netns
from .cluster import LabError, LabState
from .raw import ethernet, send_frame


def rarp_announce(mac: str) -> bytes:
    """QEMU's self-announcement: RARP request, sender and target hardware = the guest."""
    hw = bytes.fromhex(mac.replace(":", ""))
    payload = bytes.fromhex("0001" "0800" "06" "04" "0003") + hw + b"\0" * 4 + hw + b"\0" * 4
    return ethernet("ff:ff:ff:ff:ff:ff", mac, 0x8035, payload)


def move_guest(state: LabState, documents: Documents, vm: str, target: str) -> None:
    """Move the VM's taps to `target` (documents: where the VM is before the move)."""
    policy = load_documents(documents)
    source = policy.doc.vms[vm].host
    src_ns, dst_ns = state.nodes[source], state.nodes[target]
    for n, nic in enumerate(policy.doc.vms[vm].nics):
        network = policy.doc.networks[nic.network]
        if network.mode in L3_MODES:
            raise LabError(f"{vm} NIC {n}: the lab moves guests on bridged networks only (network {nic.network} is {network.mode})")
        if network.bridge not in {link["ifname"] for link in _links(dst_ns)}:
            raise LabError(f"node {target} has no bridge {network.bridge} joined to the network's fabric (no guest of {nic.network} there at lab up)")
        tap = tap_name(vm, n, nic)
        netns.ip_batch([f"link set dev {tap} netns {dst_ns}"], ns=src_ns)
        netns.ip_batch([f"link set dev {tap} master {network.bridge} up"], ns=dst_ns)
        send_frame(state.vms[vm], f"eth{n}", rarp_announce(netns.get_mac(state.vms[vm], f"eth{n}")))
    state.save()


def _links(ns: str) -> list[dict[str, Any]]:
    import json

    return json.loads(netns.ip("-j", "link", "show", ns=ns) or "[]")


class LabChannel:
    """Runs each step directly in the node's namespace, as the node's agent would."""

    def __init__(self, state: LabState) -> None:
        self.state = state

    def _apply(self, node: str):
        def apply(documents: Documents) -> None:
            ruleset = compile_node(load_documents(documents), node, timezone=local_timezone())
            with LibNftBackend(netns=self.state.nodes[node]) as backend:
                apply_ruleset(backend, ruleset)

        return apply

    def step(self, node: str, step: str, args: dict[str, Any]) -> dict[str, Any]:
        return NodeSteps(self._apply(node), self.state.nodes[node]).run(step, args)


def lab_migrate(state: LabState, documents: Documents, vm: str, target: str, *, transfer_state: bool = True,
                commit=None) -> dict[str, Any]:
    """Migrate `vm` to `target` in the lab; returns the orchestrator's report.
    `commit` records the new documents (default: written over the lab's policy)."""
    migration_plan = plan(documents, vm, target)

    def record(edited) -> int:
        if commit is not None:
            return commit(edited)
        path = Path(state.policy)
        if path.is_dir():
            (path / edited.document).write_text(edited.documents[edited.document])
        else:
            path.write_text(edited.documents[edited.document])
        return 0

    migration = Migration(migration_plan, LabChannel(state), lambda: move_guest(state, documents, vm, target), record, transfer_state)
    return migration.run()


def lab_documents(state: LabState) -> Documents:
    return read_directory(Path(state.policy))
