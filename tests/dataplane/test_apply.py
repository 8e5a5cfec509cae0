"""apply_ruleset / restore_snapshot / remove_ruleset against FakeBackend."""

from __future__ import annotations

import dataclasses

import pytest

from zonewall.compiler import nftexpr as x
from zonewall.compiler.ir import Rule, Ruleset, fingerprint
from zonewall.dataplane.apply import (
    Snapshot,
    VerifyError,
    apply_ruleset,
    remove_ruleset,
    restore_snapshot,
    take_snapshot,
)
from zonewall.dataplane.backend import NftError
from zonewall.dataplane.fake import FakeBackend
from zonewall.dataplane.readback import listing_hash, readback_hash

from .samples import TABLE, node_ruleset, renumbered

DOCKER = [
    {"add": {"table": {"family": "inet", "name": "docker"}}},
    {"add": {"chain": {"family": "inet", "table": "docker", "name": "fw", "type": "filter", "hook": "forward",
                       "prio": 0, "policy": "accept"}}},
    {"add": {"rule": {"family": "inet", "table": "docker", "chain": "fw", "expr": [{"accept": None}]}}},
]


def with_docker() -> FakeBackend:
    fake = FakeBackend()
    fake.run(DOCKER)
    return fake


def test_first_apply_is_full_and_leaves_foreign_tables() -> None:
    fake = with_docker()
    docker = fake.list_table("inet", "docker")
    ruleset = node_ruleset()
    result = apply_ruleset(fake, ruleset)
    assert result.mode == "full"
    assert result.fingerprint == fingerprint(ruleset)
    assert result.readback_hash == readback_hash(fake, ruleset)
    assert result.snapshot.tables == {("inet", TABLE): None, ("bridge", "zonewall_br"): None}
    assert fake.list_table("inet", "docker") == docker
    # Never a ruleset-wide command, never a command about someone else's table.
    for command in fake.transactions[-1]:
        ((verb, body),) = command.items()
        ((kind, obj),) = body.items()
        assert kind != "ruleset"
        owner = obj["name"] if kind == "table" else obj["table"]
        assert owner in (TABLE, "zonewall_br"), command


def test_incremental_apply_with_previous() -> None:
    fake = with_docker()
    old = node_ruleset()
    apply_ruleset(fake, old)
    new = node_ruleset({"tap1": 22, "tap2": 80, "tap3": 443})
    result = apply_ruleset(fake, new, previous=old)
    assert result.mode == "incremental" and result.notes == ()
    assert result.commands == 5
    assert result.readback_hash == readback_hash(fake, new)
    # Same kernel state as a fresh full apply.
    other = FakeBackend()
    apply_ruleset(other, new)
    assert listing_hash(other, new) == listing_hash(fake, new)
    assert fake.list_table("inet", "docker") is not None


def test_unchanged() -> None:
    fake = FakeBackend()
    ruleset = node_ruleset()
    first = apply_ruleset(fake, ruleset)
    again = apply_ruleset(fake, ruleset, previous=ruleset)
    assert again.mode == "unchanged" and again.commands == 0
    assert again.readback_hash == first.readback_hash
    assert len(fake.transactions) == 1


def test_refused_incremental_falls_back_to_full() -> None:
    fake = FakeBackend()
    old = node_ruleset()
    apply_ruleset(fake, old)
    new = node_ruleset({"tap1": 22})
    fake.fail_next("Error: Could not process rule: Device or resource busy")
    result = apply_ruleset(fake, new, previous=old)
    assert result.mode == "full"
    assert "refused" in result.notes[0]
    assert listing_hash(fake, new) == listing_hash(apply_fresh(new), new)


def test_renumbered_chains_apply_after_the_change_and_a_refusal_among_them_ends_in_a_full_replace() -> None:
    guests = {f"tap{n}": 1000 + n for n in range(200)}  # renumbered chains of more than one transaction (STAGE_COMMANDS)
    old = node_ruleset(guests)
    new = renumbered(node_ruleset({**guests, "tap0": 2222}), {f"g_tap{n}" for n in range(1, 200)})
    fake = FakeBackend()
    apply_ruleset(fake, old)
    committed = len(fake.transactions)
    result = apply_ruleset(fake, new, previous=old)
    assert result.mode == "incremental" and len(fake.transactions) - committed == 3  # the change, then 199 chains x 4 commands
    assert listing_hash(fake, new) == listing_hash(apply_fresh(new), new)
    # the second transaction refused: the change is in force but the ids half moved,
    # so the tables are replaced whole (and `old` is what a failure of that restores)
    fake = refusing(old, {2})
    result = apply_ruleset(fake, new, previous=old)
    assert result.mode == "full" and "refused" in result.notes[0]
    assert listing_hash(fake, new) == listing_hash(apply_fresh(new), new)
    # ... and when that replace is refused too, the kernel is back at `old` itself,
    # not at the half-renumbered tables the refusal left
    fake = refusing(old, {2, 3})
    with pytest.raises(NftError):
        apply_ruleset(fake, new, previous=old)
    assert listing_hash(fake, old) == listing_hash(apply_fresh(old), old)


def refusing(applied: Ruleset, refused: set[int]) -> FakeBackend:
    """A backend holding `applied` that refuses its next transactions numbered in `refused` (1: the next)."""
    fake = FakeBackend()
    apply_ruleset(fake, applied)
    real_run, calls = fake.run, [0]

    def run(commands: list[dict], text: str | None = None) -> None:
        calls[0] += 1
        if calls[0] in refused:
            raise NftError("Error: Could not process rule: Cannot allocate memory")
        real_run(commands, text=text)

    fake.run = run  # type: ignore[method-assign]
    return fake


def test_drifted_kernel_skips_the_diff() -> None:
    fake = FakeBackend()
    old = node_ruleset()
    apply_ruleset(fake, old)
    fake.run([{"flush": {"chain": {"family": "inet", "table": TABLE, "name": "g_tap1"}}}])  # someone meddled
    result = apply_ruleset(fake, node_ruleset({"tap1": 22, "tap2": 81}), previous=old)
    assert result.mode == "full" and "kernel differs from previous" in result.notes[0]


def test_failed_transaction_keeps_the_previous_ruleset() -> None:
    fake = FakeBackend()
    first = apply_ruleset(fake, node_ruleset())
    fake.fail_next("Error: Could not process rule: No such file or directory")
    with pytest.raises(NftError):
        apply_ruleset(fake, node_ruleset({"tap9": 1}))
    assert readback_hash(fake, node_ruleset()) == first.readback_hash


def test_verify_failure_restores_the_snapshot(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = with_docker()
    old = node_ruleset()
    before = apply_ruleset(fake, old)
    new = node_ruleset({"tap1": 22, "tap2": 80, "tap3": 443})
    # Simulate a kernel that loses a rule comment on the way in.
    real_run = fake.run

    def lossy_run(commands: list[dict], text: str | None = None) -> None:
        for command in commands:
            rule = command.get("add", {}).get("rule")
            if rule and rule.get("comment") == "g_tap3 admins":
                rule["comment"] = "mangled"
        real_run(commands)  # (`text` is the unmangled encoding)

    monkeypatch.setattr(fake, "run", lossy_run)
    content = listing_hash(fake, old)
    with pytest.raises(VerifyError) as info:
        apply_ruleset(fake, new, previous=old)
    assert any("g_tap3" in p for p in info.value.problems)
    assert listing_hash(fake, old) == content
    assert readback_hash(fake, old) != before.readback_hash  # restored: the same rules, re-created
    assert fake.list_table("inet", "docker") is not None


def test_verify_counts_rules_and_elements() -> None:
    fake = FakeBackend()
    ruleset = node_ruleset()
    # Duplicate elements collapse in the kernel: the readback has fewer than the IR.
    inet = ruleset.table("inet", TABLE)
    sets = tuple(dataclasses.replace(s, elements=s.elements * 2) if s.name == "admins" else s for s in inet.sets)
    broken = dataclasses.replace(ruleset, tables=(dataclasses.replace(inet, sets=sets),) + ruleset.tables[1:])
    with pytest.raises(VerifyError, match="admins has 2 elements, expected 4"):
        apply_ruleset(fake, broken)
    assert fake.list_tables() == []  # restored to "absent"


def test_dropped_tables_of_previous_are_removed_and_snapshotted() -> None:
    fake = FakeBackend()
    old = node_ruleset()
    apply_ruleset(fake, old)
    new = node_ruleset(bridge_table=False)
    result = apply_ruleset(fake, new, previous=old)
    assert ("bridge", "zonewall_br") not in fake.list_tables()
    assert result.snapshot.tables[("bridge", "zonewall_br")] is not None
    restore_snapshot(fake, result.snapshot)
    assert listing_hash(fake, old) == listing_hash(apply_fresh(old), old)


def apply_fresh(ruleset):  # type: ignore[no-untyped-def]
    fake = FakeBackend()
    apply_ruleset(fake, ruleset)
    return fake


def test_snapshot_roundtrip_and_restore() -> None:
    fake = with_docker()
    old = node_ruleset()
    apply_ruleset(fake, old)
    snapshot = take_snapshot(fake, old)
    assert Snapshot.from_json(snapshot.to_json()) == snapshot
    apply_ruleset(fake, node_ruleset({"tap7": 7}, policy="accept"), previous=old)
    restore_snapshot(fake, Snapshot.from_json(snapshot.to_json()))
    assert listing_hash(fake, old) == listing_hash(apply_fresh(old), old)
    assert len(fake.transactions[-1]) > 0


def test_remove_ruleset_is_idempotent_and_selective() -> None:
    fake = with_docker()
    ruleset = node_ruleset()
    apply_ruleset(fake, ruleset)
    remove_ruleset(fake, ruleset)
    remove_ruleset(fake, ruleset)
    assert fake.list_tables() == [("inet", "docker")]


def test_hash_ignores_counters_but_not_handles() -> None:
    fake = FakeBackend()
    ruleset = node_ruleset()
    result = apply_ruleset(fake, ruleset)
    table = fake.tables[("inet", TABLE)]
    for rules in table.rules.values():
        for rule in rules:
            rule["expr"] = [{"counter": {"packets": 5, "bytes": 500}} if s == {"counter": None} else s
                            for s in rule["expr"]]
    assert readback_hash(fake, ruleset) == result.readback_hash
    table.rules["input"][0]["handle"] += 1000  # the same rule, deleted and added again
    assert readback_hash(fake, ruleset) != result.readback_hash
    assert listing_hash(fake, ruleset) == listing_hash(apply_fresh(ruleset), ruleset)
    table.rules["input"].append({"handle": 1, "expr": [{"drop": None}]})
    assert readback_hash(fake, ruleset) != result.readback_hash


def test_rule_comment_none_and_empty_agree() -> None:
    fake = FakeBackend()
    ruleset = node_ruleset()
    inet = ruleset.table("inet", TABLE)
    chains = tuple(
        dataclasses.replace(c, rules=c.rules + (Rule((x.accept(),), ""),)) if c.name == "input" else c
        for c in inet.chains
    )
    ruleset = dataclasses.replace(ruleset, tables=(dataclasses.replace(inet, chains=chains),))
    apply_ruleset(fake, ruleset)
