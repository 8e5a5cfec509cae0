"""Guard filters are stateless: a filter that drops a connection's replies fails the
connection, and `trace` says so, as the kernel does."""

from __future__ import annotations

import pytest

from tests.labtools import running_lab, write_policy
from zonewall.analysis.engine import Analyzer
from zonewall.analysis.trace import FlowSpec, trace
from zonewall.lab.probing import Service, probe

POLICY = """
version: 1
settings: {default: {in: drop, out: accept}}
hosts: {node1: {address: 192.168.100.11}}
networks: {lan: {bridge: vmbr1, subnets: [10.7.0.0/24]}}
filters:
  no-replies-in:
    rules:
      - {direction: in, action: drop, tcp: 32768-60999}
      - {direction: in, action: drop, udp: 32768-60999}
      - {direction: in, action: drop, icmp: echo-reply}
vms:
  locked:
    host: node1
    nics: [{network: lan, ips: [10.7.0.10]}]
    filters: [no-replies-in]
    rules: [{id: ssh-in, direction: in, action: accept, tcp: 22}]
  free:
    host: node1
    nics: [{network: lan, ips: [10.7.0.11]}]
  server:
    host: node1
    nics: [{network: lan, ips: [10.7.0.20]}]
    rules:
      - {id: web-in, direction: in, action: accept, tcp: 8443}
      - {id: dns-in, direction: in, action: accept, udp: 5353}
      - {id: ping-in, direction: in, action: accept, icmp: echo-request}
"""

# (source, target, service, delivered in the kernel)
FLOWS = [
    ("vm:locked", "vm:server", Service("tcp", 8443), False),  # the SYN-ACK is dropped on the way back
    ("vm:locked", "vm:server", Service("icmp", None), False),  # the echo reply is dropped
    ("vm:locked", "vm:server", Service("udp", 5353), True),  # the datagram arrives; its answer does not
    ("vm:free", "vm:server", Service("tcp", 8443), True),  # no filter on the way back
    ("vm:server", "vm:locked", Service("tcp", 22), True),  # locked answers outbound: not filtered
]


@pytest.mark.kernel
def test_trace_judges_the_replies_through_stateless_guards(tmp_path):
    with running_lab(write_policy(tmp_path, POLICY)) as (state, policy):
        observed = {(src, dst, str(svc)): probe(state, policy, src, dst, svc, timeout=0.5) for src, dst, svc, _ in FLOWS}
    analyzer = Analyzer(policy)
    for src, dst, service, delivered in FLOWS:
        result = observed[(src, dst, str(service))]
        assert result.delivered == delivered, (src, dst, str(service), result.verdict, result.detail)
        flow = FlowSpec("icmp") if service.proto == "icmp" else FlowSpec(service.proto, service.port)
        predicted = trace(analyzer, src, dst, flow)
        assert predicted.delivered == delivered, (src, dst, str(service), predicted.verdict, predicted.notes)
    udp = observed[("vm:locked", "vm:server", "udp/5353")]
    assert udp.reply is False  # the answer was dropped, as trace's note says
