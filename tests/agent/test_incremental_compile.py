"""Property: an agent compiling one-rule changes with what it kept from its last
compile (the policy's memos of rule matches and of addresses written as nft
elements, shared by a policy edited in rules alone) ends each change with exactly
the IR a whole load and compile of the documents gives; a mistake is refused by
both. Beside it, a memo that lies makes the compile differ: the memos are used."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from bench.synth import policy_text
from zonewall.agent.enforcer import Desired, Enforcer
from zonewall.agent.state import StateStore
from zonewall.compiler.node import compile_node
from zonewall.dataplane.fake import FakeBackend
from zonewall.policy.documents import content_hash, load_documents
from zonewall.policy.errors import PolicyError
from zonewall.policy.resolve import ELEMENTS_MEMO, MATCHES_MEMO

BASE = policy_text(12, nodes=2)
OWNERS = [f"vm{i}" for i in range(0, 12, 2)] + ["z0", "z1"]  # node1's VMs (synth: vm i on node i % 2 + 1), zones
PEERS = ["group:admins", "group:g3", "group:g10", "zone:z1", "zone:z4", "vm:vm1", "vm:vm4", "network:net1",
         "10.9.9.0/24", '"fd00:99::/48"', "[group:g5, 10.200.1.0/24]", "[vm:vm3, vm:vm8]", "192.0.2.7"]
L4 = ["tcp: 22", "tcp: [80, 443]", 'udp: "5000-5100"', "service: https", "icmp: echo-request", "proto: gre", "udp: 53"]


@st.composite
def rule_lines(draw: st.DrawFn) -> str:
    direction = draw(st.sampled_from(["in", "out"]))
    parts = [f"direction: {direction}", f"action: {draw(st.sampled_from(['accept', 'drop', 'reject']))}"]
    peer = draw(st.none() | st.sampled_from(PEERS))
    if peer is not None:
        parts.append(f"{'from' if direction == 'in' else 'to'}: {peer}")
    parts.append(draw(st.sampled_from(L4)))
    family = draw(st.none() | st.sampled_from(["ipv4", "ipv6"]))
    if family is not None:
        parts.append(f"family: {family}")
    if draw(st.booleans()):
        parts.append("log: true")
    return "      - {" + ", ".join(parts) + "}"


def replaced(text: str, owner: str, index: int, line: str, how: str = "replace") -> str:
    """`owner`'s rule number `index` (of its first few) replaced by `line` in place,
    or `line` added before it, or the rule removed (every later line moves)."""
    start = text.index(f"\n  {owner}:\n")
    at = text.index("\n      - {", start)
    for _ in range(index):
        at = text.index("\n      - {", at + 1)
    end = text.index("\n", at + 1)
    if how == "add":
        return text[:at + 1] + line + "\n" + text[at + 1:]
    if how == "remove":
        return text[:at] + text[end:]
    return text[:at + 1] + line + text[end:]


def regrouped(text: str, group: str, members: list[str]) -> str:
    """Group `group`'s member line written anew with `members`."""
    start = text.index(f"\n  {group}: [") + 1
    end = text.index("\n", start)
    return text[:start] + f"  {group}: [{', '.join(members)}]" + text[end:]


RULE_EDITS = st.tuples(st.just("rule"), st.sampled_from(OWNERS), st.integers(0, 5), rule_lines(), st.sampled_from(["replace", "add", "remove"]))
GROUP_EDITS = st.tuples(st.just("group"), st.sampled_from(["admins", "g3", "g5", "g10"]),
                        st.lists(st.sampled_from(["10.9.8.7", "vm:vm1", "vm:vm2", "vm:vm4", "192.0.2.0/28", '"fd00:77::1"', "group:g4", "group:g10"]),
                                 min_size=1, max_size=3, unique=True))
EDITS = st.lists(st.one_of(RULE_EDITS, RULE_EDITS, GROUP_EDITS), min_size=1, max_size=6)


def whole(text: str):  # type: ignore[no-untyped-def]
    return compile_node(load_documents({"policy.yaml": text}), "node1", timezone="UTC")


def test_random_rule_edits_compile_to_the_whole_compiles_ir_mostly_from_the_kept_policy(tmp_path_factory: pytest.TempPathFactory) -> None:
    # The count of how the policies were had is taken inside this one test: a
    # second test reading a module-level counter depended on running after the
    # property in the same process, which pytest-xdist does not promise.
    loads: Counter[str] = Counter()

    @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, phases=[Phase.explicit, Phase.generate])
    @given(edits=EDITS)
    def property_(edits: list[tuple]) -> None:  # type: ignore[type-arg]
        agent = Enforcer(FakeBackend(), "node1", StateStore(tmp_path_factory.mktemp("agent")), discover=lambda policy, node: {}, timezone=lambda: "UTC")
        text = BASE
        agent.enforce(Desired(1, {"policy.yaml": text}, content_hash({"policy.yaml": text})))
        for revision, edit in enumerate(edits, start=2):
            new = replaced(text, *edit[1:]) if edit[0] == "rule" else regrouped(text, *edit[1:])
            documents = {"policy.yaml": new}
            try:
                expected = whole(new)
            except PolicyError:
                with pytest.raises(PolicyError):
                    agent.enforce(Desired(revision, documents, content_hash(documents)))
                continue
            agent.enforce(Desired(revision, documents, content_hash(documents)))
            assert agent.ruleset == expected, edit
            text = new
        loads.update(agent.loads)

    property_()
    assert loads["edited"] > 2 * loads["whole"], loads  # the edits took the incremental path


@pytest.mark.parametrize("memo", [ELEMENTS_MEMO, MATCHES_MEMO])
def test_the_kept_memos_are_what_the_compile_uses(tmp_path: Path, memo: str) -> None:
    agent = Enforcer(FakeBackend(), "node1", StateStore(tmp_path), discover=lambda policy, node: {}, timezone=lambda: "UTC")
    agent.enforce(Desired(1, {"policy.yaml": BASE}, content_hash({"policy.yaml": BASE})))
    kept = agent.policy_of({"policy.yaml": BASE}).__dict__[memo]
    assert len(kept) > 10
    lie = next(iter(kept.values()))
    for key in kept:
        kept[key] = lie  # every entry now answers what the first one means
    new = replaced(BASE, "vm0", 0, "      - {direction: in, action: accept, from: group:admins, tcp: 2222}")
    agent.enforce(Desired(2, {"policy.yaml": new}, content_hash({"policy.yaml": new})))
    assert agent.loads["edited"] == 1
    assert agent.ruleset != whole(new)  # the lie was compiled in: the memo is shared, not rebuilt


def test_a_whole_load_lets_go_of_the_kept_policy_before_it_parses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two parsed policies at once were an agent's memory peak: the kept one is freed first."""
    import weakref

    from zonewall.agent import enforcer as enforcer_module

    agent = Enforcer(FakeBackend(), "node1", StateStore(tmp_path), discover=lambda policy, node: {}, timezone=lambda: "UTC")
    agent.enforce(Desired(1, {"policy.yaml": BASE}, content_hash({"policy.yaml": BASE})))
    kept = weakref.ref(agent.policy_of({"policy.yaml": BASE}))
    alive_at_load: list[bool] = []
    real_load = enforcer_module.load_documents

    def load(documents):  # type: ignore[no-untyped-def]
        alive_at_load.append(kept() is not None)
        return real_load(documents)

    monkeypatch.setattr(enforcer_module, "load_documents", load)
    # a change of the settings is not taken from the kept policy: a whole load
    new = BASE.replace("  default: {in: drop, out: accept}", "  default: {in: drop, out: drop}", 1)
    assert new != BASE
    agent.enforce(Desired(2, {"policy.yaml": new}, content_hash({"policy.yaml": new})))
    assert agent.loads["whole"] == 2 and alive_at_load == [False]
    assert agent.ruleset == whole(new)
    # an in-place rule edit still comes from the (new) kept policy, no load at all
    edited = replaced(new, "vm0", 0, "      - {direction: in, action: accept, from: group:admins, tcp: 2222}")
    agent.enforce(Desired(3, {"policy.yaml": edited}, content_hash({"policy.yaml": edited})))
    assert agent.loads["edited"] == 1 and alive_at_load == [False]


def test_a_group_member_change_recompiles_what_names_it_or_a_group_holding_it_and_keeps_the_rest(tmp_path: Path) -> None:
    agent = Enforcer(FakeBackend(), "node1", StateStore(tmp_path), discover=lambda policy, node: {}, timezone=lambda: "UTC")
    # g3 holds g10; vm0 names g3 only: a change of g10 reaches vm0's rule through g3
    first = regrouped(replaced(BASE, "vm0", 0, "      - {direction: in, action: accept, from: group:g3, tcp: 2222}"), "g3", ["group:g10", "10.9.8.7"])
    agent.enforce(Desired(1, {"policy.yaml": first}, content_hash({"policy.yaml": first})))
    kept = agent.policy_of({"policy.yaml": first}).__dict__[MATCHES_MEMO]
    second = regrouped(first, "g10", ["192.0.2.0/28"])
    agent.enforce(Desired(2, {"policy.yaml": second}, content_hash({"policy.yaml": second})))
    assert agent.loads["edited"] == 1
    assert agent.ruleset == whole(second) != whole(first)
    taken = agent.policy_of({"policy.yaml": second}).__dict__[MATCHES_MEMO]
    changed = {"group:g3", "group:g10"}
    naming = [key for key in kept if any(isinstance(value, tuple) and any(str(v).lstrip("!").strip() in changed for v in value) for value in key)]
    assert naming and not any(key in taken and taken[key] is kept[key] for key in naming)  # worked out again
    others = [key for key in kept if key not in naming]
    assert len(others) > 10 and all(taken[key] is kept[key] for key in others if key in taken)  # taken over
    assert sum(key in taken for key in others) > 10
