"""Scoped rules (`nic:`, `interface:`, issue 18) in diff and lint.

* `zonewall diff` sees a rule move between a VM's NICs or a node's interfaces: the
  flows it opens on one and closes on the other are reported, and an edit of a scope
  that changes nothing is not (diff used to call such a move "identical").
* `zonewall lint` judges a rule only against what applies on the same NIC or
  interface: a rule scoped to one NIC does not shadow an unscoped one, while an
  unscoped rule still shadows a later scoped one."""

from __future__ import annotations

from zonewall.analysis.diff import DiffResult, diff_policies
from zonewall.analysis.engine import Analyzer
from zonewall.analysis.lint import lint
from zonewall.policy.loader import load_policy_text

POLICY = """\
version: 1
zones: {}
networks:
  front: {bridge: vmbr0, subnets: [10.0.1.0/24]}
  back: {bridge: vmbr1, subnets: [10.0.2.0/24]}
settings:
  host_default: {in: drop, out: accept}
  management: []
hosts:
  node1: {address: [192.0.2.1], uplink: eth0}
host_rules:
  - {id: ssh-in, direction: in, action: accept, tcp: 22, interface: [eth0]}
vms:
  web1:
    host: node1
    default: {in: drop, out: accept}
    rules:
      - {id: admin, direction: in, action: accept, tcp: 8443, nic: [0]}
      - {id: web, direction: in, action: accept, tcp: 443}
    nics:
      - {network: front, name: net0, ips: [10.0.1.10]}
      - {network: back, name: net1, ips: [10.0.2.10]}
  app1:
    host: node1
    nics: [{network: back, ips: [10.0.2.20]}]
"""


def diff_texts(old: str, new: str) -> DiffResult:
    return diff_policies(load_policy_text(old), load_policy_text(new))


def edit(old: str, new: str) -> str:
    assert POLICY.count(old) == 1
    return POLICY.replace(old, new)


def rows_to(result: DiffResult, dst: str) -> list[tuple[str, tuple[str, ...]]]:
    return sorted((r.change, r.services) for r in result.rows if dst in r.dst)


def test_a_rule_moved_to_another_nic_closes_one_and_opens_the_other() -> None:
    result = diff_texts(POLICY, edit("tcp: 8443, nic: [0]}", "tcp: 8443, nic: [1]}"))
    assert not result.identical
    assert rows_to(result, "vm:web1@front") == [("closed", ("tcp 8443",))]
    assert rows_to(result, "vm:web1@back") == [("opened", ("tcp 8443",))]


def test_a_nic_scope_named_instead_of_indexed_changes_nothing() -> None:
    assert diff_texts(POLICY, edit("tcp: 8443, nic: [0]}", "tcp: 8443, nic: [net0]}")).identical


def test_a_nic_scope_dropped_opens_the_rule_on_the_other_nic_only() -> None:
    result = diff_texts(POLICY, edit("tcp: 8443, nic: [0]}", "tcp: 8443}"))
    assert rows_to(result, "vm:web1@back") == [("opened", ("tcp 8443",))]
    assert rows_to(result, "vm:web1@front") == []


def test_a_host_rule_moved_to_another_interface_is_reported() -> None:
    result = diff_texts(POLICY, edit("tcp: 22, interface: [eth0]}", "tcp: 22, interface: [eth1]}"))
    assert not result.identical
    assert [r.change for r in result.rows if "host:node1" in r.dst and r.services == ("tcp 22",)] == ["closed"]


def test_a_host_rule_interface_pattern_that_still_matches_changes_nothing() -> None:
    assert diff_texts(POLICY, edit("tcp: 22, interface: [eth0]}", "tcp: 22, interface: [eth*]}")).identical


OUTBOUND = POLICY.replace("hosts:\n  node1: {address: [192.0.2.1], uplink: eth0}\n", """hosts:
  node1: {address: [192.0.2.1], uplink: eth0}
  node2: {address: [192.0.2.2], uplink: eth0}
""").replace("host_rules:\n", "host_rules:\n  - {id: no-ssh-out, direction: out, action: reject, to: 192.0.2.0/24, tcp: 22}\n")


def test_a_host_out_rule_scoped_to_the_uplink_changes_nothing_for_what_leaves_by_it() -> None:
    """A node's packets to another node leave by its uplink: its out rule scoped to
    `eth0` still refuses them (the kernel agreed; diff called it opened, taking the
    node's side as if no interface applied)."""
    scoped = OUTBOUND.replace("tcp: 22}\n", "tcp: 22, interface: [eth0]}\n", 1)
    assert diff_texts(OUTBOUND, scoped).identical
    elsewhere = diff_policies(load_policy_text(OUTBOUND), load_policy_text(OUTBOUND.replace("tcp: 22}\n", "tcp: 22, interface: [eth1]}\n", 1)))
    opened = {(a, b) for r in elsewhere.rows if r.change == "opened" and r.services == ("tcp 22",) for a in r.src for b in r.dst if a != b and b.startswith("host:")}
    assert opened == {("host:node1", "host:node2"), ("host:node2", "host:node1")}  # on another interface it no longer refuses them


def findings(text: str) -> dict[str, set[str]]:
    report = lint(Analyzer(load_policy_text(text, "policy.yaml")))
    out: dict[str, set[str]] = {}
    for finding in report.findings:
        if finding.rule is not None:
            out.setdefault(finding.rule, set()).add(finding.kind)
    return out


def test_lint_a_nic_scoped_rule_does_not_shadow_an_unscoped_one() -> None:
    text = edit("      - {id: web, direction: in, action: accept, tcp: 443}\n", "      - {id: web, direction: in, action: drop, tcp: 8443}\n")
    found = findings(text)
    assert "shadowed" not in found.get("web", set())  # it decides tcp 8443 on nic 1
    assert "partly-shadowed" in found["web"]  # and nothing on nic 0, where `admin` decides first


def test_lint_an_unscoped_rule_shadows_a_later_rule_on_one_nic() -> None:
    text = edit("      - {id: web, direction: in, action: accept, tcp: 443}\n", "      - {id: web, direction: in, action: drop, tcp: 8443}\n      - {id: late, direction: in, action: accept, tcp: 8443, nic: [1]}\n")
    assert "shadowed" in findings(text)["late"]


def test_lint_a_rule_on_another_interface_is_not_shadowed() -> None:
    text = POLICY.replace("host_rules:\n", "host_rules:\n  - {id: no-ssh, direction: in, action: drop, tcp: 22, interface: [eth1]}\n")
    assert "shadowed" not in findings(text).get("ssh-in", set())  # it decides tcp 22 on eth0
    shadowed = POLICY.replace("host_rules:\n", "host_rules:\n  - {id: no-ssh, direction: in, action: drop, tcp: 22, interface: [eth*]}\n")
    assert "shadowed" in findings(shadowed)["ssh-in"]
