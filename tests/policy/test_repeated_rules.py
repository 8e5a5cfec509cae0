"""A rule line written in many places (the same rules under many VMs) is read,
validated and checked once per text (policy/fastyaml.py `_RuleLine`, policy/plain.py,
`Checker.check_rules`), and still stands where it is written: its own positions and
ids, a problem reported at every place it occurs, checks that depend on the rule's
level or owner made for each."""

from __future__ import annotations

import os
import textwrap
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.policy.test_property import dump, policies
from zonewall.policy import loader
from zonewall.policy.errors import PolicyError
from zonewall.policy.loader import load_policy_text
from zonewall.policy.plain import plain_data

HEAD = """\
version: 1
hosts:
  node1: {address: 192.168.100.11, uplink: eth0}
networks:
  prod: {bridge: vmbr1, subnets: [10.0.2.0/24, "fd00:2::/64"]}
  lan: {bridge: vmbr2, subnets: [10.0.3.0/24], rules: [{action: accept, tcp: 22}]}
  lan2: {bridge: vmbr3, subnets: [10.0.4.0/24], rules: [{action: accept, tcp: 22}]}
groups:
  admins: [10.9.0.0/24]
"""


def document(body: str) -> str:
    return HEAD + textwrap.dedent(body).lstrip("\n")


def load(body: str):  # type: ignore[no-untyped-def]
    return load_policy_text(document(body))


def problems(body: str) -> list[str]:
    with pytest.raises(PolicyError) as info:
        load(body)
    return [str(p) for p in info.value.problems]


def places(body: str, needle: str) -> list[str]:
    """`line:column` of each occurrence of `needle` in the document."""
    out = []
    for number, line in enumerate(document(body).split("\n"), 1):
        column = line.find(needle)
        while column >= 0:
            out.append(f"{number}:{column + 1}")
            column = line.find(needle, column + 1)
    return out


def test_the_same_line_under_two_vms_is_one_rule_at_two_places() -> None:
    body = """
        vms:
          a:
            host: node1
            nics: [{network: prod, ips: [10.0.2.10]}]
            rules:
              - {direction: in, action: accept, from: group:admins, tcp: [22, 443]}
          b:
            host: node1
            nics: [{network: prod, ips: [10.0.2.11]}]
            rules:
              - {direction: in, action: drop, tcp: 25}
              -   {direction: in, action: accept, from: group:admins, tcp: [22, 443]}
          c:
            host: node1
            nics: [{network: prod, ips: [10.0.2.12]}]
            rules:
              - {direction: in, action: accept, from: group:admins, tcp: [22, 443]}
        """
    policy = load(body)
    a, b, c = policy.rules_of("vm", "a")[0], policy.rules_of("vm", "b")[1], policy.rules_of("vm", "c")[0]
    # validated with the document the first time, alone the second, and that rule
    # serves every later place (rules are frozen: sharing one is safe)
    assert b.rule is c.rule and a.rule == b.rule
    assert a.rule.tcp == ["22", "443"] and a.rule.from_ == ["group:admins"]
    # each where it stands: its own line, column and derived id
    first, second, _ = places(body, "{direction: in, action: accept, from")
    assert (f"{a.loc.line}:{a.loc.col}", a.id) == (first, "policy:" + first.split(":")[0])
    assert (f"{b.loc.line}:{b.loc.col}", b.id) == (second, "policy:" + second.split(":")[0])
    read_a, read_b = policy.source["vms"]["a"]["rules"][0], policy.source["vms"]["b"]["rules"][1]
    assert read_a["tcp"] is not read_b["tcp"]  # the read lists are the places' own
    assert [f"{loc.line}:{loc.col}" for loc in read_a["tcp"].value_locs + read_b["tcp"].value_locs] == [
        place for place in places(body, "22, 443")[:2] for place in (place, place.split(":")[0] + ":" + str(int(place.split(":")[1]) + 4))
    ]
    # a different line is a rule of its own
    assert policy.rules_of("vm", "b")[0].rule is not a.rule


def vms_writing(line: str, nics: tuple[int, ...] = (1, 1, 1)) -> str:
    """VMs a, b, c, ... (one per entry of `nics`, with that many NICs), each writing
    `line` as its one rule. (A line's first place is validated with the document, its
    second alone, and that rule object serves the third and later places: the checks
    of a rule object met again are what the third VM tests.)"""
    out = "vms:\n"
    for index, count in enumerate(nics):
        addresses = ", ".join(f"{{network: prod, ips: [10.0.2.{10 + 10 * index + n}]}}" for n in range(count))
        out += f"  {chr(ord('a') + index)}:\n    host: node1\n    nics: [{addresses}]\n    rules:\n      - {line}\n"
    return out


@pytest.mark.parametrize(
    ("line", "bad", "message"),
    [
        ("{direction: in, action: accept, tcp: 70000}", "70000", "port 70000 is out of range"),  # the model's
        ("{direction: in, action: accept, from: group:nosuch, tcp: 22}", "group:nosuch", "group:nosuch does not exist"),  # the checker's
    ],
)
def test_a_bad_line_written_twice_is_reported_at_both_places(line: str, bad: str, message: str) -> None:
    body = vms_writing(line)
    found = problems(body)
    assert [p.split(": ")[0] for p in found if message in p] == [f"policy.yaml:{place}" for place in places(body, bad)], found


def test_a_nic_scope_is_checked_against_each_owners_nics() -> None:
    """The same `nic: [1]` line: a and b have a second NIC, c has not."""
    body = vms_writing("{direction: in, action: accept, tcp: 22, nic: [1]}", nics=(2, 2, 1))
    found = problems(body)
    line, column = places(body, "nic: [1]")[2].split(":")
    assert [p for p in found if "NIC" in p] == [f"policy.yaml:{line}:{int(column) + 6}: vms.c.rules[0].nic[0]: vm c has no NIC 1 (indexes 0-0)"], found


def test_a_line_fine_in_a_network_is_still_checked_in_a_vm() -> None:
    """Network rules may leave out `direction`; the same line in a VM's rules may not
    (three places: the VM's shares the second network's rule object)."""
    body = """
        vms:
          a:
            host: node1
            nics: [{network: prod, ips: [10.0.2.10]}]
            rules:
              - {action: accept, tcp: 22}
        """
    found = problems(body)
    lan, lan2, vm = places(body, "{action: accept, tcp: 22}")
    assert lan.startswith("6:") and lan2.startswith("7:")  # the networks', checked first (lan2's is the rule object the VM's shares)
    assert [p for p in found if "direction" in p] == [
        f"policy.yaml:{vm}: vms.a.rules[0].direction: missing required key `direction` (expected in or out)"
    ], found


# -- the same answer as reading every line anew ------------------------------------------


def _repeating(document: dict[str, Any], copies: list[tuple[int, int]]) -> dict[str, Any]:
    """`document` with some networks', zones' and VMs' rules written again under others
    (the same lines, so the loader meets them again; a network's may lack `direction`,
    which a VM's may not)."""
    owners = [(section, name) for section in ("networks", "zones", "vms") for name in document.get(section, {})]
    for source, target in copies:
        if owners:
            (s, a), (t, b) = owners[source % len(owners)], owners[target % len(owners)]
            rules = document[s][a].get("rules")
            if rules:
                document[t][b]["rules"] = list(document[t][b].get("rules", [])) + rules
    return document


def _outcome(text: str) -> tuple[str, Any]:
    try:
        policy = load_policy_text(text)
    except PolicyError as exc:
        return "refused", [str(p) for p in exc.problems]
    return "loaded", (policy.doc, [(ref.id, ref.level, ref.owner, ref.index, ref.loc) for ref in policy.rules])


@settings(max_examples=int(os.environ.get("ZONEWALL_PROPERTY_EXAMPLES", "150")), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policies(), st.lists(st.tuples(st.integers(0, 20), st.integers(0, 20)), max_size=6), st.sampled_from([None, False]))
def test_lines_met_again_load_as_lines_read_anew(document: dict[str, Any], copies: list[tuple[int, int]], flow: bool | None) -> None:
    """Random policies (valid and broken) with rule lines written again: the same
    document, rule ids and positions, or the same problems, as when every line is
    validated with the document (no rule shared, so no check skipped either)."""
    text = dump(_repeating(document, copies), flow)
    shared = _outcome(text)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(loader, "plain_document", plain_data)
        anew = _outcome(text)
    assert shared == anew
