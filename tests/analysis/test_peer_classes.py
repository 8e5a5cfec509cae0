"""analysis/peerclass.py: the diff's peers of one shape, reduced once for all of
them, give exactly the diff of each peer reduced on its own.

* Property: random policies (policygen's, dressed as for reach's grouping: NIC
  scopes, enable switches, default logging, security groups, zone defaults) with
  the rules of one or two VMs or zones edited, and random changes of any kind: the
  same JSON with classes (`PEER_CLASSES`) and without; for rule edits also the same
  as the whole comparison with every side built whole.
* Synthetic clusters (bench/synth.py: many peers of one shape, the case classes are
  for): rules open to everyone edited, the same JSON both ways, and far fewer
  reductions than peers.
* A step naming one peer's address (a network rule from it) keeps that peer apart
  from the rest of its shape; a peer with an own rule that meets the packets is
  not classed (one whose rules miss them is); without the check of what a
  reduction read, the diff is wrong.
* Shapes shared (`SHARE_SHAPES`): a chain of rule commits works each peer's shape
  out once (three times without), with the plain diffs; a change beyond rules (a
  peer's zone) shares nothing, and sharing anyway makes the diff wrong.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from tests.analysis.diffknobs import declined, diff_knobs
from tests.analysis.test_diff import Pair, pairs
from tests.analysis.test_reach_grouping import dressed
from tests.analysis.test_shortcuts import rule_edit_pairs
from zonewall.analysis import peerclass
from zonewall.analysis.diff import diff_policies
from zonewall.policy.loader import load_policy_text

sys.path.insert(0, str(Path(__file__).parents[2] / "bench"))
import synth

FEW = {"SHARED_PEERS_FROM": 10**9}  # every endpoint takes the path with PeerSides (classes apply there)


def _diff(old_text: str, new_text: str, **knobs: Any) -> str:
    with diff_knobs(**knobs):
        return json.dumps(diff_policies(load_policy_text(old_text), load_policy_text(new_text)).to_json(), sort_keys=True)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(rule_edit_pairs(dressed()))
def test_classed_peers_give_the_diff_of_each_peer_alone_after_a_rule_edit(pair: tuple[str, str, str]) -> None:
    old_text, new_text, what = pair
    classed = _diff(old_text, new_text, **FEW, PEER_CLASSES=True)
    assert classed == _diff(old_text, new_text, **FEW, PEER_CLASSES=False), what
    whole = _diff(old_text, new_text, **FEW, rule_edits=declined, GROUPED_PEERS=False, REUSE_SAME_SIDES=False)
    assert classed == whole, what


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(pairs())
def test_classed_peers_give_the_diff_of_each_peer_alone_after_any_change(pair: Pair) -> None:
    assert _diff(pair.old, pair.new, **FEW, PEER_CLASSES=True) == _diff(pair.old, pair.new, **FEW, PEER_CLASSES=False), pair.changes


def _edited(text: str, vm: str, old: str, new: str) -> str:
    """`text` with the first rule `old` of `vm` replaced by `new`."""
    start = text.index(f"\n  {vm}:\n")
    at = text.index(old, start)
    return text[:at] + new + text[at + len(old):]


@pytest.mark.parametrize(("vm", "old", "new"), [
    ("vm5", "{direction: in, action: reject, tcp: 25}", "{direction: in, action: accept, tcp: 21000}"),  # bench/commit.py's vm-any
    ("vm9", "{direction: in, action: accept, service: https}", "{direction: in, action: drop, service: https}"),
    ("vm2", "{direction: out, action: accept, to: group:ntp, udp: 123}", "{direction: out, action: drop, udp: 123}"),  # to everyone
])
def test_a_rule_open_to_everyone_in_a_synthetic_cluster(vm: str, old: str, new: str, monkeypatch: pytest.MonkeyPatch) -> None:
    vms = 80  # on 2 nodes in 4 zones: ~30 shapes (network, node, zone), and peers with own rules meeting the endpoint
    text = synth.policy_text(vms, nodes=2, zones=4)
    edited = _edited(text, vm, old, new)
    reductions: list[object] = []
    shared = peerclass.PeerSides.shared

    def counted(self: Any, owner: Any, signature: Any, own: Any) -> Any:
        reductions.append(owner)
        return shared(self, owner, signature, own)

    monkeypatch.setattr(peerclass.PeerSides, "shared", counted)
    classed = _diff(text, edited, **FEW, PEER_CLASSES=True)
    assert not json.loads(classed)["identical"]
    assert len(reductions) < vms // 2  # most peers took their class's side
    assert classed == _diff(text, edited, **FEW, PEER_CLASSES=False)


APART = """\
version: 1
hosts:
  n1: {address: [192.168.1.1]}
networks:
  lan:
    bridge: br0
    subnets: [10.0.0.0/24]
    rules: [NETWORK_RULE]
vms:
  a:
    host: n1
    nics: [{network: lan, ips: [10.0.0.10]}]
    rules: [RULE_A]
  b: {host: n1, nics: [{network: lan, ips: [10.0.0.11]}]}
  c: {host: n1, nics: [{network: lan, ips: [10.0.0.12]}]}
  d: {host: n1, nics: [{network: lan, ips: [10.0.0.13]}]}
  e:
    host: n1
    nics: [{network: lan, ips: [10.0.0.14]}]
    rules: [{direction: out, action: drop, to: vm:a, tcp: 8080}]
"""


def _apart(rule_a: str, network_rule: str = "{action: drop, from: 10.0.0.12, tcp: 8080}") -> str:
    return APART.replace("NETWORK_RULE", network_rule).replace("RULE_A", rule_a)


def _opened_to_a(result: str) -> set[str]:
    return {peer for row in json.loads(result)["flows"] if row["change"] == "opened" and row["to"] == ["vm:a"] for peer in row["from"]}


CLOSED, OPEN = "{direction: in, action: drop, tcp: 8080}", "{direction: in, action: accept, tcp: 8080}"


def test_a_peer_named_by_a_step_stays_apart_from_its_shape() -> None:
    """b, c and d have one shape (e too, but for its own rule); a network rule drops
    c's tcp/8080 (a step naming c's address): opening a's tcp/8080 to everyone opens
    it to b and d, not to c."""
    old, new = _apart(CLOSED), _apart(OPEN)
    classed = _diff(old, new, **FEW)
    assert {"vm:b", "vm:d"} <= _opened_to_a(classed)
    assert not {"vm:c", "vm:e"} & _opened_to_a(classed)
    assert classed == _diff(old, new, **FEW, PEER_CLASSES=False)


def test_a_peer_with_its_own_rule_meeting_the_packets_is_not_classed() -> None:
    """Without the network rule b, c, d and e have one shape and nothing names an
    address: e's own rule (drop tcp/8080 to a) keeps it apart; a rule of e's that
    misses the packets (tcp/9090) does not."""
    old, new = _apart(CLOSED, "{action: accept, tcp: 1}"), _apart(OPEN, "{action: accept, tcp: 1}")
    classed = _diff(old, new, **FEW)
    assert _opened_to_a(classed) >= {"vm:b", "vm:c", "vm:d"} and "vm:e" not in _opened_to_a(classed)
    assert classed == _diff(old, new, **FEW, PEER_CLASSES=False)
    missing = lambda text: text.replace("to: vm:a, tcp: 8080", "to: vm:a, tcp: 9090")
    assert _opened_to_a(_diff(missing(old), missing(new), **FEW)) >= {"vm:b", "vm:c", "vm:d", "vm:e"}


def test_without_the_check_of_what_a_reduction_read_the_named_peer_is_wrong(monkeypatch: pytest.MonkeyPatch) -> None:
    """The negative case: a class whose first reduction read its peer's addresses
    taken for every peer of the shape gives c the side of b (or b that of c)."""
    old, new = _apart(CLOSED), _apart(OPEN)
    right = _diff(old, new, **FEW)

    class Unread(peerclass.PeerSpace):
        @property
        def read(self) -> bool:
            return False

        @read.setter
        def read(self, _value: bool) -> None:
            pass

    monkeypatch.setattr("zonewall.analysis.differ.PeerSpace", Unread)
    wrong = _diff(old, new, **FEW)
    assert _opened_to_a(wrong) != _opened_to_a(right)



BOTH_WAYS = """\
version: 1
hosts:
  n1: {address: [192.168.1.1]}
networks:
  lan: {bridge: br0, subnets: [10.0.0.0/24]}
vms:
  a:
    host: n1
    nics: [{network: lan, ips: [10.0.0.10]}]
    rules: [{direction: in, action: reject, tcp: PORT}, {direction: out, action: reject, tcp: PORT}]
  b: {host: n1, nics: [{network: lan, ips: [10.0.0.11]}], default: {in: drop, out: accept}}
  c: {host: n1, nics: [{network: lan, ips: [10.0.0.12]}], default: {in: accept, out: accept}}
"""


def test_a_peers_shape_is_its_own_for_each_direction() -> None:
    """a's in and out rules edited: its peers b and c send alike (both default out
    accept) but receive apart (b drops, c accepts). A peer's shape is kept on the
    analyzer (a zone's classes of endpoints ask it of the same peers), per direction:
    what b and c share as senders must not make them one class as receivers."""
    old, new = BOTH_WAYS.replace("PORT", "25"), BOTH_WAYS.replace("PORT", "2525")
    classed = _diff(old, new, **FEW)
    assert classed == _diff(old, new, **FEW, PEER_CLASSES=False)
    to_c = {(row["change"], tuple(row["services"])) for row in json.loads(classed)["flows"] if row["from"] == ["vm:a"] and "vm:c" in row["to"]}
    assert ("opened", ("tcp 25",)) in to_c  # c accepts by default: a's tcp/25 out, no longer rejected, reaches it
    to_b = {(row["change"], tuple(row["services"])) for row in json.loads(classed)["flows"] if row["from"] == ["vm:a"] and "vm:b" in row["to"]}
    assert ("opened", ("tcp 25",)) not in to_b  # b drops by default


# -- shapes shared along a chain of commits (peerclass.share_shapes) ----------------------


def _counted_shapes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, int | None]]:
    """Every peer shape worked out (not found in a memo), as it happens."""
    made: list[tuple[str, str, int | None]] = []
    real = peerclass.ClassedSides._shape
    monkeypatch.setattr(peerclass.ClassedSides, "_shape", lambda self, owner: made.append(owner) or real(self, owner))
    return made


@pytest.mark.parametrize("share", [True, False])
def test_a_chain_of_rule_commits_works_out_each_peers_shape_once(share: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """The controller's commits: each policy made from the previous one, each diff's old
    side the previous diff's new side (kept.py). A rule open to everyone edited three
    times in a row: its 59 peers' shapes are worked out by the first diff only, as
    long as the new side reads and adds in the old side's memo; each side on its own,
    every diff asks them of its old side again (the kept one had them asked of
    neither: those peers' sides are the same in both policies, reduced on the old)."""
    from bench.commit import edits
    from tests.analysis.test_group_commits import _diff_chain, _plain_chain

    lines = synth.policy_text(60, nodes=3).split("\n")
    texts = ["\n".join(lines)]
    for k in range(3):
        edits()["vm-any"](lines, k)
        texts.append("\n".join(lines))
    made = _counted_shapes(monkeypatch)
    with diff_knobs(**FEW, SHARE_SHAPES=share):
        fast = _diff_chain(texts)
    made = list(made)  # (the plain diffs below ask again: not counted)
    assert fast == _plain_chain(texts)  # the same diffs either way
    per_peer: dict[tuple[str, str, int | None], int] = {}
    for owner in made:
        per_peer[owner] = per_peer.get(owner, 0) + 1
    assert len(per_peer) >= 50  # (the shape is per direction: one here, the edited rule's)
    if share:
        assert max(per_peer.values()) == 1, sorted(owner for owner, n in per_peer.items() if n > 1)
    else:
        assert min(per_peer.values()) == 3  # once per diff


def test_shapes_are_not_shared_when_more_than_rules_differ() -> None:
    """b's zone changes (its shape with it) besides a's rule: no shortcut of rule or
    group edits applies, and each side reads its own shapes. Shared anyway, the new
    side would class b as the old side's zone did: the diff must still be the one
    each peer alone gives."""
    old = ZONE_MOVE.replace("BZONE", "open").replace("PORT", "25")
    new = ZONE_MOVE.replace("BZONE", "shut").replace("PORT", "2525")
    shared = _diff(old, new, **FEW)
    assert shared == _diff(old, new, **FEW, PEER_CLASSES=False)
    rows = json.loads(shared)["flows"]
    assert any(row["from"] == ["vm:a"] and "vm:b" in row["to"] and row["change"] == "closed" for row in rows), rows  # b's new zone drops


ZONE_MOVE = """
version: 1
zones:
  open: {default: {in: accept, out: accept}}
  shut: {default: {in: drop, out: accept}}
networks:
  lan: {bridge: br-lan, subnets: [10.0.0.0/24]}
hosts:
  n1: {address: 192.0.2.1}
vms:
  a:
    host: n1
    zone: open
    nics: [{network: lan, ips: [10.0.0.1]}]
    rules:
      - {direction: out, action: reject, tcp: PORT}
  b:
    host: n1
    zone: BZONE
    nics: [{network: lan, ips: [10.0.0.2]}]
  c:
    host: n1
    zone: open
    nics: [{network: lan, ips: [10.0.0.3]}]
"""


PIECES = """\
version: 1
hosts:
  n1: {address: [192.168.1.1]}
networks:
  lan: {bridge: br0, subnets: [10.0.0.0/24]}
zones:
  web:
    rules: [{direction: in, action: accept, tcp: PORT}]
vms:
  w1: {host: n1, zone: web, nics: [{network: lan, ips: [10.0.0.10]}]}
  w2: {host: n1, zone: web, nics: [{network: lan, ips: [10.0.0.11]}]}
  w3: {host: n1, zone: web, nics: [{network: lan, ips: [10.0.0.12]}]}
  b: {host: n1, nics: [{network: lan, ips: [10.0.0.20]}]}
  c: {host: n1, nics: [{network: lan, ips: [10.0.0.21]}]}
  p1:
    host: n1
    nics: [{network: lan, ips: [10.0.0.22]}]
    rules: [{direction: out, action: reject, tcp: 30001}, {direction: out, action: accept, udp: 53}]
  p2:
    host: n1
    nics: [{network: lan, ips: [10.0.0.23]}]
    rules: [{direction: out, action: reject, tcp: 30000}, {direction: out, action: accept, udp: 53}]
"""


def _senders(result: str, change: str) -> set[str]:
    return {peer for row in json.loads(result)["flows"] if row["change"] == change for peer in row["from"]}


def test_a_peer_whose_own_rule_meets_one_piece_of_a_zone_edit_is_kept_apart_in_that_piece() -> None:
    """A zone rule moved from tcp/30000 to tcp/30001: the zone's VMs are one class
    with two pieces (30000 closed, 30001 opened). p1's own rule open to everyone
    meets the opened piece only, p2's the closed one; their `dns` rules meet
    neither. Each is classed with b and c in the piece its rule misses, and kept
    apart in the other: a peer is taken for its shape in every piece (`plain`)
    only when its rules miss them all."""
    old, new = PIECES.replace("PORT", "30000"), PIECES.replace("PORT", "30001")
    classed = _diff(old, new, **FEW)
    assert _senders(classed, "closed") >= {"vm:b", "vm:c", "vm:p1"} and "vm:p2" not in _senders(classed, "closed")
    assert _senders(classed, "opened") >= {"vm:b", "vm:c", "vm:p2"} and "vm:p1" not in _senders(classed, "opened")
    assert classed == _diff(old, new, **FEW, PEER_CLASSES=False)
