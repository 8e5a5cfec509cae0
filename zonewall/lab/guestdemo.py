"""`zonewall demo --libvirt`: the demo's matrix with real QEMU guests under libvirtd.

The same story as `zonewall demo` (lab/demo.py): a controller, one agent per node,
the example's policy through the API, the matrix measured beside the one the example
promises, one rule changed through the API and measured again, the revision's
semantic diff. The VMs are real guests (lab/guestlab.py) whose ports the agents find
by themselves. What is probed: TCP services (every guest runs an echo server on each
TCP port the rules name) towards the VMs, from the other guests (through their
serial consoles), a management and an internet address; UDP, ICMP and the nodes as
targets stay with the namespace demo.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from ..policy.documents import load_documents
from ..policy.loader import load_policy
from ..policy.resolve import Policy
from .cluster import ensure_outside_address
from .demo import CHANGE_ID, FAMILIES, _print_diff, _print_nodes, choose_change
from .guestlab import GuestLab, in_parallel
from .guests import tcp_echo
from .probing import INTERNET, _vm_address, matrix_sources, policy_services
from .report import Matrix, differences, print_matrix


def tcp_ports(policy: Policy) -> list[int]:
    return sorted({s.port for s in policy_services(policy) if s.proto == "tcp" and s.port is not None})


def guest_matrix(lab: GuestLab, policy: Policy, family: str) -> Matrix:
    """{source: {vm target: [tcp/PORT delivered]}}, measured on the real guests."""
    assert lab.state is not None
    ports = tcp_ports(policy)
    running = set(lab.consoles)  # guests that were booted and not destroyed
    targets = [vm for vm in sorted(policy.doc.vms) if vm in running and any((":" in ip) == (family == "ipv6") for nic in policy.doc.vms[vm].nics for ip in nic.ips)]
    sources = [(label, source) for label, source in matrix_sources(policy, family) if not source.startswith("vm:") or source[3:] in running]  # type: ignore[arg-type]
    jobs: dict[str, Any] = {}
    for label, source in sources:
        pairs = [(vm, _vm_address(policy, vm, family, source[3:] if source.startswith("vm:") else None), port)  # type: ignore[arg-type]
                 for vm in targets if f"vm:{vm}" != source for port in ports]
        if source.startswith("outside:"):
            address = source[len("outside:"):]
            ensure_outside_address(lab.state, address)
            jobs[label] = lambda pairs=pairs, address=address: [(vm, port, tcp_echo(lab.state.outside, ip, port, 2.0, source=address) == "delivered")
                                                                 for vm, ip, port in pairs]
        else:
            console = lab.consoles[source[3:]]
            jobs[label] = lambda pairs=pairs, console=console: [(vm, port, _from_guest(console, ip, port)) for vm, ip, port in pairs]
    results = in_parallel(jobs)
    matrix: Matrix = {}
    for label, _ in sources:
        row = matrix.setdefault(label, {})
        for vm, port, delivered in results[label]:
            cell = row.setdefault(f"vm:{vm}", [])
            if delivered:
                cell.append(f"tcp/{port}")
    return matrix


def _from_guest(console: Any, address: str, port: int) -> bool:
    token = f"zw-{port}-{time.monotonic_ns()}"
    _, out = console.run(f"echo {token} | nc -w 2 {address} {port}", timeout=60)
    return token in out.split()


def probed_part(expected: Matrix, measured: Matrix) -> Matrix:
    """The expected matrix (the same for both families) reduced to the cells the guest matrix probes, TCP only."""
    return {source: {target: [s for s in (expected.get(source) or {}).get(target, []) if s.startswith("tcp/")] for target in row}
            for source, row in measured.items()}


def run_libvirt_demo(console: Console, example: Path, keep: bool, lab_name: str) -> int:
    policy_dir = example / "policy"
    policy = load_policy(policy_dir)
    expected_file = example / "expected-matrix.yaml"
    expected = yaml.safe_load(expected_file.read_text()) if expected_file.exists() else None
    console.rule(f"zonewall demo with real QEMU guests under libvirtd: {example}")
    lab = GuestLab(policy_dir, lab_name, tcp_ports(policy))
    failures = 0
    try:
        started = time.monotonic()
        lab.start()
        assert lab.managed is not None and lab.managed.controller is not None
        console.print(f"controller {lab.managed.controller.url}; one libvirtd and one agent per node; guests booted in "
                      + ", ".join(f"{vm} {s:.0f} s" for vm, s in sorted(lab.boot_seconds.items())) + f" ({time.monotonic() - started:.0f} s in all)")
        taps = lab.wait_taps(sorted(policy.doc.vms))
        console.print("ports the agents found (no tap: in the policy): " + ", ".join(f"{k} = {v}" for k, v in sorted(taps.items())))
        _print_nodes(console, lab.managed.api("GET", "/nodes").json())
        before: dict[str, Matrix] = {}
        for family in FAMILIES:
            before[family] = guest_matrix(lab, policy, family)
            want = probed_part(expected, before[family]) if expected else None
            print_matrix(console, before[family], f"{family}: measured on real guests (tcp; expected in brackets where different)", want)
            for line in differences(before[family], want or {}) if want is not None else []:
                failures += 1
                console.print(f"[red]MISMATCH[/red] {line}")
        console.print("[green]measured = expected[/green]" if failures == 0 else f"[red]{failures} cell(s) differ[/red]")
        failures += _change(console, lab, policy, before)
    finally:
        if keep:
            console.print(f"left running: lab {lab_name}, guests and libvirtds under {lab.directory}; stop with Ctrl-C of a later run or zonewall lab down --name {lab_name}")
        else:
            lab.stop()
            console.print("guests destroyed, libvirtds, controller and agents stopped, lab removed")
    return 0 if failures == 0 else 1


def _change(console: Console, lab: GuestLab, policy: Policy, before: dict[str, Matrix]) -> int:
    assert lab.managed is not None
    choice = choose_change(policy, before["ipv4"])
    if choice is None:
        return 0
    vm, port = choice
    rule = {"id": CHANGE_ID, "direction": "in", "action": "accept", "from": [INTERNET["ipv4"], INTERNET["ipv6"]], "tcp": port,
            "comment": "opened by the zonewall demo"}
    console.rule(f"change through the API: POST /api/v1/vms/{vm}/rules")
    response = lab.managed.api("POST", f"/vms/{vm}/rules", json={"rule": rule, "message": f"demo: open tcp/{port} on {vm}"})
    if response.status_code != 201:
        console.print(f"[red]refused[/red] ({response.status_code}): {response.text}")
        return 1
    changed = response.json()["revision"]
    lab.managed.wait_converged(changed["number"], timeout=60)
    new_policy = load_documents(lab.managed.api("GET", "/policy").json()["documents"])
    failures = 0
    for family in FAMILIES:
        after = guest_matrix(lab, new_policy, family)
        print_matrix(console, after, f"{family}: after the change (before in brackets where different)", before[family])
        changes = differences(after, before[family])
        if not changes or not all(line.startswith(f"internet -> vm:{vm}") for line in changes):
            failures += 1
            console.print(f"[red]{family}: the measured change is not exactly internet -> vm:{vm} tcp/{port}[/red]: {changes}")
    _print_diff(console, changed)
    return failures
