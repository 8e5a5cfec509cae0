"""trace against real packets on issue 13's cases: network modes, port forwards,
masquerade, network rules on a bridged network, the exact source address.

The policy is tests/analysis/test_modes_nat.py's (a nat, a routed and an isolated
network, two port forwards, a bridged network with rules) plus two guests whose
rules name a source: one accepts only node1's address (natvm reaches it
masqueraded, routed1 with its own address does not), one only lan1's second
address. Every flow is traced and probed; each has its expected outcome written
beside it, so a test that cannot fail would show as a wrong expectation.
"""

from __future__ import annotations

import pytest

from tests.analysis.test_modes_nat import POLICY
from tests.labtools import running_lab, write_policy
from zonewall.analysis.engine import Analyzer
from zonewall.analysis.trace import FlowSpec, trace
from zonewall.lab.probe import run_probes
from zonewall.lab.probing import Service, endpoint, landing, probe_spec

pytestmark = pytest.mark.kernel

EXTRA = """\
  lan3:
    host: node2
    nics: [{network: lan, ips: [10.80.0.30]}]
    rules: [{id: lan3-in, direction: in, action: accept, tcp: 443, from: host:node1}]
  lan4:
    host: node2
    nics: [{network: lan, ips: [10.80.0.40]}]
    rules: [{id: lan4-in, direction: in, action: accept, tcp: 443, from: 10.80.0.11}]
nat:
"""
TEXT = POLICY.replace("nat:\n", EXTRA, 1)
INTERNET = "outside:203.0.113.10"

# (from, to, service, delivered?, what it shows)
FLOWS = [
    ("vm:natvm", "vm:iso1", Service("tcp", 443), False, "nothing is routed into an isolated network"),
    (INTERNET, "vm:iso1", Service("tcp", 443), False, "not from outside either"),
    (INTERNET, "vm:routed1", Service("tcp", 443), True, "a routed network is reachable"),
    (INTERNET, "vm:routed1", Service("tcp", 444), False, "its guest's default still decides"),
    (INTERNET, "vm:natvm", Service("tcp", 443), False, "a nat network only through a forward"),
    (INTERNET, "host:node1", Service("tcp", 8443), True, "the open forward"),
    (INTERNET, "host:node1", Service("tcp", 2222), False, "open: false: the VM's default drop"),
    ("vm:natvm", "vm:routed1", Service("tcp", 443), True, "nat -> routed on one node"),
    ("vm:natvm", INTERNET, Service("tcp", 443), True, "out of a nat network"),
    ("vm:natvm", "vm:lan3", Service("tcp", 443), True, "masqueraded behind node1, which lan3 accepts"),
    ("vm:routed1", "vm:lan3", Service("tcp", 443), False, "a routed guest keeps its address"),
    ("vm:natvm", "host:node1", Service("udp", 53), True, "its network's host_services"),
    ("vm:natvm", "host:node1", Service("tcp", 22), False, "nothing else of its node"),
    ("vm:lan1", "vm:lan2", Service("tcp", 22), False, "the bridged network's rule"),
    ("vm:lan1", "vm:lan2", Service("tcp", 443), True, "the bridged network's default: accept"),
    ("10.80.0.11", "vm:lan4", Service("tcp", 443), True, "the second address of lan1's NIC"),
    ("10.80.0.10", "vm:lan4", Service("tcp", 443), False, "its first address is not accepted"),
]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with running_lab(write_policy(tmp_path_factory.mktemp("modes"), TEXT)) as lab:
        yield lab


def test_trace_and_real_packets_agree_on_modes_nat_and_network_rules(lab) -> None:
    state, policy = lab
    analyzer = Analyzer(policy)
    specs, predicted = [], []
    for source, target, service, _expected, _why in FLOWS:
        flow = FlowSpec(service.proto, service.port) if service.proto != "icmp" else FlowSpec("icmp")
        predicted.append(trace(analyzer, source, target, flow).verdict)
        src = endpoint(state, policy, source, "ipv4", role="source")
        dst = endpoint(state, policy, target, "ipv4", role="target", peer=src.ref)
        specs.append(probe_spec(src, dst, service, 0.8 if not _expected else 3.0, landing(state, policy, dst, service)))
    results = run_probes(specs, max_workers=32)
    problems = []
    for (source, target, service, expected, why), verdict, result in zip(FLOWS, predicted, results):
        if (verdict == "accept") != expected or result.delivered != expected:
            problems.append(f"{source} -> {target} {service} ({why}): expected {'delivery' if expected else 'none'}, trace {verdict}, kernel {result.verdict} {result.detail}")
    assert not problems, "\n".join(problems)
    seen = {(s, t, str(v)): r for (s, t, v, _e, _w), r in zip(FLOWS, results)}
    assert seen[("vm:natvm", INTERNET, "tcp/443")].seen_src == "192.168.100.11"  # masqueraded
    assert seen[("10.80.0.11", "vm:lan4", "tcp/443")].seen_src == "10.80.0.11"
