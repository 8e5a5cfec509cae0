"""A VM's own rules read straight from the plan, one shape per matches, window and
kind of addresses (issue 13: lint at 10,000 VMs; ChainViews.own_step): the findings
are those of the straightforward path (`lint(..., shortcuts=False)`, the analyzer's
steps, each rule on its own). VMs with one address per family (two of them), one family
only and several addresses carry the same rules, some naming one VM's address (what
reaches a chain then depends on the VM's address itself, not on its kind) and some the same
keys with and without a schedule; a shape keyed by too little is caught."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings

from tests.analysis.policygen import policies
from tests.analysis.test_lint_overlaps import _rules_shared
from tests.analysis.test_lint_shortcuts import lint_both_ways
from zonewall.analysis.engine import Analyzer
from zonewall.analysis.lint import lint
from zonewall.analysis.lint.chains import ChainViews
from zonewall.analysis.lint.state import _Restriction
from zonewall.compiler.plan.vocabulary import Step as PlanStep
from zonewall.policy.errors import PolicyError
from zonewall.policy.loader import load_policy_text

TEMPLATE = """\
  - {id: RULE-ssh-drop, direction: in, action: drop, to: vm:a, tcp: 22}
  - {id: RULE-ssh, direction: in, action: accept, tcp: 22}
  - {id: RULE-web-hours, direction: in, action: accept, tcp: 80, schedule: hours}
  - {id: RULE-web, direction: in, action: accept, tcp: 80}
  - {id: RULE-dns6, direction: in, action: accept, family: ipv6, udp: 53}
"""


def _policy() -> str:
    def rules(vm: str) -> str:
        return "    rules:\n" + "".join("    " + line.replace("RULE", vm) + "\n" for line in TEMPLATE.splitlines())

    return (
        """\
version: 1
settings: {default: {in: drop, out: accept}}
schedules:
  hours: {days: [mon, tue, wed, thu, fri], time: "08:00-18:00", timezone: UTC}
hosts:
  node1: {address: [192.168.100.11], uplink: eth0}
networks:
  lan: {bridge: br0, subnets: [10.0.0.0/24, "fd00::/64"]}
  lan4: {bridge: br1, subnets: [10.1.0.0/24]}
vms:
  a:
    host: node1
    nics: [{network: lan, ips: [10.0.0.10, "fd00::10"]}]
"""
        + rules("a")
        + """\
  b:
    host: node1
    nics: [{network: lan4, ips: [10.1.0.11]}]
"""
        + rules("b")
        + """\
  c:
    host: node1
    nics: [{network: lan, ips: [10.0.0.12, "fd00::12"]}, {network: lan4, ips: [10.1.0.12]}]
"""
        + rules("c")
        + """\
  d:
    host: node1
    nics: [{network: lan, ips: [10.0.0.13, "fd00::13"]}]
"""
        + rules("d")
    )


def test_rules_shared_by_vms_of_every_kind_give_the_plain_findings() -> None:
    text = _policy()
    fast, plain = lint_both_ways(text)
    assert fast == plain
    kinds = {(f["kind"], f["rule"]) for f in json.loads(fast)["findings"]}
    # `to: vm:a` takes a's ssh only: a's accept is shadowed, b's and c's are not
    # (d has the kind of addresses a has, but not a's address)
    assert ("shadowed", "a-ssh") in kinds and not {("shadowed", f"{vm}-ssh") for vm in "bcd"} & kinds
    assert {("dead", f"{vm}-ssh-drop") for vm in "bd"} <= kinds and ("dead", "a-ssh-drop") not in kinds
    # the scheduled accept decides part of the week only: the unscheduled one is not shadowed
    assert not {k for k in kinds if k[1].endswith("-web") and k[0] == "shadowed"}
    # b has no IPv6 address: its IPv6 rule is dead; a's and c's are not
    assert ("dead", "b-dns6") in kinds and ("dead", "a-dns6") not in kinds and ("dead", "c-dns6") not in kinds


@pytest.mark.parametrize("coarse", ["without the kind of addresses", "without the window"])
def test_a_shape_keyed_by_too_little_is_caught(monkeypatch: pytest.MonkeyPatch, coarse: str) -> None:
    """The comparison can fail: a shape shared by VMs with other kinds of addresses,
    or by rules with another schedule, makes the findings differ."""
    text = _policy()
    good, plain = lint_both_ways(text)
    assert good == plain

    def shape_key(self: ChainViews, st: PlanStep, restrict: _Restriction | None) -> tuple[object, ...] | None:
        if restrict is None or restrict.dims is not None:
            return None
        if coarse == "without the window":
            return (id(st.matches), restrict.dim, restrict.token)
        return (id(st.matches), st.time, restrict.dim)

    monkeypatch.setattr(ChainViews, "shape_key", shape_key)
    broken = json.dumps(lint(Analyzer(load_policy_text(text))).to_json(), sort_keys=True)
    assert broken != good


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(policies())
def test_shapes_give_the_plain_findings_on_random_policies_with_shared_rules(drawn: tuple[str, Any]) -> None:
    text = _rules_shared(drawn[0])
    try:
        load_policy_text(text)
    except PolicyError:
        assume(False)  # a copied rule that its new VM cannot have
    fast, plain = lint_both_ways(text)
    assert fast == plain
