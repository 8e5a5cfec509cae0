"""The stages that create absent tables (dataplane/stages.py), against the fake
backend: what goes in which stage, and that the stages end where one transaction does."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from tests.test_golden import scenarios
from zonewall.compiler.ir import Ruleset
from zonewall.compiler.node import compile_node
from zonewall.dataplane import apply
from zonewall.dataplane.apply import apply_ruleset
from zonewall.dataplane.backend import NftError
from zonewall.dataplane.fake import FakeBackend
from zonewall.dataplane.readback import listing_hash
from zonewall.dataplane.stages import ELEMENTS_PER_COMMAND, creation_stages
from zonewall.policy.loader import load_policy

from .samples import node_ruleset


def _compiled(scenario: str) -> Ruleset:
    path = next(p for p, _ in scenarios() if p.name == scenario)
    return compile_node(load_policy(path), "node1", timezone="UTC")


def _stages(ruleset: Ruleset, size: int) -> list[list[dict]]:  # type: ignore[type-arg]
    stages = list(creation_stages(ruleset, size))
    for stage in stages:
        assert json.loads(stage.text) == {"nftables": stage.commands}  # the encoding reused is the commands'
    return [stage.commands for stage in stages]


def _kind(command: dict) -> tuple[str, str]:  # type: ignore[type-arg]
    ((kind, body),) = command["add"].items()
    return kind, body.get("chain") if kind == "rule" else body.get("name")


@pytest.mark.parametrize("scenario", ["rate-limits", "conntrack-timeouts", "guard-learning", "nat", "conntrack-helpers"])
def test_stages_carry_every_command_once_and_the_hooks_only_in_the_last(scenario: str) -> None:
    ruleset = _compiled(scenario)
    batch, _ = apply._full_batch(ruleset, {}, [], None)
    stages = _stages(ruleset, 6)
    assert len(stages) >= 3
    sent = Counter(json.dumps(c, sort_keys=True) for stage in stages for c in stage)
    assert sent == Counter(json.dumps(c, sort_keys=True) for c in batch.commands)  # (ct timeouts: neither, sent as text)
    hooked = {c.name for t in ruleset.tables for c in t.chains if c.hook is not None}
    for stage in stages[:-1]:
        assert not [c for c in stage if _kind(c)[0] == "chain" and "hook" in c["add"]["chain"]]
        assert not [c for c in stage if _kind(c)[0] == "rule" and _kind(c)[1] in hooked]
        kinds = {_kind(c)[0] for c in stage}
        one_chain = kinds == {"rule"} and len({_kind(c)[1] for c in stage}) == 1
        assert len(stage) <= 6 or one_chain or kinds == {"chain"}  # larger: one chain's rules, or the chains declared
    assert {c["add"]["chain"]["name"] for c in stages[-1] if _kind(c)[0] == "chain"} == hooked


def test_a_set_the_packet_path_writes_is_made_with_the_rules_that_write_it() -> None:
    ruleset = _compiled("rate-limits")
    stages = _stages(ruleset, 6)
    written = {s.name for t in ruleset.tables for s in t.sets if s.timeout is not None or "timeout" in s.flags}
    assert written
    last = stages[-1]
    assert written <= {_kind(c)[1] for c in last if _kind(c)[0] == "set"}
    for stage in stages[:-1]:
        for command in stage:
            if _kind(command)[0] == "rule":
                assert not any(f'"@{name}"' in json.dumps(command) for name in written), command


def test_staged_creation_ends_where_one_transaction_does(monkeypatch: pytest.MonkeyPatch) -> None:
    ruleset = node_ruleset({f"tap{i}": 1000 + i for i in range(40)})
    one = FakeBackend()
    apply_ruleset(one, ruleset)
    assert len(one.transactions) == 1
    monkeypatch.setattr(apply, "STAGE_COMMANDS", 9)
    staged = FakeBackend()
    apply_ruleset(staged, ruleset)
    assert len(staged.transactions) > 3
    assert listing_hash(staged, ruleset) == listing_hash(one, ruleset)
    # tables that exist are replaced in one transaction, whatever their size
    before = len(staged.transactions)
    replacement = node_ruleset({f"tap{i}": 2000 + i for i in range(40)})
    apply_ruleset(staged, replacement)
    assert len(staged.transactions) == before + 1 and len(staged.transactions[-1]) > 9
    assert listing_hash(staged, replacement) != listing_hash(one, ruleset)


def test_set_elements_count_toward_a_stage_as_commands_do() -> None:
    """libnftables holds a stage's elements as it holds commands (~0.8 KiB each): a
    stage of 500 commands with 20,000 elements took an agent's heap up 16.6 MiB."""
    admins = tuple(f"10.{n // 250}.{n % 250}.1" for n in range(800))
    ruleset = node_ruleset({f"tap{n}": 1000 + n for n in range(40)}, admins=admins)
    stages = _stages(ruleset, 60)
    weight = lambda stage: len(stage) + sum(len(c["add"].get("set", {}).get("elem") or ()) for c in stage) // ELEMENTS_PER_COMMAND
    big = [stage for stage in stages if any(len(c["add"].get("set", {}).get("elem") or ()) == 800 for c in stage)]
    assert len(big) == 1 and len(big[0]) == 1  # the set alone: 101 commands' worth
    assert all(weight(stage) <= 60 for stage in stages[:-1] if stage is not big[0])


class _ReadsFailWhileStagesGoIn(FakeBackend):
    def read_state(self, tables, *, base=None, scope=None, steady=True):  # type: ignore[no-untyped-def]
        if not steady:
            raise NftError("netlink: No buffer space available")
        return super().read_state(tables, base=base, scope=scope)


def test_a_read_back_failing_while_stages_go_in_leaves_it_to_one_whole_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a stage finished is read back while the next goes in (dataplane/creation.py);
    if such a read fails, the apply still stands: the tables are read whole at the end."""
    ruleset = node_ruleset({f"tap{i}": 1000 + i for i in range(40)})
    monkeypatch.setattr(apply, "STAGE_COMMANDS", 9)
    backend = _ReadsFailWhileStagesGoIn()
    result = apply_ruleset(backend, ruleset)
    assert result.mode == "full" and len(backend.transactions) > 3
    assert result.view.tables == backend.read_state([(t.family, t.name) for t in ruleset.tables])[1]
