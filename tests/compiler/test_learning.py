"""Guard learning mode in the compiler (bridge table) and the analyzer's note."""

from __future__ import annotations

from pathlib import Path

from zonewall.analysis.engine import Analyzer
from zonewall.compiler.ir import Table
from zonewall.compiler.learning import NIC_LEARN, is_learning
from zonewall.compiler.nics import local_nics
from zonewall.compiler.node import compile_node
from zonewall.compiler.render import render_nft
from zonewall.policy.loader import load_policy

SCENARIO = Path(__file__).resolve().parents[1] / "scenarios" / "guard-learning" / "policy.yaml"
GUARDS_LAB = Path(__file__).resolve().parents[1] / "kernel" / "policies" / "guards.yaml"


def bridge(learned=None) -> Table:
    ruleset = compile_node(load_policy(str(SCENARIO)), "node1", timezone="UTC", learned=learned)
    return next(t for t in ruleset.tables if t.family == "bridge")


def sets(table: Table) -> dict:
    return {s.name: s for s in table.sets}


def test_only_nics_without_ips_under_ip_antispoofing_learn() -> None:
    policy = load_policy(str(SCENARIO))
    learning = {n.vm for n in local_nics(policy, "node1") if is_learning(policy, n)}
    assert learning == {"dyn", "nosub"}  # fixed has ips, plain has no guard


def test_learning_nic_gets_a_size_one_set_and_a_learn_chain() -> None:
    table = bridge()
    found = sets(table)
    assert found["learned4-dyni0"].size == 1 and found["learned4-dyni0"].elements == ()
    assert set(dict(found[NIC_LEARN[4]].elements)) == {"dyni0", "nosubi0"}
    chains = {c.name: c for c in table.chains}
    assert {"learn4-dyni0", "learn4-nosubi0"} <= set(chains)
    text = render_nft(compile_node(load_policy(str(SCENARIO)), "node1", timezone="UTC"))
    assert "ip saddr 10.60.1.0/24 add @learned4-dyni0 { ip saddr }" in text  # learnable: the network's subnets
    assert "arp saddr ip != { 0.0.0.0/8, 127.0.0.0/8, 169.254.0.0/16, 224.0.0.0/3 } add @learned4-nosubi0 { arp saddr ip }" in text
    assert "flags dynamic" in text.split("set learned4-dyni0 {")[1].split("}")[0]
    # the anti-spoofing filters consult the learning ports before their drop
    spoof = chains["filter-no-ip-spoofing-out"].rules
    vmap_at = next(i for i, r in enumerate(spoof) if "nic-learn4" in repr(r.statements))
    assert all("drop" not in repr(r.statements) for r in spoof[:vmap_at])
    # the learn chain ends in a drop (a full set refuses the add)
    assert "drop" in repr(chains["learn4-dyni0"].rules[-1].statements)


def test_learned_addresses_become_initial_elements() -> None:
    found = sets(bridge({("dyn", 0): ["10.60.1.50", "10.60.1.51"], ("nosub", 0): ["fd00::1", "junk", "192.0.2.9"], ("fixed", 0): ["10.60.1.99"]}))
    assert found["learned4-dyni0"].elements == ("10.60.1.50",)  # size 1: the first
    assert found["learned4-nosubi0"].elements == ("192.0.2.9",)  # IPv6 and junk ignored
    assert "learned4-fixedi0" not in found  # not learning: ignored
    assert found["nic-ip4"].elements == sets(bridge())["nic-ip4"].elements  # $IP stays the configured ips


def test_no_learning_nic_no_learning_rules() -> None:
    ruleset = compile_node(load_policy(str(GUARDS_LAB)), "node1", timezone="UTC")
    assert "learn" not in render_nft(ruleset)


def test_analyzer_notes_the_learned_address() -> None:
    policy = load_policy(str(SCENARIO))
    builder = Analyzer(policy).guards
    notes = builder.stage("dyn", 0, "out").approximations()
    assert any("learned at run time" in note for note in notes), notes
    assert not builder.stage("fixed", 0, "out").approximations()
