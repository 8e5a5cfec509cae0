"""Rate limits on accept rules: over the rate, new connections fall through to the default.

`limit: {rate: 5/minute, burst: 5, per: source}` lets 5 new connections through from
one source and refuses the 6th, while a second source still gets its own 5; a rule
limit (`per: rule`) is one budget for everybody.
"""

from __future__ import annotations

import pytest

from tests.labtools import running_lab, write_policy
from zonewall.lab.probing import Service, probe

POLICY = """
version: 1
hosts: {node1: {address: 192.168.100.11}}
networks: {lan: {bridge: vmbr1, subnets: [10.7.0.0/24, "fd00:7::/64"]}}
vms:
  alice: {host: node1, nics: [{network: lan, ips: [10.7.0.11, "fd00:7::11"]}]}
  bob: {host: node1, nics: [{network: lan, ips: [10.7.0.12, "fd00:7::12"]}]}
  server:
    host: node1
    nics: [{network: lan, ips: [10.7.0.20, "fd00:7::20"]}]
    rules:
      - {id: ssh-per-source, direction: in, action: accept, tcp: 22, limit: {rate: 5/minute, burst: 5, per: source}}
      - {id: api-per-rule, direction: in, action: accept, tcp: 8080, limit: {rate: 5/minute, burst: 5}}
"""


def attempts(state, policy, source: str, port: int, count: int, family: str) -> list[str]:
    return [probe(state, policy, source, "vm:server", Service("tcp", port), family=family, timeout=0.4).verdict for _ in range(count)]  # type: ignore[arg-type]


@pytest.mark.kernel
@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_per_source_budget(tmp_path, family):
    with running_lab(write_policy(tmp_path, POLICY)) as (state, policy):
        alice = attempts(state, policy, "vm:alice", 22, 6, family)
        bob = attempts(state, policy, "vm:bob", 22, 5, family)
    assert alice == ["delivered"] * 5 + ["blocked"], alice
    assert bob == ["delivered"] * 5, bob


@pytest.mark.kernel
def test_per_rule_budget_is_shared(tmp_path):
    with running_lab(write_policy(tmp_path, POLICY)) as (state, policy):
        alice = attempts(state, policy, "vm:alice", 8080, 3, "ipv4")
        bob = attempts(state, policy, "vm:bob", 8080, 3, "ipv4")
    assert alice + bob == ["delivered"] * 5 + ["blocked"], (alice, bob)
