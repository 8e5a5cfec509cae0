"""The enforcer validates a one-rule change from the policy it parsed last
(policy/incremental.py) instead of loading its documents whole, and ends in the
same ruleset a whole load and compile gives; anything else is loaded whole."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.controller.test_node_payload import edit_vm_rule, synth_documents
from zonewall.agent.enforcer import Desired, Enforcer
from zonewall.agent.state import StateStore
from zonewall.compiler.node import compile_node
from zonewall.dataplane.fake import FakeBackend
from zonewall.dataplane.readback import listing_hash
from zonewall.policy.documents import content_hash, load_documents
from zonewall.policy.errors import PolicyError

OURS = [("inet", "zonewall"), ("bridge", "zonewall")]


def make(tmp_path: Path) -> tuple[FakeBackend, Enforcer]:
    backend = FakeBackend()
    return backend, Enforcer(backend, "node1", StateStore(tmp_path), discover=lambda policy, node: {}, timezone=lambda: "UTC")


def desired(revision: int, documents: dict[str, str]) -> Desired:
    return Desired(revision, documents, content_hash(documents))


def whole(documents: dict[str, str]):  # type: ignore[no-untyped-def]
    return compile_node(load_documents(documents), "node1", timezone="UTC")


def test_a_rule_edited_in_place_is_validated_from_the_last_policy(tmp_path: Path) -> None:
    backend, enforcer = make(tmp_path)
    first = synth_documents()
    enforcer.enforce(desired(1, first))
    assert enforcer.loads == {"whole": 1}
    second = edit_vm_rule(first, "vm0")  # vm0 is on node1
    result = enforcer.enforce(desired(2, second))
    assert enforcer.loads == {"whole": 1, "edited": 1}
    assert result.mode == "incremental"
    assert enforcer.ruleset == whole(second) != whole(first)
    fresh, reference = make(tmp_path / "reference")
    reference.enforce(desired(2, second))
    assert listing_hash(backend, OURS) == listing_hash(fresh, OURS)


def test_a_refresh_of_the_same_documents_loads_nothing(tmp_path: Path) -> None:
    _, enforcer = make(tmp_path)
    enforcer.enforce(desired(1, synth_documents()))
    assert enforcer.refresh() is None  # same ruleset
    assert enforcer.loads == {"whole": 1, "same": 1}


def test_an_added_rule_is_validated_from_the_kept_policy(tmp_path: Path) -> None:
    _, enforcer = make(tmp_path)
    first = synth_documents()
    enforcer.enforce(desired(1, first))
    text = first["policy.yaml"]
    at = text.index("\n      - {direction: in, action: reject, tcp: 25}")  # vm0's, on node1
    second = {"policy.yaml": text[:at] + "\n      - {direction: in, action: accept, udp: 4444}" + text[at:]}
    enforcer.enforce(desired(2, second))
    assert enforcer.loads == {"whole": 1, "edited": 1}  # lines moved, and the derived ids below with them
    assert enforcer.ruleset == whole(second)


def test_a_bad_edit_is_refused_as_the_whole_load_refuses_it_and_the_rules_stay(tmp_path: Path) -> None:
    backend, enforcer = make(tmp_path)
    first = synth_documents()
    enforcer.enforce(desired(1, first))
    before, transactions = listing_hash(backend, OURS), len(backend.transactions)
    bad = {"policy.yaml": edit_vm_rule(first, "vm0")["policy.yaml"].replace("tcp: 2222}", "tcp: 70000}", 1)}
    with pytest.raises(PolicyError) as refused:
        enforcer.enforce(desired(2, bad))
    with pytest.raises(PolicyError) as expected:
        load_documents(bad)
    assert str(refused.value) == str(expected.value)  # the same file:line:col problems
    assert listing_hash(backend, OURS) == before and len(backend.transactions) == transactions
    assert enforcer.state is not None and enforcer.state.revision == 1
    good = edit_vm_rule(first, "vm0")
    # the next change is applied from its documents: the kept policy was let go for
    # the whole load that refused (agents only get revisions the controller validated)
    enforcer.enforce(desired(3, good))
    assert enforcer.ruleset == whole(good) and enforcer.state.revision == 3
