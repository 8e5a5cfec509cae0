"""A rule's own kernel objects (log chain, per-source meter) keep their names while
the rule stays what it is, though its derived id moves with a line added above it."""

from __future__ import annotations

from zonewall.compiler.ir import Ruleset
from zonewall.compiler.node import compile_node
from zonewall.compiler.transactions import diff_transactions
from zonewall.policy.loader import load_policy_text

POLICY = """version: 1
hosts: {{node1: {{address: 192.168.100.11}}}}
networks: {{lan: {{bridge: vmbr1, subnets: [10.1.0.0/24]}}}}
zones:
  app:
    default: {{in: drop, out: accept}}
vms:
  app1:
    host: node1
    zone: app
    nics: [{{network: lan, mac: "52:54:00:01:00:02", ips: [10.1.0.20]}}]
    rules:
{above}      - {{direction: in, action: accept, tcp: 22, log: true}}
      - {{direction: in, action: accept, tcp: 80, limit: {{rate: 5/minute, burst: 5, per: source}}}}
{twin}  app2:
    host: node1
    zone: app
    nics: [{{network: lan, mac: "52:54:00:01:00:03", ips: [10.1.0.21]}}]
    rules:
      - {{direction: in, action: accept, tcp: 443, log: true}}
"""


def compiled(above: str = "", twin: str = "") -> Ruleset:
    return compile_node(load_policy_text(POLICY.format(above=above, twin=twin)), "node1", timezone="UTC")


def own_objects(ruleset: Ruleset) -> tuple[list[str], list[str]]:
    """The names of the log chains and the per-source meters."""
    chains = sorted(c.name for t in ruleset.tables for c in t.chains if c.name.startswith("log-"))
    meters = sorted(s.name for t in ruleset.tables for s in t.sets if s.name.startswith("rl-"))
    return chains, meters


def log_prefixes(ruleset: Ruleset) -> list[str]:
    return sorted(str(rule.statements) for t in ruleset.tables for c in t.chains if c.name.startswith("log-") for rule in c.rules[:1])


def test_a_line_added_above_moves_the_ids_but_not_the_objects() -> None:
    before = compiled()
    after = compiled(above="      - {direction: in, action: accept, udp: 53}\n")
    assert own_objects(after) == own_objects(before) and own_objects(before) != ([], [])
    meters = [{s for t in r.tables for s in t.sets if s.name.startswith("rl-")} for r in (before, after)]
    assert meters[0] == meters[1]  # comments too: a set whose comment changes is made again, its buckets lost
    assert log_prefixes(after) != log_prefixes(before)  # the records name the moved ids
    # so the line added changes app1's chain, the log chains' prefixes and nothing
    # else in the first transaction: app2's chain (its ids moved too) follows it
    first, *renumbered = diff_transactions(before, after, batch=500)
    flushed = {c["flush"]["chain"]["name"] for c in first if "flush" in c}
    assert not [c for c in first if "delete" in c and "set" in c["delete"]]
    assert not any("app2" in name for name in flushed) and any("app1" in name for name in flushed)
    assert any("app2" in c["flush"]["chain"]["name"] for t in renumbered for c in t if "flush" in c)


def test_an_edited_rule_and_twins_get_objects_of_their_own() -> None:
    before = compiled()
    edited = compile_node(load_policy_text(POLICY.format(above="", twin="").replace("tcp: 22, log", "tcp: 2222, log")), "node1", timezone="UTC")
    assert own_objects(edited)[0] != own_objects(before)[0]
    # the same rule twice in one list (here the second after another): two log
    # chains, each with its own rule's id in its records
    doubled = compiled(twin="      - {direction: in, action: accept, tcp: 22, log: true}\n")
    assert len(own_objects(doubled)[0]) == len(own_objects(before)[0]) + 1
    assert len(set(log_prefixes(doubled))) == len(log_prefixes(doubled))


def test_a_rule_with_an_explicit_id_is_named_by_it_as_before() -> None:
    """(its objects keep the names earlier versions gave them: an upgrade renames nothing)"""
    import hashlib

    text = POLICY.format(above="", twin="").replace("tcp: 22, log", "id: ssh-in, tcp: 22, log")
    chains = own_objects(compile_node(load_policy_text(text), "node1", timezone="UTC"))[0]
    assert "log-" + hashlib.sha1(b"vm/app1/ssh-in").hexdigest()[:10] in chains
    moved = own_objects(compile_node(load_policy_text(text.replace("tcp: 22, log", "tcp: 2222, log")), "node1", timezone="UTC"))[0]
    assert moved == chains  # its content edited, an explicit id keeps its objects
