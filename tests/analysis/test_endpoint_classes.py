"""analysis/endpointclass.py: endpoints whose changed sides the peers cannot tell
apart, compared with the peers once for all of them, give exactly the diff of each
endpoint compared on its own.

* Property: random policies with the rules of one or two VMs or zones edited, and
  random changes of any kind, every diff on the many-endpoints path
  (`SHARED_PEERS_FROM` 0): the same JSON with classes (`ENDPOINT_CLASSES`) and
  without.
* A synthetic cluster (bench/synth.py) with a zone rule edited that has no `to:`
  (bench/commit.py's zone kind: every zone VM against every peer): the same JSON,
  and the peers compared far fewer times than once per endpoint; their sides, alike
  but for their rules' names (analysis/peertemplate.py, `PEER_TEMPLATES`), run far
  fewer times than once per peer, and the same JSON without templates.
* Negatives: a zone VM whose own rule decides part of the changed packets is kept
  out of the others' class, and its rows are its own; zone VMs are each other's
  peers but never their own.
* Classes alike but for which peers their own earlier rules took out (`UNITED_CLASSES`,
  `endpointclass.united`): random zones whose VMs drop, reject or accept random peers
  before a zone rule open to everyone that is edited; the same JSON united, apart and
  without classes, and the classes do unite.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.analysis.test_diff import Pair, pairs
from tests.analysis.test_peer_classes import _diff
from tests.analysis.test_reach_grouping import dressed
from tests.analysis.test_shortcuts import rule_edit_pairs
from zonewall.analysis import differ as differ_module

sys.path.insert(0, str(Path(__file__).parents[2] / "bench"))
import synth

MANY = {"SHARED_PEERS_FROM": 0}  # every diff compares its endpoints on the many-endpoints path


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(rule_edit_pairs(dressed()))
def test_classes_of_endpoints_give_the_diff_of_each_endpoint_alone_after_a_rule_edit(pair: tuple[str, str, str]) -> None:
    old_text, new_text, what = pair
    classed = _diff(old_text, new_text, **MANY, ENDPOINT_CLASSES=True)
    assert classed == _diff(old_text, new_text, **MANY, ENDPOINT_CLASSES=False), what
    assert classed == _diff(old_text, new_text, **MANY, ENDPOINT_CLASSES=True, PEER_TEMPLATES=False), what


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(pairs())
def test_classes_of_endpoints_give_the_diff_of_each_endpoint_alone_after_any_change(pair: Pair) -> None:
    classed = _diff(pair.old, pair.new, **MANY, ENDPOINT_CLASSES=True)
    assert classed == _diff(pair.old, pair.new, **MANY, ENDPOINT_CLASSES=False), pair.changes
    assert classed == _diff(pair.old, pair.new, **MANY, ENDPOINT_CLASSES=True, PEER_TEMPLATES=False), pair.changes


ZONE_RULE = "{direction: out, action: reject, tcp: 25}"  # bench/commit.py's zone edit: no `to:`


def _zone_edit(text: str, new: str) -> str:
    start = text.index("\nzones:\n")
    at = text.index(ZONE_RULE, start)
    return text[:at] + new + text[at + len(ZONE_RULE):]


def _count_peer_runs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many endpoints each comparison with the peers stood for."""
    runs: list[int] = []
    compare = differ_module.Differ._peers

    def counted(self: Any, mine: Any, *args: Any, **kwargs: Any) -> Any:
        runs.append(len(mine.members))
        return compare(self, mine, *args, **kwargs)

    monkeypatch.setattr(differ_module.Differ, "_peers", counted)
    return runs


def test_a_zone_rule_open_to_everyone_in_a_synthetic_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    text = synth.policy_text(120, nodes=3, zones=3)  # 40 VMs in each zone
    edited = _zone_edit(text, "{direction: out, action: reject, tcp: 30000}")
    runs = _count_peer_runs(monkeypatch)
    classed = _diff(text, edited, ENDPOINT_CLASSES=True)
    flows = json.loads(classed)["flows"]
    assert any(f["change"] == "opened" for f in flows) and any(f["change"] == "changed" for f in flows)
    assert sum(runs) >= 40 and len(runs) <= 4, runs  # 40 zone VMs, in a handful of classes
    runs.clear()
    alone = _diff(text, edited, ENDPOINT_CLASSES=False)
    assert len(runs) >= 40 and set(runs) == {1}  # without classes: the peers once per endpoint
    assert classed == alone
    sides_run = _count_side_runs(monkeypatch)
    assert _diff(text, edited, ENDPOINT_CLASSES=True, PEER_TEMPLATES=False) == classed
    apart = len(sides_run)
    sides_run.clear()
    assert _diff(text, edited, ENDPOINT_CLASSES=True, PEER_TEMPLATES=True) == classed
    own_sides = 2 * 40  # each zone VM's own side, old and new, either way
    # each peer's own `reject tcp 25` made its side its own; as one template, far fewer runs
    assert apart - own_sides > 120 and len(sides_run) - own_sides < (apart - own_sides) // 2, (apart, len(sides_run))


def _count_side_runs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many times the engine ran a stage list in the old policy (a peer group's side, or an endpoint's)."""
    from zonewall.analysis.engine import Analyzer
    calls: list[int] = []
    run = Analyzer.run

    def counted(self: Any, stages: Any, space: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return run(self, stages, space, *args, **kwargs)

    monkeypatch.setattr(Analyzer, "run", counted)
    return calls


SMALL = """\
version: 1
hosts:
  n1: {address: [192.168.1.1]}
networks:
  lan:
    bridge: br0
    subnets: [10.0.0.0/24, "fd00::/64"]
settings:
  default: {in: drop, out: accept}
zones:
  web:
    rules:
      - {direction: out, action: reject, tcp: 25}
groups:
  mailers: [vm:mail]
vms:
%s
"""


def _vm(name: str, index: int, rules: str = "", more: str = "") -> str:
    body = f"  {name}:\n    host: n1\n    zone: web\n    nics: [{{network: lan, mac: \"52:54:00:00:00:{index:02x}\", ips: [10.0.0.{index}, {more}\"fd00::{index}\"]}}]\n"
    return body + (f"    rules:\n{rules}" if rules else "")


def _small(tcp: int) -> str:
    vms = [_vm(f"w{i}", 10 + i) for i in range(6)]
    # w9 lets its own rule decide mail to the mailers: its side differs from the other zone VMs'
    vms.append(_vm("w9", 9, "      - {direction: out, action: accept, to: group:mailers, tcp: 25}\n"))
    # w7's own rule decides 2525 from one of its two addresses: its changed pieces hold only the other
    vms.append(_vm("w7", 7, "      - {direction: out, action: accept, from: 10.0.0.27, tcp: 2525}\n", more="10.0.0.27, "))
    # w8 drops by default what the zone lets out: the same changed pieces as w0-w5, other outcomes
    vms.append(_vm("w8", 8).replace("    zone: web\n", "    zone: web\n    default: {in: drop, out: drop}\n"))
    vms.append(_vm("mail", 2, "      - {direction: in, action: accept, from: 10.0.0.27, tcp: 2525}\n      - {direction: in, action: accept, tcp: 25}\n"))
    return (SMALL % "".join(vms)).replace("tcp: 25}\ngroups", f"tcp: {tcp}}}\ngroups")


def test_an_endpoint_whose_own_rule_decides_is_its_own_class_and_no_endpoint_is_its_own_peer(monkeypatch: pytest.MonkeyPatch) -> None:
    old, new = _small(25), _small(2525)
    runs = _count_peer_runs(monkeypatch)
    classed = _diff(old, new, **MANY, ENDPOINT_CLASSES=True, UNITED_CLASSES=False)
    assert sorted(runs) == [1, 1, 1, 7], runs  # w0-w5 and mail (its own rules are inbound) together; w9, w7 and w8 alone
    runs.clear()
    united = _diff(old, new, **MANY, ENDPOINT_CLASSES=True)
    # w9's own rule took the mailers out of its changed pieces, nothing else: its class
    # and w0-w5's meet the peers once (diffswitches.UNITED_CLASSES); w7 and w8 stay apart
    assert sorted(runs) == [1, 1, 8], runs
    assert united == classed == _diff(old, new, **MANY, ENDPOINT_CLASSES=False)
    flows = json.loads(classed)["flows"]
    for flow in flows:  # zone VMs are each other's peers, never their own: a row of one VM never holds it twice
        assert len(flow["from"]) > 1 or not set(flow["from"]) & set(flow["to"]), flow
    zone = {f"vm:w{i}" for i in range(6)}
    shared = [f for f in flows if zone <= set(f["from"]) and zone <= set(f["to"])]
    assert shared and all(f["old"]["decided_by"]["stage"] in ("from out", "peer in") for f in shared), shared  # one row for the class, its own stage named for the role
    to_mail = [f for f in flows if f["to"] == ["vm:mail"] and "tcp 25" in f["services"]]
    assert to_mail and all("vm:w9" not in f["from"] for f in to_mail)  # w9 sent mail before and after: its own rule
    opened = [f for f in flows if f["change"] == "opened" and "tcp 25" in f["services"] and "vm:mail" in f["to"]]
    assert opened and {f"vm:w{i}" for i in range(6)} <= set().union(*(set(f["from"]) for f in opened))
    w7_to_mail = [f for f in flows if "vm:w7" in f["from"] and "vm:mail" in f["to"] and "tcp 2525" in f["services"]]
    assert w7_to_mail and all(f["change"] == "changed" for f in w7_to_mail), w7_to_mail  # from 10.0.0.7 (drop -> reject), never "closed" (10.0.0.27's own rule)
    w8_to_mail = [f for f in flows if "vm:w8" in f["from"] and "vm:mail" in f["to"] and "tcp 25" in f["services"]]
    assert w8_to_mail and all(f["change"] == "changed" for f in w8_to_mail), w8_to_mail  # reject -> its default's drop, not "opened"
    between = [f for f in flows if "tcp 2525" in f["services"] and "vm:w1" in f["from"]]
    assert between and "vm:w2" in set().union(*(set(f["to"]) for f in between))  # w1 -> w2 on 2525 changed (drop -> reject)


CUT = """\
version: 1
settings:
  default: {in: drop, out: drop}
hosts:
  n1: {address: [192.168.1.1]}
networks:
  lan: {bridge: br0, subnets: [10.0.0.0/24]}
zones:
  web:
    rules:
      - {id: z-in, direction: in, action: ACTION}
      - {id: z-ssh, direction: out, action: accept, to: vm:w1, service: ssh}
      - {id: z-out, direction: out, action: accept, tcp: 1-1000}
vms:
  w1: {host: n1, zone: web, nics: [{network: lan, mac: "52:54:00:00:00:01", ips: [10.0.0.1]}]}
  w2: {host: n1, zone: web, nics: [{network: lan, mac: "52:54:00:00:00:02", ips: [10.0.0.2]}]}
  w3: {host: n1, zone: web, nics: [{network: lan, mac: "52:54:00:00:00:03", ips: [10.0.0.3]}]}
"""


def test_a_peer_step_naming_one_member_does_not_cut_the_others_rows() -> None:
    """w1 and w2 (receivers of the edited `z-in`) are one class; the peers' `z-ssh`
    names w1 alone. Run over both their addresses at once it would cut w2's boxes at
    port 22 too (`tcp 1-21`, `tcp 22`, `tcp 23-1000` where alone it is `tcp 1-1000`):
    the class is run in cells the peers' regions do not cut (Mine.cells)."""
    old, new = CUT.replace("ACTION", "accept"), CUT.replace("ACTION", "drop")
    classed = _diff(old, new, **MANY, ENDPOINT_CLASSES=True)
    assert classed == _diff(old, new, **MANY, ENDPOINT_CLASSES=False)
    flows = json.loads(classed)["flows"]
    into_w2 = {(a, tuple(f["services"])) for f in flows if "vm:w2" in f["to"] for a in f["from"] if a in ("vm:w1", "vm:w3")}
    assert into_w2 == {("vm:w1", ("tcp 1-1000",)), ("vm:w3", ("tcp 1-1000",))}, flows


UNITING = """\
version: 1
settings:
  default: {in: drop, out: accept}
hosts:
  n1: {address: [192.168.1.1]}
networks:
  lan: {bridge: br0, subnets: [10.0.0.0/24]}
groups:
  outsiders: [198.51.100.0/30, 10.0.0.40]
zones:
  web:
    rules:
      - {direction: DIRECTION, action: ACTION, tcp: PORT}
  app:
    default: {in: drop, out: OUT}
vms:
"""
ZONE_VMS, OTHER_VMS = 5, 3


def _uniting_vm(name: str, index: int, zone: str, rules: list[str]) -> str:
    body = f"  {name}:\n    host: n1\n    zone: {zone}\n    nics: [{{network: lan, mac: \"52:54:00:00:00:{index:02x}\", ips: [10.0.0.{index}]}}]\n"
    return body + ("    rules:\n" + "".join(f"      - {rule}\n" for rule in rules) if rules else "")


@st.composite
def uniting_edits(draw: st.DrawFn) -> tuple[str, str, str]:
    """A zone rule open to everyone, its port edited; each zone VM's own rules first
    take some peers out (or decide them), each in its own way."""
    direction = draw(st.sampled_from(["in", "out"]))
    end = "from" if direction == "in" else "to"
    peers = [f"vm:w{i}" for i in range(ZONE_VMS)] + [f"vm:o{i}" for i in range(OTHER_VMS)] + ["group:outsiders", "10.0.0.40", "198.51.100.1"]
    own = st.builds(
        lambda action, chosen, port: f"{{direction: {direction}, action: {action}, {end}: [{', '.join(chosen)}]{port}}}",
        st.sampled_from(["drop", "reject", "accept"]),
        st.lists(st.sampled_from(peers), min_size=1, max_size=3, unique=True),
        st.sampled_from(["", ", tcp: 80", ", tcp: 1000-2000"]),
    )
    vms = [_uniting_vm(f"w{i}", 10 + i, "web", draw(st.lists(own, max_size=2))) for i in range(ZONE_VMS)]
    # peers outside the zone whose own rules tell some zone VMs apart
    other = st.builds(lambda vm, action: f"{{direction: {'out' if direction == 'in' else 'in'}, action: {action}, {'to' if direction == 'in' else 'from'}: vm:w{vm}}}",
                      st.integers(0, ZONE_VMS - 1), st.sampled_from(["drop", "reject", "accept"]))
    vms += [_uniting_vm(f"o{i}", 20 + i, "app", draw(st.lists(other, max_size=1))) for i in range(OTHER_VMS)]
    text = (UNITING.replace("DIRECTION", direction).replace("ACTION", draw(st.sampled_from(["accept", "reject", "drop"])))
            .replace("OUT", draw(st.sampled_from(["accept", "drop"]))) + "".join(vms))
    return text.replace("PORT", "1500"), text.replace("PORT", "1600"), direction


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(uniting_edits())
def test_classes_alike_but_for_the_peers_they_took_out_give_the_diff_of_each_class(edit: tuple[str, str, str]) -> None:
    old, new, _direction = edit
    united = _diff(old, new, **MANY, ENDPOINT_CLASSES=True)
    assert united == _diff(old, new, **MANY, ENDPOINT_CLASSES=True, UNITED_CLASSES=False)
    assert united == _diff(old, new, **MANY, ENDPOINT_CLASSES=False)


def test_zone_vms_that_took_out_different_peers_meet_the_peers_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """w0-w2 each drop a different peer first; w3 drops only addresses outside the
    cluster, so its pieces within it are w4's (no rule): four classes apart, one
    united, and the same diff."""
    vms = [_uniting_vm(f"w{i}", 10 + i, "web", [f"{{direction: in, action: drop, from: vm:o{i % OTHER_VMS}}}"] if i < 3 else
                       (["{direction: in, action: drop, from: group:outsiders}"] if i == 3 else [])) for i in range(ZONE_VMS)]
    vms += [_uniting_vm(f"o{i}", 20 + i, "app", []) for i in range(OTHER_VMS)]
    text = UNITING.replace("DIRECTION", "in").replace("ACTION", "accept").replace("OUT", "accept") + "".join(vms)
    old, new = text.replace("PORT", "1500"), text.replace("PORT", "1600")
    united_calls: list[int] = []
    made = differ_module.united
    monkeypatch.setattr(differ_module, "united", lambda mines, own_dim: united_calls.append(len(mines)) or made(mines, own_dim))
    united = _diff(old, new, **MANY, ENDPOINT_CLASSES=True)
    assert united_calls == [4]  # w0, w1, w2 (each its own peer taken out), w3 with w4: the peers run once
    united_calls.clear()
    assert united == _diff(old, new, **MANY, ENDPOINT_CLASSES=True, UNITED_CLASSES=False) and united_calls == []
    flows = json.loads(united)["flows"]
    opened = [f for f in flows if "tcp 1600" in f["services"] and f["change"] == "opened"]
    assert opened and all("vm:o0" not in f["from"] for f in opened if f["to"] == ["vm:w0"])  # w0 still drops o0
    assert any("vm:o0" in f["from"] and "vm:w1" in f["to"] for f in opened)  # w1 opens to o0


def test_a_peer_with_two_nics_on_one_network_keeps_its_label_where_one_nic_is_taken_out() -> None:
    """A class's rows name a peer's NICs by one label each (`vm:o9@lan` for both of o9's
    NICs on lan): where a zone VM's own rule takes one NIC's address out of part of
    the changed ports, the row of that part still holds the label for the other NIC."""
    vms = [_uniting_vm(f"w{i}", 10 + i, "web", ["{direction: in, action: drop, from: 10.0.0.39, tcp: 1600}"] if i < 2 else []) for i in range(ZONE_VMS)]
    vms += [_uniting_vm(f"o{i}", 20 + i, "app", []) for i in range(OTHER_VMS)]
    vms.append("  o9:\n    host: n1\n    zone: app\n    nics:\n"
               "      - {network: lan, mac: \"52:54:00:00:00:29\", ips: [10.0.0.29]}\n"
               "      - {network: lan, mac: \"52:54:00:00:00:39\", ips: [10.0.0.39]}\n")
    text = UNITING.replace("DIRECTION", "in").replace("ACTION", "accept").replace("OUT", "accept") + "".join(vms)
    old, new = text.replace("PORT", "1500-1510"), text.replace("PORT", "1600-1610")
    classed = _diff(old, new, **MANY, ENDPOINT_CLASSES=True)
    assert classed == _diff(old, new, **MANY, ENDPOINT_CLASSES=False)
    opened = [f for f in json.loads(classed)["flows"] if f["change"] == "opened"]
    # w0 and w1 take o9's second NIC out of port 1600 alone: its first NIC still opens it
    to_w0 = [f for f in opened if "vm:w0" in f["to"]]
    assert to_w0 and all("vm:o9@lan" in f["from"] for f in to_w0), to_w0
    assert "tcp 1600" in {service for f in to_w0 for service in f["services"]}, to_w0
