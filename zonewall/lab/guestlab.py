"""A lab whose VMs are real QEMU guests under libvirtd (lab/guests.py), managed by a
controller and one agent per node: the kernel test suite on real guests and
`zonewall demo --libvirt` use it.

The nodes and the outside are the lab's (lab/cluster.py, built from the policy, no VM
namespaces); each node gets a libvirtd; the agents run in the node namespaces with
their state directory where the node's libvirt hook finds it; the policy comes
through the controller; then the guests boot, in parallel, each attached to its
network's bridge with the policy's MAC. No NIC names a `tap:`: the agents find the
guests' vnetN ports themselves.
"""

from __future__ import annotations

import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..policy.loader import load_policy
from ..policy.resolve import Policy
from .cluster import LabState, lab_down, lab_up
from .guests import (
    Console,
    GuestError,
    GuestSpec,
    Hypervisor,
    build_initramfs,
    guest_kernel,
    guest_specs_from,
    wait_booted,
)
from .managed import ManagedLab


def in_parallel(jobs: dict[str, Any]) -> dict[str, Any]:
    """Run each callable in a thread; results by key; the first error is raised."""
    results: dict[str, Any] = {}
    errors: list[BaseException] = []

    def run(key: str, job: Any) -> None:
        try:
            results[key] = job()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            errors.append(exc)

    threads = [threading.Thread(target=run, args=item, daemon=True) for item in jobs.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


@dataclass
class GuestLab:
    policy_dir: Path
    name: str
    ports: list[int]  # TCP echo servers in every guest
    directory: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="zonewall-guests-")))
    state: LabState | None = None
    policy: Policy | None = None
    managed: ManagedLab | None = None
    hypervisors: dict[str, Hypervisor] = field(default_factory=dict)
    consoles: dict[str, Console] = field(default_factory=dict)
    specs: dict[str, GuestSpec] = field(default_factory=dict)
    boot_seconds: dict[str, float] = field(default_factory=dict)
    kernel: Path | None = None
    initrd: Path | None = None

    def start(self, boot: list[str] | None = None) -> GuestLab:
        """Nodes, libvirtds, controller and agents, the policy applied; then the guests
        named in `boot` (default: every VM of the policy) booted."""
        self.policy = load_policy(self.policy_dir)
        self.state = lab_up(str(self.policy_dir), self.name, apply=False, guests=False)
        self.kernel, _ = guest_kernel()
        self.initrd = build_initramfs(self.directory / "initrd.gz")
        self.hypervisors = {node: Hypervisor(node, ns, self.directory / node) for node, ns in self.state.nodes.items()}
        in_parallel({node: hv.start for node, hv in self.hypervisors.items()})
        self.managed = ManagedLab(self.state, self.directory / "controller",
                                  agent_dirs={node: hv.agent_state for node, hv in self.hypervisors.items()},
                                  agent_env={node: {"LIBVIRT_DEFAULT_URI": hv.uri} for node, hv in self.hypervisors.items()})
        self.managed.start(verify_interval=2.0)
        self.managed.wait_converged(self.managed.upload(self.policy_dir, "initial")["revision"]["number"], timeout=60)
        self.specs = guest_specs_from(self.policy, self.state.gateways, self.ports)
        self.boot(boot if boot is not None else sorted(self.specs))
        return self

    def host_of(self, vm: str) -> Hypervisor:
        assert self.policy is not None
        return self.hypervisors[self.policy.doc.vms[vm].host]

    def create(self, vm: str, hypervisor: Hypervisor | None = None) -> Console:
        assert self.kernel is not None and self.initrd is not None
        console = (hypervisor or self.host_of(vm)).create(self.specs[vm], self.kernel, self.initrd)
        self.consoles[vm] = console
        return console

    def boot(self, vms: list[str], timeout: float = 300.0) -> dict[str, float]:
        """Create the guests and wait for every one's shell, in parallel (TCG: 15 s idle, minutes under load)."""
        for vm in vms:
            self.create(vm)
        seconds = in_parallel({vm: (lambda c=self.consoles[vm]: wait_booted(c, timeout)) for vm in vms})
        self.boot_seconds.update(seconds)
        return seconds

    def destroy(self, vm: str) -> None:
        """Stop a guest the hard way (virsh destroy), as a crash or a power-off would."""
        self.consoles.pop(vm).close()
        self.host_of(vm).virsh("destroy", vm)

    def wait_taps(self, vms: list[str], timeout: float = 60.0) -> dict[str, str]:
        """Until every agent reports a discovered port for each of `vms` ("web1/0": "vnet0 (mac)")."""
        assert self.managed is not None
        deadline = time.monotonic() + timeout
        taps: dict[str, str] = {}
        while time.monotonic() < deadline:
            taps = {key: value for node in self.managed.api("GET", "/nodes").json() for key, value in (node.get("taps") or {}).items()}
            if all(f"{vm}/0" in taps and "(default)" not in taps[f"{vm}/0"] and "(explicit)" not in taps[f"{vm}/0"] for vm in vms):
                return taps
            time.sleep(0.2)
        raise GuestError(f"the agents did not find the ports of {vms} in {timeout:g}s: {taps}")

    def stop(self) -> None:
        for console in self.consoles.values():
            console.close()
        for hv in self.hypervisors.values():
            hv.stop()
        if self.managed is not None:
            self.managed.stop()
        lab_down(self.name)
