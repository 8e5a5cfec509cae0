"""The netlink readback (nftstate.py) against the kernel: it sees what libnftables
lists, its digests move with every change we make to our tables and with nothing
the packet path does, and a partial read after our own transaction equals a full one."""

from __future__ import annotations

import dataclasses
import socket
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.test_golden import scenarios
from zonewall.compiler import nftexpr as x
from zonewall.compiler.ir import Chain, Hook, NamedSet, Rule, Ruleset, Table
from zonewall.compiler.node import compile_node
from zonewall.dataplane.apply import apply_ruleset
from zonewall.dataplane.backend import LibNftBackend
from zonewall.dataplane.readback import listing_hash, listings, read_view, shape_of_objects, shape_of_state, touched
from zonewall.lab.netns import netns_socket
from zonewall.policy.loader import load_policy, load_policy_text

from .kernel_helpers import load_foreign, nft
from .samples import TABLE, node_ruleset

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import synth

pytestmark = pytest.mark.kernel
WHEN = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)


@pytest.fixture
def backend(netns_name: str) -> Iterator[LibNftBackend]:
    with LibNftBackend(netns_name) as b:
        yield b


def rulesets() -> list[tuple[str, Ruleset]]:
    """Every example and golden scenario, and a synthetic node with NAT, helpers and
    schedules: every kind of object the compiler writes."""
    out = []
    for policy_path, _ in scenarios():
        policy = load_policy(policy_path)
        out += [(f"{policy_path.name}:{host}", compile_node(policy, host, now=WHEN, timezone="UTC")) for host in sorted(policy.doc.hosts)]
    extras = load_policy_text(synth.policy_text(30, dataplane_extras=True))
    return out + [("synthetic:node1", compile_node(extras, "node1", now=WHEN, timezone="UTC"))]


def test_the_structure_read_over_netlink_is_what_libnftables_lists(netns_factory) -> None:  # type: ignore[no-untyped-def]
    checked = 0
    for name, ruleset in rulesets():
        with LibNftBackend(netns_factory()) as backend:
            result = apply_ruleset(backend, ruleset)
            listed = listings(backend, [(t.family, t.name) for t in ruleset.tables])
            for key, objects in listed.items():
                assert objects is not None
                state = result.view.tables[key]
                assert state is not None
                assert shape_of_state(state) == shape_of_objects(objects), f"{name} {key}"
                policies = {o["ct timeout"]["name"]: o["ct timeout"] for o in objects if "ct timeout" in o}
                for (kind, object_name), found in state.objects.items():
                    if kind == "ct timeout":
                        assert found.policy is not None and found.policy[0] == policies[object_name]["protocol"]
                        # nft lists only values that differ from its defaults; netlink has all of them
                        assert (policies[object_name].get("policy") or {}).items() <= found.policy[1].items(), name
                checked += 1
    assert checked >= 20


def test_counters_and_dynamic_elements_are_traffic_not_drift(backend: LibNftBackend, netns_name: str) -> None:
    remember = x.set_add("seen_v4", x.payload("ip", "saddr"))
    table = Table(
        "inet",
        TABLE,
        chains=(Chain("out", (Rule((x.match(x.payload("udp", "dport"), 9), remember, x.counter(), x.accept()), "discard port"),), Hook("filter", "output", 0, "accept")),),
        sets=(NamedSet("seen_v4", "ipv4_addr", flags=("timeout",), timeout=60),),
    )
    ruleset = Ruleset("node1", (table,))
    result = apply_ruleset(backend, ruleset)
    with netns_socket(netns_name, socket.AF_INET, socket.SOCK_DGRAM) as sender:
        for _ in range(5):
            sender.sendto(b"x", ("127.0.0.1", 9))
    assert "packets 5" in nft(netns_name, "list", "chain", "inet", TABLE, "out")  # the counter did move
    assert "127.0.0.1" in nft(netns_name, "list", "set", "inet", TABLE, "seen_v4")  # the packet path added it
    again = read_view(backend, [("inet", TABLE)])
    assert again.generation == result.view.generation and again.digest == result.readback_hash


def test_a_rule_deleted_and_added_again_is_a_new_digest(backend: LibNftBackend, netns_name: str) -> None:
    ruleset = node_ruleset()
    result = apply_ruleset(backend, ruleset)
    content = listing_hash(backend, ruleset)
    handle = nft(netns_name, "-a", "list", "chain", "inet", TABLE, "input").split("# handle ")[-1].split()[0]
    nft(netns_name, "-f", "-", stdin=f'delete rule inet {TABLE} input handle {handle}\nadd rule inet {TABLE} input accept comment "host"\n')
    assert listing_hash(backend, ruleset) == content  # a listing cannot tell ...
    assert read_view(backend, ruleset).digest != result.readback_hash  # ... the digest can


def test_a_rule_replaced_with_another_anonymous_set_is_seen(backend: LibNftBackend, netns_name: str) -> None:
    rule = Rule((x.match(x.payload("tcp", "dport"), {"set": [22, 80]}), x.accept()), "ports")
    chain = Chain("in", (rule,), Hook("filter", "input", 0, "accept"))
    ruleset = Ruleset("node1", (Table("inet", TABLE, chains=(chain,)),))
    result = apply_ruleset(backend, ruleset)
    handle = nft(netns_name, "-a", "list", "chain", "inet", TABLE, "in").split("# handle ")[-1].split()[0]
    nft(netns_name, "replace", "rule", "inet", TABLE, "in", "handle", handle, "tcp", "dport", "{ 22, 8080 }", "accept", "comment", '"ports"')
    assert read_view(backend, ruleset).digest != result.readback_hash


def test_another_owners_change_moves_the_generation_but_not_our_digest(backend: LibNftBackend, netns_name: str) -> None:
    ruleset = node_ruleset()
    result = apply_ruleset(backend, ruleset)
    assert read_view(backend, ruleset, base=result.view) is result.view  # nothing committed: not even read
    load_foreign(netns_name)
    again = read_view(backend, ruleset, base=result.view)
    assert again.generation > result.view.generation and again.digest == result.readback_hash


def test_a_partial_read_after_our_transaction_equals_a_full_read(backend: LibNftBackend) -> None:
    old = node_ruleset()
    first = apply_ruleset(backend, old)
    new = node_ruleset({"tap1": 22, "tap2": 8080, "tap3": 443}, admins=("10.0.0.1", "10.0.0.9"))
    result = apply_ruleset(backend, new, previous=old, seen=first.view)
    assert result.mode == "incremental"
    full = read_view(backend, new)
    assert full.generation == result.view.generation and full.tables == result.view.tables
    # and the scope was what changed: g_tap2's rules, g_tap3 (new), the admins set
    scope = touched(backend_commands(old, new))
    assert scope is not None and {"g_tap2", "g_tap3"} <= scope[("inet", TABLE)].chains and "admins" in scope[("inet", TABLE)].sets


def backend_commands(old: Ruleset, new: Ruleset) -> list[dict]:
    from zonewall.compiler.diff import diff_commands

    return diff_commands(old, new)


def test_drift_behind_a_seen_view_is_not_diffed_on(backend: LibNftBackend, netns_name: str) -> None:
    """With `seen`, a kernel that changed since (even to the same structure) gets a full
    replace, not a diff on top of what someone else left."""
    old = node_ruleset()
    first = apply_ruleset(backend, old)
    nft(netns_name, "add", "element", "inet", TABLE, "admins", "{ 10.66.66.66 }")
    nft(netns_name, "delete", "element", "inet", TABLE, "admins", "{ 10.0.0.2 }")  # the same count
    result = apply_ruleset(backend, node_ruleset({"tap1": 22, "tap2": 81}), previous=old, seen=first.view)
    assert result.mode == "full" and "changed since the last apply" in result.notes[0]
    assert "10.66.66.66" not in nft(netns_name, "list", "set", "inet", TABLE, "admins")


def test_dataclass_equality_is_what_drift_detection_compares() -> None:
    # the view comparison in apply._drift relies on TableState equality being by value
    from zonewall.dataplane.nftstate import ChainState, TableState

    a = TableState({"c": ChainState(("x",), b"d", b"h")}, {}, {})
    assert a == dataclasses.replace(a) and a != TableState({"c": ChainState(("x",), b"d", b"g")}, {}, {})
