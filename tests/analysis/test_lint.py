"""`zonewall lint`: one hand-written policy per finding kind, with the rule, its
file:line and the related rules checked, and the cases that must not be reported
(a rule partly covered, a logged duplicate, a rate-limited accept in front, an
order that matters). A property test removes every rule lint calls shadowed, dead
or redundant from random policies and asks `diff` whether anything changed.
"""

from __future__ import annotations

import io
import json
import textwrap
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from rich.console import Console

from tests.analysis.policygen import policies
from zonewall.analysis.diff import diff_policies
from zonewall.analysis.engine import Analyzer
from zonewall.analysis.lint import KINDS, Finding, LintReport, lint, lint_table
from zonewall.policy.loader import load_policy_text

HEADER = """\
version: 1
settings:
  default: {in: drop, out: accept}
  management: [192.168.100.0/24]
hosts:
  node1: {address: [192.168.100.11]}
  node2: {address: [192.168.100.12]}
networks:
  lan: {bridge: vmbr0, subnets: [10.0.0.0/24, "fd00::/64"]}
"""


def policy(body: str) -> str:
    return HEADER + textwrap.dedent(body)


def run(text: str) -> LintReport:
    return lint(Analyzer(load_policy_text(text, "policy.yaml")))


def at(text: str, needle: str) -> str:
    """policy.yaml:LINE of the (only) line containing `needle`."""
    lines = [n for n, line in enumerate(text.splitlines(), 1) if needle in line]
    assert len(lines) == 1, (needle, lines)
    return f"policy.yaml:{lines[0]}"


def found(report: LintReport, kind: str, rule: str | None = None) -> list[Finding]:
    return [f for f in report.findings if f.kind == kind and (rule is None or f.rule == rule)]


def one(report: LintReport, kind: str, rule: str | None = None) -> Finding:
    matches = found(report, kind, rule)
    assert len(matches) == 1, (kind, rule, [f.to_json() for f in report.findings])
    return matches[0]


def related(finding: Finding) -> list[str]:
    return [r.rule for r in finding.related]


def rules_of(report: LintReport, rule: str) -> list[str]:
    return sorted(f.kind for f in report.findings if f.rule == rule)


ONE_VM = """\
vms:
  a:
    host: node1
    nics: [{network: lan, ips: [10.0.0.10]}]
    rules:
"""


def vm_policy(*rules: str, extra: str = "") -> str:
    return policy(ONE_VM + "".join(f"      - {r}\n" for r in rules) + extra)


# -- shadowed -------------------------------------------------------------------------


def test_a_rule_covered_by_an_earlier_one_is_shadowed() -> None:
    text = vm_policy(
        "{id: wide, direction: in, action: accept, from: 10.0.0.0/8, tcp: 22}",
        "{id: narrow, direction: in, action: accept, from: 10.1.0.0/16, tcp: 22}",
    )
    report = run(text)
    finding = one(report, "shadowed", "narrow")
    assert finding.where == at(text, "id: narrow") and finding.severity == "warning"
    assert finding.level == "vm" and finding.owner == "a"
    assert related(finding) == ["wide"] and finding.related[0].where == at(text, "id: wide")
    assert finding.chains == ["vm:a in"]
    assert rules_of(report, "wide") == []  # the covering rule itself is fine


def test_shadowed_by_several_rules_together_names_them_all() -> None:
    text = vm_policy(
        "{id: low, direction: in, action: accept, from: 10.0.0.0/9, tcp: 22}",
        "{id: other, direction: in, action: accept, tcp: 80}",
        "{id: high, direction: in, action: drop, from: 10.128.0.0/9}",
        "{id: all, direction: in, action: accept, from: 10.0.0.0/8, tcp: 22}",
    )
    finding = one(run(text), "shadowed", "all")
    assert related(finding) == ["low", "high"]  # not `other`: it takes none of it


def test_a_rule_partly_covered_is_not_shadowed() -> None:
    text = vm_policy(
        "{id: narrow, direction: in, action: accept, from: 10.1.0.0/16, tcp: 22}",
        "{id: wide, direction: in, action: accept, from: 10.0.0.0/8, tcp: 22}",
    )
    report = run(text)
    assert found(report, "shadowed") == [] and found(report, "partly-shadowed") == []
    # same action: no conflict; `narrow` is redundant (`wide` accepts it too)
    assert found(report, "conflict") == []
    assert related(one(report, "redundant", "narrow")) == ["wide"]
    assert rules_of(report, "wide") == []


def test_a_rate_limited_accept_shadows_nothing() -> None:
    text = vm_policy(
        "{id: limited, direction: in, action: accept, from: 10.0.0.0/8, tcp: 22, limit: {rate: 5/minute}}",
        "{id: plain, direction: in, action: accept, from: 10.0.0.0/8, tcp: 22}",
    )
    report = run(text)
    assert found(report, "shadowed") == []
    assert found(report, "redundant") == []  # limited: never; plain: the default drops


def test_zone_rule_shadowed_for_every_vm_or_only_some() -> None:
    text = policy(
        """\
        zones:
          web:
            rules:
              - {id: zone-https, direction: in, action: accept, service: https}
              - {id: zone-http, direction: in, action: accept, service: http}
        vms:
          a:
            host: node1
            zone: web
            nics: [{network: lan, ips: [10.0.0.10]}]
            rules:
              - {id: a-https, direction: in, action: accept, tcp: 443}
              - {id: a-http, direction: in, action: accept, tcp: 80}
          b:
            host: node1
            zone: web
            nics: [{network: lan, ips: [10.0.0.11]}]
            rules:
              - {id: b-https, direction: in, action: accept, tcp: [443, 8443]}
        """
    )
    report = run(text)
    shadowed = one(report, "shadowed", "zone-https")
    assert shadowed.where == at(text, "id: zone-https") and shadowed.level == "zone"
    assert related(shadowed) == ["a-https", "b-https"]
    assert shadowed.chains == ["vm:a in", "vm:b in"]
    partly = one(report, "partly-shadowed", "zone-http")
    assert partly.severity == "info" and partly.chains == ["vm:a in"] and related(partly) == ["a-http"]
    assert found(report, "shadowed", "zone-http") == []


def test_the_icmpv6_essentials_and_the_anti_lockout_come_first() -> None:
    text = policy(
        """\
        host_rules:
          - {id: host-ssh, direction: in, action: accept, from: 192.168.100.0/25, tcp: 22}
        vms:
          a:
            host: node1
            nics: [{network: lan, ips: [10.0.0.10, "fd00::10"]}]
            rules:
              - {id: no-nd, direction: in, action: drop, icmpv6: [nd-neighbor-solicit]}
        """
    )
    report = run(text)
    nd = one(report, "shadowed", "no-nd")
    assert related(nd) == ["icmpv6-essentials"] and nd.related[0].where == "built-in"
    ssh = one(report, "shadowed", "host-ssh")
    assert related(ssh) == ["anti-lockout"] and ssh.related[0].where == at(text, "management:")
    assert ssh.chains == ["host:node1 in", "host:node2 in"]


def test_a_vm_with_several_addresses_of_a_family() -> None:
    text = policy(
        """\
        vms:
          a:
            host: node1
            nics: [{network: lan, ips: [10.0.0.10, 10.0.0.20]}]
            rules:
              - {id: to-first, direction: out, action: drop, from: 10.0.0.10, tcp: 25}
              - {id: to-all, direction: out, action: drop, tcp: 25}
              - {id: to-second, direction: out, action: drop, from: 10.0.0.20, tcp: 25}
        """
    )
    report = run(text)
    assert related(one(report, "shadowed", "to-second")) == ["to-all"]
    assert related(one(report, "redundant", "to-first")) == ["to-all"]
    assert rules_of(report, "to-all") == []  # without `to-second` the default would accept


# -- dead -------------------------------------------------------------------------------


def test_a_rule_that_cannot_match_in_its_chain_is_dead() -> None:
    text = vm_policy(
        "{id: elsewhere, direction: in, action: accept, to: 10.0.0.99, tcp: 22}",
        "{id: v6-only, direction: in, action: accept, family: ipv6, tcp: 80}",
        "{id: mine, direction: in, action: accept, to: 10.0.0.10, tcp: 443}",
    )
    report = run(text)
    elsewhere = one(report, "dead", "elsewhere")
    assert elsewhere.where == at(text, "id: elsewhere") and "to" in elsewhere.message
    v6 = one(report, "dead", "v6-only")
    assert "ipv6" in v6.message and "ipv4" in v6.message
    assert rules_of(report, "mine") == []
    assert found(report, "shadowed") == []  # dead, not shadowed by nothing


def test_a_zone_rule_is_dead_only_when_it_matches_none_of_the_zone() -> None:
    text = policy(
        """\
        zones:
          web:
            rules:
              - {id: to-a, direction: in, action: accept, to: vm:a, tcp: 80}
              - {id: to-nobody, direction: in, action: accept, to: 10.0.0.99, tcp: 80}
        vms:
          a: {host: node1, zone: web, nics: [{network: lan, ips: [10.0.0.10]}]}
          b: {host: node1, zone: web, nics: [{network: lan, ips: [10.0.0.11]}]}
        """
    )
    report = run(text)
    assert rules_of(report, "to-a") == []
    dead = one(report, "dead", "to-nobody")
    assert dead.chains == ["vm:a in", "vm:b in"] and "2 VMs" in dead.message


# -- redundant ----------------------------------------------------------------------------


def test_a_drop_in_front_of_the_default_drop_is_redundant() -> None:
    text = vm_policy("{id: no-telnet, direction: in, action: drop, tcp: 23}")
    finding = one(run(text), "redundant", "no-telnet")
    assert finding.where == at(text, "id: no-telnet") and finding.severity == "info"
    assert [(r.rule, r.level, r.where) for r in finding.related] == [("default-in", "default", at(text, "default: {in: drop"))]


def test_logged_and_rejecting_rules_are_not_redundant() -> None:
    text = vm_policy(
        "{id: logged, direction: in, action: drop, tcp: 23, log: true}",
        "{id: rejected, direction: in, action: reject, tcp: 24}",
    )
    report = run(text)
    assert found(report, "redundant") == []


def test_a_logged_duplicate_is_not_redundant_nor_what_it_would_unlog() -> None:
    text = vm_policy(
        "{id: first, direction: in, action: accept, tcp: 80}",
        "{id: dup-logged, direction: in, action: accept, tcp: 80, log: true}",
    )
    report = run(text)
    # `dup-logged` never matches (shadowed), but `first` is not redundant either:
    # the rules reported can all be removed at once, and without both the default drops
    assert related(one(report, "shadowed", "dup-logged")) == ["first"]
    assert found(report, "redundant") == []


def test_the_default_logs_denied_packets_so_a_silent_drop_matters() -> None:
    text = vm_policy("{id: quiet, direction: in, action: drop, tcp: 23}").replace(
        "  management:", "  log: {denied: true}\n  management:"
    )
    assert found(run(text), "redundant") == []


def test_a_rule_a_later_one_takes_whole_is_redundant_before_a_default_that_differs() -> None:
    # the default drops: `narrow`'s packets must all be taken by a later accept
    text = vm_policy(
        "{id: narrow, direction: in, action: accept, from: 10.0.0.0/8, tcp: 80}",
        "{id: wide, direction: in, action: accept, tcp: 80}",
    )
    report = run(text)
    assert [f.rule for f in found(report, "redundant")] == ["narrow"]
    assert related(one(report, "redundant", "narrow")) == ["wide"]


def test_no_later_rule_left_to_take_it_before_a_default_that_differs() -> None:
    # `again` never matches (shadowed, so it goes), and without it nothing later
    # accepts `first`'s packets: the default would drop them
    text = vm_policy(
        "{id: first, direction: in, action: accept, tcp: 80}",
        "{id: again, direction: in, action: accept, tcp: 80}",
    )
    report = run(text)
    assert related(one(report, "shadowed", "again")) == ["first"]
    assert found(report, "redundant") == []


def test_redundant_rules_are_judged_together() -> None:
    # `i` alone could go (`j` accepts the same) and `j` alone could go (what is left
    # of it reaches the default accept), but not both: without them `k` drops tcp 80
    # from 10/8. Judged latest first against the rules still kept, only `j` is.
    text = vm_policy(
        "{id: i, direction: in, action: accept, from: 10.0.0.0/8, tcp: 80}",
        "{id: j, direction: in, action: accept, from: 10.0.0.0/8, tcp: [80, 81]}",
        "{id: k, direction: in, action: drop, tcp: 80}",
    ).replace("    nics:", "    default: {in: accept}\n    nics:")
    report = run(text)
    assert [f.rule for f in found(report, "redundant")] == ["j"]
    assert related(one(report, "redundant", "j")) == ["default-in"]
    assert related(one(report, "conflict", "k")) == ["i"]


SECURITY_GROUP_CALLED_BY_A_VM = policy(
    """\
    security_groups:
      s: {rules: [{id: s-22-23, direction: in, action: accept, tcp: "22-23"}]}
    zones:
      z: {rules: [{id: z-23-24, direction: in, action: accept, tcp: "23-24"}]}
    vms:
      a:
        host: node1
        zone: z
        nics: [{network: lan, ips: [10.0.0.10]}]
        rules:
          - {id: v-22, direction: in, action: accept, tcp: 22}
          - {id: call-s, security_group: s}
    """
)


def test_a_security_groups_rules_are_judged_where_they_are_called() -> None:
    # s's rule sits in a's list after v-22; judged after it (groups rank with the
    # global rules), it could go too once v-22 had gone for relying on it: then tcp 22
    # would fall to the default drop. A rule another rule's removal relies on stays.
    report = run(SECURITY_GROUP_CALLED_BY_A_VM)
    assert [f.rule for f in found(report, "redundant")] == ["v-22"]
    assert related(one(report, "redundant", "v-22")) == ["s-22-23"]
    # without a's call of s, v-22 decides alone: nothing to remove
    without_call = SECURITY_GROUP_CALLED_BY_A_VM.replace("      - {id: call-s, security_group: s}\n", "")
    assert without_call != SECURITY_GROUP_CALLED_BY_A_VM
    assert found(run(without_call), "redundant") == []


def test_a_call_of_a_security_group_is_no_dead_rule() -> None:
    """The call is placed as the group's rules; a call of a group nothing matches is
    not reported dead in their stead, a rule of no chain still is."""
    report = run(SECURITY_GROUP_CALLED_BY_A_VM)
    assert found(report, "dead") == []
    with_idle = SECURITY_GROUP_CALLED_BY_A_VM.replace("  z: {rules:", "  idle: {rules: [{id: idle, direction: in, action: accept, tcp: 1}]}\n  z: {rules:")
    assert with_idle != SECURITY_GROUP_CALLED_BY_A_VM
    nowhere = run(with_idle)
    assert found(nowhere, "dead") == []  # a zone without VMs: its rules reported with it
    assert one(nowhere, "unused").object == "zone:idle"
    gone = run(SECURITY_GROUP_CALLED_BY_A_VM.replace("nics: [{network: lan, ips: [10.0.0.10]}]", "nics: [{network: lan}]"))
    assert sorted(f.rule for f in found(gone, "dead")) == ["s-22-23", "v-22", "z-23-24"]  # a VM without addresses: what is placed is dead, not the call


def test_reordering_matters() -> None:
    exception_first = vm_policy(
        "{id: block, direction: in, action: drop, from: 10.0.0.5, tcp: 22}",
        "{id: allow, direction: in, action: accept, from: 10.0.0.0/24, tcp: 22}",
    )
    report = run(exception_first)
    conflict = one(report, "conflict", "allow")
    assert related(conflict) == ["block"] and conflict.details["exception"] is True
    assert conflict.severity == "info" and conflict.details["overlap"] == "tcp 22"
    assert found(report, "shadowed") == []
    # the other way round the exception can never match
    allow_first = vm_policy(
        "{id: allow, direction: in, action: accept, from: 10.0.0.0/24, tcp: 22}",
        "{id: block, direction: in, action: drop, from: 10.0.0.5, tcp: 22}",
    )
    report = run(allow_first)
    assert related(one(report, "shadowed", "block")) == ["allow"]
    assert found(report, "conflict") == []


# -- conflict -----------------------------------------------------------------------------


def test_a_partial_overlap_with_another_action_is_a_conflict() -> None:
    text = vm_policy(
        "{id: block-lab, direction: in, action: drop, from: 10.0.0.0/25}",
        "{id: ssh, direction: in, action: accept, from: 10.0.0.0/24, tcp: 22}",
    )
    report = run(text)
    conflict = one(report, "conflict", "ssh")
    assert conflict.where == at(text, "id: ssh") and conflict.severity == "warning"
    assert related(conflict) == ["block-lab"] and conflict.related[0].where == at(text, "id: block-lab")
    assert conflict.details == {"exception": False, "overlap": "tcp 22"}
    assert found(report, "shadowed") == []


def test_an_override_by_another_level_is_an_info_conflict() -> None:
    text = policy(
        """\
        global_rules:
          - {id: no-smtp, direction: in, action: reject, from: 10.0.0.0/25, tcp: 25}
        zones:
          mail:
            rules:
              - {id: smtp, direction: in, action: accept, tcp: [25, 587]}
        vms:
          a: {host: node1, zone: mail, nics: [{network: lan, ips: [10.0.0.10]}]}
        """
    )
    conflict = one(run(text), "conflict", "smtp")
    assert conflict.severity == "info" and related(conflict) == ["no-smtp"] and conflict.chains == ["vm:a in"]


# -- unused -------------------------------------------------------------------------------


def test_unused_definitions() -> None:
    text = policy(
        """\
        groups:
          used: [10.0.0.0/24]
          lonely: [10.0.0.0/25]
          inner: [10.0.0.128/25]
          outer: [group:inner]
        services:
          app: {tcp: [8080]}
          spare: {tcp: [9090]}
        filters:
          base: {rules: [{action: drop, tcp: [25]}]}
          extra: {include: [base]}
          stray: {rules: [{action: drop, tcp: [26]}]}
        schedules:
          office: {days: [mon], time: "08:00-18:00"}
        zones:
          empty:
            rules:
              - {id: never, direction: in, action: accept, tcp: 22}
        vms:
          a:
            host: node1
            filters: [extra]
            nics: [{network: lan, ips: [10.0.0.10]}]
            rules:
              - {direction: in, action: accept, from: group:used, service: app}
        """
    )
    report = run(text)
    unused = {f.object: f for f in found(report, "unused")}
    assert set(unused) == {"group:lonely", "group:inner", "group:outer", "service:spare", "filter:stray", "schedule:office", "zone:empty"}
    assert unused["group:lonely"].where == at(text, "lonely:") and unused["group:lonely"].rule is None
    assert "outer" in unused["group:inner"].message  # only used by an unused group
    assert unused["zone:empty"].where == at(text, "empty:") and "its rule never applies" in unused["zone:empty"].message
    assert related(unused["zone:empty"]) == ["never"] and unused["zone:empty"].severity == "info"
    assert unused["service:spare"].where == at(text, "spare:")
    assert unused["filter:stray"].where == at(text, "stray:")
    assert rules_of(report, "never") == []  # said once, with the zone


def test_rules_of_a_network_that_is_not_isolated_apply_between_its_guests() -> None:
    # network rules apply on every network (default accept unless isolated): a drop
    # decides, an accept before the accepting default changes nothing
    text = policy(
        """\
        vms:
          a: {host: node1, nics: [{network: lan, ips: [10.0.0.10]}]}
          b: {host: node1, nics: [{network: lan, ips: [10.0.0.11]}]}
        """
    ).replace(
        '  lan: {bridge: vmbr0, subnets: [10.0.0.0/24, "fd00::/64"]}',
        '  lan:\n    bridge: vmbr0\n    subnets: [10.0.0.0/24]\n    rules:\n'
        '      - {id: net-drop, action: drop, tcp: 25}\n      - {id: net-accept, action: accept, tcp: 80}',
    )
    report = run(text)
    assert not found(report, "unused")
    assert not found(report, "redundant", "net-drop") and not found(report, "dead", "net-drop")
    finding = one(report, "redundant", "net-accept")
    assert finding.chains == ["network:lan"] and related(finding) == ["net-lan-default"]


def test_rules_of_a_network_without_guests_are_unused() -> None:
    text = policy("").replace(
        '  lan: {bridge: vmbr0, subnets: [10.0.0.0/24, "fd00::/64"]}',
        '  lan:\n    bridge: vmbr0\n    subnets: [10.0.0.0/24]\n    rules:\n      - {id: net-rule, action: drop, tcp: 80}',
    )
    finding = one(run(text), "unused")
    assert finding.object == "network:lan" and related(finding) == ["net-rule"] and finding.severity == "warning"


def test_isolated_network_rules_are_analysed() -> None:
    text = policy(
        """\
        vms:
          a: {host: node1, nics: [{network: iso, ips: [10.1.0.10]}]}
          b: {host: node2, nics: [{network: iso, ips: [10.1.0.11]}]}
        """
    ).replace(
        "networks:\n",
        "networks:\n"
        "  iso:\n"
        "    bridge: vmbr1\n"
        "    subnets: [10.1.0.0/24]\n"
        "    isolated: true\n"
        "    rules:\n"
        "      - {id: web, action: accept, tcp: 80}\n"
        "      - {id: web-a, action: accept, from: vm:a, tcp: 80}\n"
        "      - {id: outside, action: accept, from: 10.9.0.0/16, tcp: 22}\n",
    )
    report = run(text)
    assert related(one(report, "shadowed", "web-a")) == ["web"]
    assert one(report, "shadowed", "web-a").chains == ["network:iso"]
    assert one(report, "dead", "outside").where == at(text, "id: outside")


# -- empty references -------------------------------------------------------------------


def test_references_to_empty_sets() -> None:
    text = policy(
        """\
        groups:
          ghosts: [vm:b]
          mixed: [vm:b, 10.0.0.0/24]
        zones:
          nobody: {}
        vms:
          a:
            host: node1
            nics: [{network: lan, ips: [10.0.0.10]}]
            rules:
              - {id: from-nobody, direction: in, action: accept, from: zone:nobody, tcp: 22}
              - {id: from-ghosts, direction: in, action: accept, from: group:ghosts, tcp: 23}
              - {id: from-mixed, direction: in, action: accept, from: group:mixed, tcp: 24}
              - {id: half, direction: in, action: accept, from: [vm:b, 10.0.0.0/24], tcp: 25}
          b: {host: node1, nics: [{network: lan}]}
        """
    )
    report = run(text)
    nobody = one(report, "empty-ref", "from-nobody")
    assert nobody.where == at(text, "id: from-nobody") and nobody.severity == "warning"
    assert nobody.details == {"refs": ["zone:nobody"], "empty": ["from"]}
    assert one(report, "empty-ref", "from-ghosts").details == {"refs": ["group:ghosts"], "empty": ["from"]}
    # an empty member next to a non-empty one: the rule still matches
    half = one(report, "empty-ref", "half")
    assert half.severity == "info" and half.details == {"refs": ["vm:b"], "empty": []}
    assert found(report, "empty-ref", "from-mixed") == []
    groups = {f.object: f for f in found(report, "empty-ref") if f.rule is None}
    assert groups["group:ghosts"].severity == "warning" and groups["group:ghosts"].where == at(text, "ghosts:")
    assert groups["group:mixed"].severity == "info"
    # the rules with an empty side are not reported again as dead
    assert found(report, "dead") == []


# -- management exposure ------------------------------------------------------------------


def test_management_ports_open_to_everybody() -> None:
    text = policy(
        """\
        host_rules:
          - {id: snmp-any, direction: in, action: accept, udp: 161}
        zones:
          web:
            rules:
              - {id: rdp-world, direction: in, action: accept, from: 0.0.0.0/0, tcp: 3389}
        vms:
          a:
            host: node1
            zone: web
            nics: [{network: lan, ips: [10.0.0.10, "fd00::10"]}]
            rules:
              - {id: ssh-any, direction: in, action: accept, service: [ssh, https]}
              - {id: ssh-admins, direction: in, action: accept, from: 192.168.100.0/24, tcp: 22}
              - {id: out-ssh, direction: out, action: accept, tcp: 22}
        """
    )
    report = run(text)
    ssh = one(report, "management-exposure", "ssh-any")
    assert ssh.where == at(text, "id: ssh-any") and ssh.details == {"ports": ["tcp/22 (ssh)"]}
    assert "IPv4/IPv6" in ssh.message
    rdp = one(report, "management-exposure", "rdp-world")
    assert rdp.details == {"ports": ["tcp/3389 (rdp)"]} and "IPv4" in rdp.message and "IPv6" not in rdp.message
    snmp = one(report, "management-exposure", "snmp-any")
    assert snmp.details == {"ports": ["udp/161 (snmp)"]} and snmp.chains == ["host:node1 in", "host:node2 in"]
    assert found(report, "management-exposure", "ssh-admins") == []
    assert found(report, "management-exposure", "out-ssh") == []


def test_an_exposure_closed_by_an_earlier_rule_is_not_reported() -> None:
    text = vm_policy(
        "{id: no-ssh, direction: in, action: drop, tcp: 22, log: true}",
        "{id: low, direction: in, action: accept, tcp: \"20-22\"}",
    )
    report = run(text)
    assert found(report, "management-exposure") == []
    # without the drop in front it is
    text = vm_policy("{id: low, direction: in, action: accept, tcp: \"20-22\"}")
    assert one(run(text), "management-exposure", "low").details == {"ports": ["tcp/22 (ssh)"]}


# -- report, JSON, table --------------------------------------------------------------------


def test_json_schema_counts_and_order() -> None:
    text = vm_policy(
        "{id: wide, direction: in, action: accept, from: 10.0.0.0/8, tcp: 22}",
        "{id: narrow, direction: in, action: accept, from: 10.1.0.0/16, tcp: 22}",
        "{id: no-telnet, direction: in, action: drop, tcp: 23}",
    )
    report = run(text)
    data = json.loads(json.dumps(report.to_json()))
    assert data["version"] == 1
    assert list(data["counts"]) == list(KINDS)
    assert data["counts"]["shadowed"] == 1 and data["counts"]["redundant"] == 1
    assert sum(data["counts"].values()) == len(data["findings"])
    keys = {"kind", "severity", "rule", "where", "level", "owner", "object", "message", "related", "chains", "details"}
    for finding in data["findings"]:
        assert set(finding) == keys
        for rel in finding["related"]:
            assert set(rel) == {"rule", "where", "level", "owner", "action"}
    # sorted by file and line
    assert [f["rule"] for f in data["findings"]] == ["narrow", "no-telnet"]
    assert run(text).to_json() == report.to_json()  # deterministic


def test_table_renders_every_finding() -> None:
    text = vm_policy(
        "{id: wide, direction: in, action: accept, from: 10.0.0.0/8, tcp: 22}",
        "{id: narrow, direction: in, action: accept, from: 10.1.0.0/16, tcp: 22}",
    )
    out = io.StringIO()
    Console(file=out, width=200).print(lint_table(run(text)))
    shown = out.getvalue()
    assert "shadowed" in shown and "narrow" in shown and at(text, "id: narrow") in shown
    assert "wide (policy.yaml:" in shown and "1 shadowed" in shown
    limited = io.StringIO()
    Console(file=limited, width=200).print(lint_table(run(text), limit=0))
    assert "narrow" not in limited.getvalue() and "1 not shown" in limited.getvalue()
    empty = io.StringIO()
    Console(file=empty, width=200).print(lint_table(LintReport()))
    assert "no findings" in empty.getvalue()


def test_the_chains_lint_builds_are_the_engines() -> None:
    """lint builds VM chains from shared parts; they must be ChainBuilder.vm's."""
    text = policy(
        """\
        global_rules:
          - {direction: in, action: accept, service: ssh}
          - {direction: out, action: drop, to: 203.0.113.0/24}
        zones:
          web:
            default: {in: reject}
            rules:
              - {direction: in, action: accept, service: https}
              - {direction: out, action: accept, service: dns}
        vms:
          a:
            host: node1
            zone: web
            default: {out: drop}
            nics: [{network: lan, ips: [10.0.0.10]}]
            rules:
              - {direction: in, action: accept, tcp: 80, limit: {rate: 5/second}}
              - {direction: out, action: accept, tcp: 443, enabled: false}
          b: {host: node1, nics: [{network: lan, ips: [10.0.0.11]}]}
        """
    )
    from zonewall.analysis.lint import _Linter

    analyzer = Analyzer(load_policy_text(text))
    linter = _Linter(analyzer)
    for vm in ("a", "b"):
        for direction in ("in", "out"):
            name, parts, default = linter.vm_chain(vm, direction)
            chain = analyzer.chains.vm(vm, direction)
            # as the lint sees them (a VM's own rules read straight from the plan's steps),
            # unrestricted: the engine's steps, regions, actions and rate limits
            steps = linter.make_state(name, "vm", vm, direction, parts, default, None).steps[1:]  # after the ICMPv6 essentials
            assert name == chain.name
            assert [(st.label, st.ref, st.region, st.action, st.limited) for st in steps] == [(st.label, st.ref, st.region, st.action, st.limited) for st in chain.steps]
            assert any(st.limited for st in steps) == ((vm, direction) == ("a", "in"))  # a's rate-limited accept, limited
            assert (default.action, default.label) == (chain.default.action, chain.default.label)


# -- property: what lint says can go, can go ----------------------------------------------


def _without(text: str, report: LintReport, analyzer: Analyzer) -> str:
    """The policy without every rule reported shadowed, dead or redundant (or never
    matching for an empty reference)."""
    gone = {f.rule for f in report.findings if f.kind in ("shadowed", "dead", "redundant") or (f.kind == "empty-ref" and f.details.get("empty"))}
    gone.discard(None)
    data: Any = yaml.safe_load(text)
    paths = sorted((ref.path for ref in analyzer.policy.rules if ref.id in gone), reverse=True)
    for path in paths:  # from the last index: the earlier ones keep theirs
        node = data
        for part in path[:-1]:
            node = node[part]
        del node[path[-1]]
    return yaml.safe_dump(data, sort_keys=False)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(policies())
def test_removing_what_lint_reports_changes_no_verdict(drawn: tuple[str, Any]) -> None:
    text, _ = drawn
    analyzer = Analyzer(load_policy_text(text))
    report = lint(analyzer)
    reduced = _without(text, report, analyzer)
    result = diff_policies(load_policy_text(text), load_policy_text(reduced))
    assert result.identical, (report.to_json(), result.to_json())


CASES = [
    # shadowed, management-exposure
    vm_policy("{id: a1, direction: in, action: accept, tcp: 22}", "{id: a2, direction: in, action: accept, from: 10.0.0.0/8, tcp: 22}"),
    # dead
    vm_policy("{id: d, direction: in, action: accept, to: 10.0.0.99, tcp: 22}"),
    # redundant
    vm_policy("{id: r, direction: in, action: drop, tcp: 23}"),
    # conflict
    vm_policy("{id: b, direction: in, action: drop, from: 10.0.0.0/25}", "{id: c, direction: in, action: accept, from: 10.0.0.0/24, tcp: 22}"),
    # partly-shadowed, empty-ref, unused
    policy(
        """\
        groups:
          spare: [10.0.0.0/24]
        zones:
          y: {}
          z:
            rules:
              - {direction: in, action: accept, tcp: 443}
        vms:
          a:
            host: node1
            zone: z
            nics: [{network: lan, ips: [10.0.0.10]}]
            rules:
              - {direction: in, action: accept, tcp: 443}
              - {direction: in, action: accept, from: zone:y, tcp: 8}
          b: {host: node1, zone: z, nics: [{network: lan, ips: [10.0.0.11]}]}
        """
    ),
]


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_has_a_case(kind: str) -> None:
    produced = {f.kind for case in CASES for f in run(case).findings}
    assert kind in produced
