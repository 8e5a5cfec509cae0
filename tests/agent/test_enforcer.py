"""The enforcer against the fake kernel: apply, state on disk, restore, drift repair."""

from __future__ import annotations

from pathlib import Path

from tests.controller.live import three_tier_documents
from zonewall.agent.enforcer import Desired, Enforcer
from zonewall.agent.state import StateStore
from zonewall.dataplane.fake import FakeBackend
from zonewall.dataplane.readback import listing_hash
from zonewall.policy.documents import content_hash

OTHER_TABLE = [{"add": {"table": {"family": "inet", "name": "docker"}}}, {"add": {"chain": {"family": "inet", "table": "docker", "name": "c"}}}]


def desired(revision: int = 1, documents: dict[str, str] | None = None) -> Desired:
    documents = documents or three_tier_documents()
    return Desired(revision, documents, content_hash(documents))


def enforcer(backend: FakeBackend, state_dir: Path, node: str = "node1") -> Enforcer:
    return Enforcer(backend, node, StateStore(state_dir), discover=lambda policy, node: {}, timezone=lambda: "UTC")


def test_enforce_applies_and_saves_the_state(tmp_path: Path) -> None:
    backend = FakeBackend()
    result = enforcer(backend, tmp_path).enforce(desired())
    assert result.mode == "full"
    assert {("inet", "zonewall"), ("bridge", "zonewall")} <= set(backend.list_tables())
    saved = StateStore(tmp_path).load("node1")
    assert saved is not None and saved.revision == 1 and saved.readback_hash == result.readback_hash
    assert StateStore(tmp_path).load("node2") is None  # another node's agent ignores it


def test_restart_adopts_the_kernel_without_touching_it(tmp_path: Path) -> None:
    backend = FakeBackend()
    enforcer(backend, tmp_path).enforce(desired())
    committed = len(backend.transactions)
    again = enforcer(backend, tmp_path)
    assert "adopted" in again.restore()
    assert len(backend.transactions) == committed  # not one transaction: no moment without rules
    assert again.verify()


def test_restore_rebuilds_a_flushed_kernel_without_the_controller(tmp_path: Path) -> None:
    enforcer(FakeBackend(), tmp_path).enforce(desired())
    flushed = FakeBackend()  # e.g. a reboot, or `nft flush ruleset` while the agent was down
    restarted = enforcer(flushed, tmp_path)
    assert "restored" in restarted.restore()
    assert ("inet", "zonewall") in flushed.list_tables() and restarted.verify()


def test_restore_without_saved_state_leaves_the_kernel_alone(tmp_path: Path) -> None:
    backend = FakeBackend()
    backend.run(OTHER_TABLE)
    assert "no saved state" in enforcer(backend, tmp_path).restore()
    assert len(backend.transactions) == 1


def test_drift_is_repaired_and_other_tables_are_untouched(tmp_path: Path) -> None:
    backend = FakeBackend()
    agent = enforcer(backend, tmp_path)
    agent.enforce(desired())
    backend.run(OTHER_TABLE)
    assert agent.verify() and agent.repair() is None  # another owner's table is no drift
    expected = listing_hash(backend, [("inet", "zonewall"), ("bridge", "zonewall")])
    backend.run([{"flush": {"chain": {"family": "inet", "table": "zonewall", "name": "forward"}}}])
    assert not agent.verify()
    assert agent.repair() is not None and agent.drift_repairs == 1
    assert listing_hash(backend, [("inet", "zonewall"), ("bridge", "zonewall")]) == expected
    assert agent.verify()
    assert backend.list_table("inet", "docker") is not None
    backend.run([{"delete": {"table": {"family": "inet", "name": "zonewall"}}}])
    agent.repair()
    assert agent.verify() and agent.drift_repairs == 2


def test_a_document_hash_mismatch_is_refused_and_nothing_applied(tmp_path: Path) -> None:
    backend = FakeBackend()
    bad = Desired(1, three_tier_documents(), "0" * 64)
    try:
        enforcer(backend, tmp_path).enforce(bad)
    except ValueError as exc:
        assert "do not match" in str(exc)
    else:
        raise AssertionError("accepted documents that do not match their hash")
    assert backend.transactions == []


def test_a_new_revision_is_applied_incrementally(tmp_path: Path) -> None:
    backend = FakeBackend()
    agent = enforcer(backend, tmp_path, "node2")
    agent.enforce(desired())
    documents = three_tier_documents()
    documents["policy.yaml"] = documents["policy.yaml"].replace(
        "      - {id: db-from-app,", "      - {id: db-ping, direction: in, action: accept, service: ping}\n      - {id: db-from-app,"
    )
    result = agent.enforce(desired(2, documents))
    assert result.mode == "incremental" and agent.state is not None and agent.state.revision == 2


def test_periodic_refresh_compiles_only_when_its_inputs_changed(tmp_path: Path) -> None:
    inputs = {"links": ("fe:54:00:00:01:01", "vnet3")}
    compiles: list[str] = []

    def discover(policy: object, node: str) -> dict:  # type: ignore[type-arg]
        compiles.append(node)
        return {}

    agent = Enforcer(FakeBackend(), "node1", StateStore(tmp_path), discover=discover, timezone=lambda: "UTC",
                     inputs=lambda: inputs["links"])
    agent.enforce(desired())
    assert len(compiles) == 1
    assert agent.refresh(only_if_inputs_changed=True) is None
    assert len(compiles) == 1  # same links, same timezone: nothing compiled
    inputs["links"] = ("fe:54:00:00:01:01", "vnet4")  # a guest's tap came back under another name
    agent.refresh(only_if_inputs_changed=True)
    assert len(compiles) == 2
    agent.refresh()  # a hypervisor event: always compiled
    assert len(compiles) == 3
