"""policy/naming.py: the VMs naming a reference, by the reference, made once per
whole load and carried by group member edits only.

* A group edit's validation checks the family of every rule naming the group (or a
  group holding it) through the index: a VM rule with `family: ipv4` naming a group
  that becomes IPv6-only is refused as the whole load refuses it, whether the VM
  names it directly, through a holder or in a list; and a VM naming no
  such group does not stop an edit.
* The index is carried to the policy of a group edit (the rules did not change), not
  to that of a rule edit (it is made again there, and finds the edited rule).
"""

from __future__ import annotations

import pytest

from zonewall.policy.documents import load_documents, load_edited
from zonewall.policy.errors import PolicyError
from zonewall.policy.incremental import load_edit
from zonewall.policy.naming import MEMO, vms_naming

BASE = """\
version: 1
hosts:
  node1: {address: [192.168.100.11], uplink: eth0}
networks:
  front: {bridge: vmbr1, subnets: [10.0.1.0/24]}
groups:
  gfam: [198.18.7.0/24]
  gholder: [group:gfam]
  other: [198.18.8.0/24]
vms:
  plain: {host: node1, nics: [{network: front, mac: "52:54:00:00:00:01", ips: [10.0.1.10]}], rules: [{direction: in, action: accept, from: group:other, tcp: 22}]}
  fam: {host: node1, nics: [{network: front, mac: "52:54:00:00:00:02", ips: [10.0.1.20]}], rules: [{direction: in, action: accept, tcp: 80}, RULE]}
"""

RULES = [
    "{direction: in, action: accept, family: ipv4, from: group:gfam, tcp: 8443}",
    "{direction: in, action: accept, family: ipv4, from: group:gholder, tcp: 8443}",
    "{direction: out, action: accept, family: ipv4, to: [group:gholder, group:gfam], tcp: 8443}",
]


@pytest.mark.parametrize("rule", RULES)
def test_a_vm_rule_whose_family_a_group_edit_empties_refuses_the_edit(rule: str) -> None:
    text = BASE.replace("RULE", rule)
    docs = {"policy.yaml": text}
    old = load_documents(docs)
    six = {"policy.yaml": text.replace("gfam: [198.18.7.0/24]", "gfam: ['2001:db8::1']")}
    with pytest.raises(PolicyError):
        load_documents(six)
    assert load_edit(docs, old, six, groups=True) is None  # refused incrementally too: the whole load reports it
    both = {"policy.yaml": text.replace("gfam: [198.18.7.0/24]", "gfam: ['2001:db8::1', 198.18.7.1]")}
    assert load_edit(docs, old, both, groups=True) is not None  # still ipv4 in it: taken


def test_a_group_no_family_rule_names_is_edited_in_place() -> None:
    text = BASE.replace("RULE", RULES[0])
    docs = {"policy.yaml": text}
    old = load_documents(docs)
    edited = {"policy.yaml": text.replace("other: [198.18.8.0/24]", "other: ['2001:db8::2']")}
    assert load_edit(docs, old, edited, groups=True) is not None


def test_the_index_goes_with_group_edits_and_not_with_rule_edits() -> None:
    text = BASE.replace("RULE", RULES[1])
    docs = {"policy.yaml": text}
    old = load_documents(docs)
    assert vms_naming(old, {"group:gholder"}) == ["fam"]
    grouped_docs = {"policy.yaml": text.replace("other: [198.18.8.0/24]", "other: [198.18.8.0/24, 198.18.9.1]")}
    grouped = load_edited(grouped_docs, (docs, old))
    assert grouped.__dict__.get(MEMO) is old.__dict__[MEMO]  # the rules did not change
    ruled = load_edited({"policy.yaml": grouped_docs["policy.yaml"].replace("from: group:other, tcp: 22", "from: group:gholder, tcp: 22")}, (grouped_docs, grouped))
    assert MEMO not in ruled.__dict__
    assert vms_naming(ruled, {"group:gholder"}) == ["plain", "fam"]
