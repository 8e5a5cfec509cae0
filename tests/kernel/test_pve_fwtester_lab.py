"""A sample of Proxmox VE's own firewall tests, with real packets.

For each sampled directory of ../shared/pve-fwtester, its expectations that can be
sent as real packets are spread over at most WORLDS worlds (tests/conformance/
labworld.py; an address belongs to one end per world); each world is
imported with `zonewall import proxmox`, brought up as a lab, and every expectation
in it is probed: delivered exactly when Proxmox says ACCEPT. Where trace can be asked
about the same packet it must agree with the kernel too.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tests.conformance import fwtester as fw
from tests.conformance.labworld import LabWorld, lab_worlds
from tests.conformance.trace_adapter import TraceRefused, run_trace
from tests.labtools import running_lab
from zonewall.cli import app
from zonewall.lab.cluster import LabState, ensure_outside_address
from zonewall.lab.probe import ProbeSpec, run_probes

pytestmark = pytest.mark.kernel

# guest rules both ways, host rules in and out, REJECT, unfiltered ports (basic1); the
# built-ins with policy_out DROP: management from the local network, the node's
# output to it, corosync on both rings (default-rules1); the blacklist before the
# management set and IP sets with aliases (ipset1); ipfilter sets, a container's ip
# (vm-ipfilter1/2); security groups with -i (group1)
SAMPLE = ("test-basic1", "test-default-rules1", "test-ipset1", "test-vm-ipfilter1", "test-vm-ipfilter2", "test-group1")
WORLDS = 3
TIMEOUT, RETRY_TIMEOUT = 1.0, 3.0


def _guest_name(end: fw.End) -> str:
    return "nfvm" if end.vmid == 999 else f"vm{end.vmid}"


def _ns(state: LabState, end: fw.End) -> str:
    if end.kind == "host":
        return state.nodes[fw.NODE]
    if end.kind == "outside":
        return state.outside
    return state.vms[_guest_name(end)]


def _probe(state: LabState, expectation: fw.Expectation, src: str, dst: str, timeout: float = TIMEOUT) -> ProbeSpec:
    src_end, dst_end = fw.end_of(expectation.src_zone), fw.end_of(expectation.dst_zone)
    for end, address in ((src_end, src), (dst_end, dst)):
        if end.kind == "outside":
            ensure_outside_address(state, address)
    if expectation.proto == "icmp":
        return ProbeSpec("icmp", _ns(state, src_end), _ns(state, dst_end), dst, src_addr=src, timeout=timeout)
    port = int(expectation.dport) if expectation.dport is not None else fw.NO_PORT
    return ProbeSpec(expectation.proto, _ns(state, src_end), _ns(state, dst_end), dst, port=port, src_addr=src, timeout=timeout)  # type: ignore[arg-type]


@pytest.mark.parametrize("directory", SAMPLE)
def test_proxmox_expectations_hold_with_real_packets(directory: str, tmp_path: Path) -> None:
    expectations = [e for e in fw.read_expectations() if e.directory == directory]
    worlds, left_out = lab_worlds(expectations, WORLDS)
    sampled = sum(len(w.packets) for w in worlds)
    assert sampled >= len(expectations) * 2 // 3, f"only {sampled} of {directory}'s {len(expectations)} expectations are probed: {left_out}"
    assert {e.action == "ACCEPT" for w in worlds for e in w.packets} == {True, False}  # both sides of the line
    wrong, disagree = [], []
    for n, world in enumerate(worlds):
        wrong_here, disagree_here = _probe_world(directory, world, tmp_path / str(n))
        wrong += wrong_here
        disagree += disagree_here
    assert wrong == [], "\n".join(wrong)
    assert disagree == [], "\n".join(disagree)


def _probe_world(directory: str, world: LabWorld, base: Path) -> tuple[list[str], list[str]]:
    base.mkdir(parents=True)
    inventory = base / "inventory.yaml"
    inventory.write_text(yaml.safe_dump(world.inventory, sort_keys=True))
    policy = base / "policy"
    result = CliRunner().invoke(app, ["import", "proxmox", str(fw.SHARED / directory), "--inventory", str(inventory),
                                      "--corosync", str(fw.COROSYNC), "-o", str(policy)])
    assert result.exit_code == 0, result.output
    cases = list(world.packets.items())
    with running_lab(policy) as (state, _):
        results = run_probes([_probe(state, e, src, dst) for e, (src, dst) in cases], max_workers=64)
        # A delivery is proof, a timeout is not (a loaded machine loses the odd
        # handshake): what Proxmox accepts and timed out is probed again, slower.
        for _ in range(2):
            retry = [i for i, ((e, _), r) in enumerate(zip(cases, results)) if e.action == "ACCEPT" and r.verdict == "blocked"]
            again = run_probes([_probe(state, cases[i][0], *cases[i][1], timeout=RETRY_TIMEOUT) for i in retry], max_workers=8)
            for i, result in zip(retry, again):
                results[i] = result
    errors = [f"{e.id}: {r.detail}" for (e, _), r in zip(cases, results) if r.verdict == "error"]
    assert not errors, errors
    wrong = [f"{e.id} ({e.describe()}) from {src} to {dst}: the kernel {'delivered' if r.delivered else r.verdict}"
             for (e, (src, dst)), r in zip(cases, results) if r.delivered != (e.action == "ACCEPT")]
    disagree = []
    for (expectation, (src, dst)), probe in zip(cases, results):
        src_end, dst_end = fw.end_of(expectation.src_zone), fw.end_of(expectation.dst_zone)
        try:
            answer = run_trace(policy, fw.trace_ref(src_end, src), fw.trace_ref(dst_end, dst), fw.trace_flow(expectation))
        except TraceRefused:
            continue
        if (answer.src, answer.dst) == (src, dst) and answer.delivered != probe.delivered:
            disagree.append(f"{expectation.id}: trace {answer.verdict}, kernel {probe.verdict}")
    return wrong, disagree
