"""`reach` with its peers grouped (analysis/peers.py) answers exactly what it
answers with every peer's side built whole and reduced (`grouped=False`).

On random policies (tests/analysis/policygen.py: nat/routed/isolated networks,
port forwards, groups, guard filters that drop replies, network rules), dressed
further with what the grouping treats specially: rules scoped to one NIC (`nic:`),
NICs and VMs with their firewall off, a VM's own default logging, a security group
referenced by a VM, and a zone default. Every endpoint (each VM NIC, each node, an
outside address), both directions: the same JSON; and peer by peer, the side
`PeerSides.reduced` makes from shared pieces equals the one built whole.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.analysis.policygen import policies
from zonewall.analysis import space as s
from zonewall.analysis.chains import essentials_region
from zonewall.analysis.endpoints import Endpoint
from zonewall.analysis.engine import Analyzer
from zonewall.analysis.peers import PeerSides, PeerSpace
from zonewall.analysis.reach import endpoint_addresses, expand, reach
from zonewall.policy.addresses import AddressSet
from zonewall.policy.loader import load_policy_text

sys.path.insert(0, str(Path(__file__).parents[2] / "bench"))
import synth


@st.composite
def dressed(draw: st.DrawFn) -> str:
    """A generated policy with NIC scopes, enable switches, default logging and a security group."""
    text, _desc = draw(policies())
    doc = yaml.safe_load(text)
    vms: dict[str, Any] = doc.get("vms", {})
    if draw(st.booleans()):
        doc["security_groups"] = {"sg1": {"rules": [{"direction": "in", "action": "accept", "tcp": [80, 443]}, {"direction": "out", "action": "drop", "udp": 53}]}}
    for body in vms.values():
        nics = len(body["nics"])
        for rule in body.get("rules", []):
            if draw(st.integers(0, 3)) == 0:
                rule["nic"] = [draw(st.integers(0, nics - 1))]
        if "security_groups" in doc and draw(st.integers(0, 2)) == 0:
            body.setdefault("rules", []).insert(0, {"security_group": "sg1"})
        if draw(st.integers(0, 5)) == 0:
            body["nics"][draw(st.integers(0, nics - 1))]["firewall"] = False
        if draw(st.integers(0, 7)) == 0:
            body["firewall"] = False
        if draw(st.integers(0, 3)) == 0:
            body["log"] = {draw(st.sampled_from(["in", "out"])): draw(st.sampled_from(["nolog", "info"]))}
    for zone in doc.get("zones", {}).values():
        if draw(st.integers(0, 3)) == 0:
            zone["default"] = {"in": "accept", "out": "drop"}
    return yaml.safe_dump(doc, sort_keys=False)


def _endpoints(analyzer: Analyzer) -> list[str]:
    policy = analyzer.policy
    return [f"vm:{vm}" for vm in policy.doc.vms] + [f"host:{h}" for h in policy.doc.hosts] + ["outside:203.0.113.10", "outside:2001:db8:ffff::10"]


def _json(analyzer: Analyzer, ref: str, direction: str, grouped: bool) -> str:
    return json.dumps([r.to_json() for r in reach(analyzer, ref, direction, grouped=grouped)], sort_keys=True)  # type: ignore[arg-type]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dressed())
def test_grouped_reach_answers_what_ungrouped_reach_answers(text: str) -> None:
    policy = load_policy_text(text)
    for ref in _endpoints(Analyzer(policy)):
        for direction in ("to", "from"):
            # fresh analyzers: the grouped run must not lean on what the other built
            assert _json(Analyzer(policy), ref, direction, True) == _json(Analyzer(policy), ref, direction, False), (ref, direction)


def _sides(analyzer: Analyzer, ref: str, direction: str) -> tuple[PeerSides, list[tuple[tuple[str, str, int | None], tuple[int, ...], PeerSpace]]]:
    """reach's own setup for one endpoint: the pieces its side accepts, and each peer
    with its signature (as reach_endpoint makes them)."""
    (endpoint, nic), *_ = expand(analyzer, ref)
    own_dim, peer_dim = (s.DST, s.SRC) if direction == "to" else (s.SRC, s.DST)
    own = endpoint_addresses(analyzer, endpoint, nic)
    base = s.subtract(s.universe(), essentials_region())
    base = tuple(b for b in (s.box_restrict(box, own_dim, own.get(box[s.FAM][0][0], ())) for box in base) if b is not None)
    side = analyzer.receiver_stages(endpoint, nic) if direction == "to" else analyzer.sender_stages(endpoint, nic)
    pieces = [region for region, outcome in analyzer.run(side, base) if outcome.verdict == "accept"]
    mine = (endpoint.kind, endpoint.name, nic)
    sides = PeerSides(analyzer, mine, "receiver" if direction == "to" else "sender", AddressSet(own.get(4, ()), own.get(6, ())), pieces, peer_dim)
    signatures: dict[tuple[str, str, int | None], set[int]] = {}
    for index, region in enumerate(pieces):
        for family in (4, 6):
            values = s.family_projection(region, peer_dim, family)
            for _address, owner in analyzer.directory.owned_within(family, values) if values else ():
                signatures.setdefault(owner, set()).add(index)
    peers = []
    for (kind, name, peer_nic), indexes in signatures.items():
        if (kind, name) != (endpoint.kind, endpoint.name):
            signature = tuple(sorted(indexes))
            addresses = endpoint_addresses(analyzer, Endpoint(kind, name), peer_nic)  # type: ignore[arg-type]
            peers.append(((kind, name, peer_nic), signature, PeerSpace(pieces, signature, addresses, peer_dim)))
    return sides, peers


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dressed())
def test_each_peer_side_from_shared_pieces_equals_the_side_built_whole(text: str) -> None:
    policy = load_policy_text(text)
    analyzer = Analyzer(policy)
    for ref in _endpoints(analyzer):
        for direction in ("to", "from"):
            sides, peers = _sides(analyzer, ref, direction)
            for owner, signature, own in peers:
                shared = sides._reduced(owner, signature, own)
                if shared is not None:  # None: it takes the general way itself
                    assert shared == sides.reduced_slowly(owner, signature, own), (ref, direction, owner)


BRIDGED_AND_ROUTED = """
version: 1
settings: {default: {in: drop, out: accept}}
hosts:
  node1: {address: [192.168.100.11], uplink: eth0}
networks:
  lan: {bridge: vmbr0, subnets: [10.1.0.0/24]}
  natnet: {bridge: virbr1, subnets: [10.9.0.0/24], mode: nat}
zones:
  web: {rules: [{direction: in, action: accept, tcp: 443}]}
vms:
  a: {host: node1, zone: web, nics: [{network: lan, mac: "52:54:00:00:00:01", ips: [10.1.0.10]}], filters: [clean-traffic],
      rules: [{direction: in, action: accept, tcp: 8443}]}
  b: {host: node1, zone: web, nics: [{network: lan, mac: "52:54:00:00:00:02", ips: [10.1.0.11]}], filters: [clean-traffic],
      rules: [{direction: out, action: accept, to: vm:a, tcp: 8443}]}
  c: {host: node1, zone: web, nics: [{network: lan, mac: "52:54:00:00:00:03", ips: [10.1.0.12]}], filters: [clean-traffic]}
  r: {host: node1, zone: web, nics: [{network: natnet, ips: [10.9.0.10]}]}
"""


def test_bridged_peers_share_their_side_and_a_routed_one_takes_the_general_way() -> None:
    analyzer = Analyzer(load_policy_text(BRIDGED_AND_ROUTED))
    sides, peers = _sides(analyzer, "vm:a", "to")
    by_owner = {owner[1]: (owner, signature, own) for owner, signature, own in peers}
    b, c = (sides._reduced(*by_owner[name]) for name in ("b", "c"))
    assert b is not None and c is not None
    assert b == sides.reduced_slowly(*by_owner["b"]) and c == sides.reduced_slowly(*by_owner["c"])
    # b's own rule to a (tcp 8443) is in its side; c has none: different groups
    assert b[1] != c[1]
    assert [step.ref.owner for step in b[0][-1].steps if step.ref is not None and step.ref.level == "vm"] == ["b"]  # type: ignore[union-attr]
    assert not [step for step in c[0][-1].steps if step.ref is not None and step.ref.level == "vm"]  # type: ignore[union-attr]
    assert sides._reduced(*by_owner["r"]) is None  # routed: the general way
    assert sides.reduced(*by_owner["r"]) == sides.reduced_slowly(*by_owner["r"])


@pytest.mark.parametrize("direction", ["to", "from"])
def test_reach_at_1000_synthetic_vms_is_the_same_grouped_or_not(direction: str) -> None:
    """The bench's policy at 1,000 VMs (bench/synth.py, 50 zones, two nodes, every
    kind of rule): grouped reach gives the JSON the per-peer way gives."""
    policy = load_policy_text(synth.policy_text(1000, nodes=2, zones=50, seed=1, dataplane_extras=True))
    grouped = _json(Analyzer(policy), "vm:vm17", direction, True)
    assert grouped == _json(Analyzer(policy), "vm:vm17", direction, False)
    assert len(json.loads(grouped)[0]["rows"]) > 3


# -- the index of own rules (policy/ownrules.OwnRuleIndex) -------------------------------------


def _candidates(sides: PeerSides, vm: str, indexed: bool) -> list[str] | None:
    found = sides._indexed_candidates(vm) if indexed else sides._candidates(vm)
    return None if found is None else [candidate[0].id for candidate in found]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dressed())
def test_the_index_finds_each_vms_rules_that_a_scan_of_its_rules_finds(text: str) -> None:
    """For every endpoint and direction, each VM's own rules that can meet the
    endpoint, from the policy's index, are those a scan of the VM's rules finds
    (in order; None for a VM that references a security group)."""
    policy = load_policy_text(text)
    analyzer = Analyzer(policy)
    for ref in _endpoints(analyzer):
        for direction in ("to", "from"):
            sides, _peers = _sides(analyzer, ref, direction)
            for vm in policy.doc.vms:
                assert _candidates(sides, vm, True) == _candidates(sides, vm, False), (ref, direction, vm)


EVERY_KIND = """
version: 1
settings: {default: {in: drop, out: accept}}
hosts:
  node1: {address: [192.168.100.11], uplink: eth0}
networks:
  lan: {bridge: vmbr0, subnets: [10.1.0.0/24]}
  other: {bridge: vmbr1, subnets: [10.2.0.0/24]}
groups:
  ga: [vm:a]
  gb: [vm:b]
zones:
  za: {}
  zb: {}
vms:
  a: {host: node1, zone: za, nics: [{network: lan, mac: "52:54:00:00:00:01", ips: [10.1.0.10]}]}
  b: {host: node1, zone: zb, nics: [{network: other, mac: "52:54:00:00:00:02", ips: [10.2.0.11]}],
      rules: [{direction: in, action: accept, from: vm:a, tcp: 1},
              {direction: in, action: accept, from: vm:b, tcp: 2},
              {direction: in, action: accept, from: zone:za, tcp: 3},
              {direction: in, action: accept, from: zone:zb, tcp: 4},
              {direction: in, action: accept, from: group:ga, tcp: 5},
              {direction: in, action: accept, from: group:gb, tcp: 6},
              {direction: in, action: accept, from: network:lan, tcp: 7},
              {direction: in, action: accept, from: network:other, tcp: 8},
              {direction: in, action: accept, from: 10.1.0.10/32, tcp: 9},
              {direction: in, action: accept, from: 10.1.0.11/32, tcp: 10},
              {direction: in, action: accept, tcp: 11},
              {direction: in, action: accept, from: [10.1.0.0/24, "!10.1.0.11"], tcp: 12},
              {direction: in, action: accept, from: [10.1.0.0/24, "!10.1.0.10"], tcp: 13},
              {direction: out, action: accept, to: vm:a, tcp: 14},
              {direction: in, action: accept, from: [vm:c, vm:a], tcp: 15}]}
  c: {host: node1, zone: zb, nics: [{network: other, mac: "52:54:00:00:00:03", ips: [10.2.0.12]}]}
"""
KINDS = {"vm": ("vm:",), "zone": ("zone:",), "group": ("group:",), "network": ("network:",), "address": ("1", "2", "3", "4", "5", "6", "7", "8", "9")}


def test_the_index_holds_every_kind_of_reference_and_a_mutant_missing_one_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """vm:a's peer b names a (or not) by every kind of reference: the index finds
    the rules that name it (1, 3, 5, 7, 9, 11, 12, 15) and not the others; an index
    that loses a kind of reference (or the rules open to everyone, or the lists with
    an exclusion) no longer answers what the scan does."""
    from zonewall.analysis import peers
    from zonewall.policy.ownrules import OwnRuleIndex

    policy = load_policy_text(EVERY_KIND)
    sides, _peers = _sides(Analyzer(policy), "vm:a", "from")
    ports = {ref.id: int(ref.rule.tcp[0]) for ref in policy.rules_of("vm", "b")}  # type: ignore[index]
    found = _candidates(sides, "b", True)
    assert found == _candidates(sides, "b", False)
    assert [ports[rule_id] for rule_id in found or ()] == [1, 3, 5, 7, 9, 11, 12, 15]

    real = peers.own_rule_index

    def mutant(drop: str) -> Any:
        def index(policy: Any, direction: str) -> OwnRuleIndex:
            made = real(policy, direction)
            lost = OwnRuleIndex.__new__(OwnRuleIndex)
            lost.__dict__.update(made.__dict__)
            if drop == "everyone":
                lost.everyone = {}
            elif drop == "excluding":
                lost.excluding = []
            else:
                lost.by_text = {text: entries for text, entries in made.by_text.items() if not text.startswith(KINDS[drop])}
            return lost
        return index

    for drop in (*KINDS, "everyone", "excluding"):
        monkeypatch.setattr(peers, "own_rule_index", mutant(drop))
        sides, _peers = _sides(Analyzer(policy), "vm:a", "from")
        assert _candidates(sides, "b", True) != _candidates(sides, "b", False), drop
    monkeypatch.setattr(peers, "own_rule_index", real)
    sides, _peers = _sides(Analyzer(policy), "vm:a", "from")
    assert _candidates(sides, "b", True) == _candidates(sides, "b", False)


def test_reach_takes_the_index_a_loaded_policy_has_and_scans_an_edited_one_without_building_it() -> None:
    """A loaded policy has its own-rule index and reach uses it; a policy made without
    the loader's indexes (as an edit's) is scanned, and nothing builds the index for
    one query; both answer the same."""
    from zonewall.policy.ownrules import has_own_rule_index
    from zonewall.policy.resolve import Policy

    loaded = load_policy_text(EVERY_KIND)
    bare = Policy(loaded.doc, loaded.source)
    assert has_own_rule_index(loaded) and not has_own_rule_index(bare)
    assert _sides(Analyzer(loaded), "vm:a", "from")[0].index is True
    assert _sides(Analyzer(bare), "vm:a", "from")[0].index is False
    for direction in ("to", "from"):
        assert _json(Analyzer(bare), "vm:a", direction, True) == _json(Analyzer(loaded), "vm:a", direction, True)
    assert not has_own_rule_index(bare)


def test_an_index_carried_over_moved_lines_finds_what_a_scan_finds() -> None:
    """An edit that adds a rule line moves every later rule's line and derived id; the
    index it carries files rules by owner and place, and PeerSides takes the rule at
    that place now: the candidates (ids included) are the scan's. The filed refs
    themselves hold the older ids (so reading them as filed would be wrong)."""
    from zonewall.policy.documents import load_documents
    from zonewall.policy.incremental import load_edit
    from zonewall.policy.ownrules import has_own_rule_index, own_rule_index

    text = synth.policy_text(12, nodes=2)
    lines = text.split("\n")
    at = lines.index("    rules:", lines.index("  vm1:")) + 1
    moved = "\n".join(lines[:at] + ["      - {direction: out, action: accept, to: vm:vm5, tcp: 4444}"] + lines[at:])
    new = load_edit({"policy.yaml": text}, load_documents({"policy.yaml": text}), {"policy.yaml": moved}, lines=True)
    assert new is not None and has_own_rule_index(new)
    analyzer = Analyzer(new)
    for ref in ("vm:vm5", "vm:vm9"):
        for direction in ("to", "from"):
            sides, _peers = _sides(analyzer, ref, direction)
            assert sides.index
            for vm in new.doc.vms:
                assert _candidates(sides, vm, True) == _candidates(sides, vm, False), (ref, direction, vm)
    filed = [r for refs in own_rule_index(new, "in").everyone.values() for r in refs if r.owner == "vm9"]
    assert filed and all(r.id != new.rules_of("vm", "vm9")[r.index].id for r in filed)
