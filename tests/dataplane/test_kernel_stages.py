"""Tables created from nothing in stages (dataplane/stages.py, creation.py), against
the kernel: no stage but the last gives the kernel a hook into them, the result is
what one transaction makes, what is read back while later stages go in is what the
kernel holds at the end (a change someone else makes meanwhile is seen), and a stage
the kernel refuses leaves nothing of ours behind."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

import pytest

from zonewall.compiler import nftexpr as x
from zonewall.compiler.ir import Chain, Rule, Ruleset
from zonewall.dataplane import apply
from zonewall.dataplane.apply import VerifyError, apply_ruleset
from zonewall.dataplane.backend import Json, LibNftBackend, NftError, Pending
from zonewall.dataplane.readback import listing_hash, readback_hash
from zonewall.dataplane.stages import creation_stages

from .kernel_helpers import foreign_listing, load_foreign, nft, tables
from .samples import TABLE, node_ruleset
from .test_kernel_state import rulesets

pytestmark = pytest.mark.kernel


class Watched:
    """A backend that notes, after each transaction, the base chains of `ours` the kernel holds."""

    def __init__(self, backend: LibNftBackend, netns: str, ours: set[tuple[str, str]]) -> None:
        self._backend, self._netns, self._ours = backend, netns, ours
        self.hooked_after: list[set[str]] = []

    def run(self, commands: list[Json], *, text: str | None = None) -> None:
        self.start(commands, text=text).wait()

    def start(self, commands: list[Json], *, text: str | None = None) -> Pending:
        return _Noted(self._backend.start(commands, text=text), self._note)

    def _note(self) -> None:
        listed = json.loads(nft(self._netns, "-j", "list", "chains"))["nftables"]
        self.hooked_after.append({
            f"{c['family']} {c['table']} {c['name']}" for o in listed if "chain" in o
            for c in [o["chain"]] if "hook" in c and (c["family"], c["table"]) in self._ours
        })

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)


class _Noted:
    """A transaction whose end is noted when it is waited for."""

    def __init__(self, pending: Pending, note: Callable[[], None]) -> None:
        self._pending, self._note = pending, note

    def wait(self) -> None:
        self._pending.wait()
        self._note()


def _one_transaction(netns: str, ruleset: Ruleset) -> str:
    """The listing hash of `ruleset` applied in `netns` (small enough: one transaction)."""
    with LibNftBackend(netns) as one:
        apply_ruleset(one, ruleset)
        return listing_hash(one, ruleset)


def _hooks(ruleset: Ruleset) -> set[str]:
    return {f"{t.family} {t.name} {c.name}" for t in ruleset.tables for c in t.chains if c.hook is not None}


def test_tables_created_in_stages_are_what_one_transaction_makes_and_hook_in_only_at_the_last(
    netns_factory: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    staged = 0
    for name, ruleset in rulesets():  # every golden scenario and a synthetic node: every kind of object
        keys = {(t.family, t.name) for t in ruleset.tables}
        monkeypatch.setattr(apply, "STAGE_COMMANDS", 10**9)
        expected = _one_transaction(netns_factory(), ruleset)
        monkeypatch.setattr(apply, "STAGE_COMMANDS", 7)
        netns = netns_factory()
        with LibNftBackend(netns) as backend:
            watched = Watched(backend, netns, keys)
            result = apply_ruleset(watched, ruleset)  # type: ignore[arg-type]
            assert result.mode == "full"
            assert listing_hash(backend, ruleset) == expected, name
            # read back while later stages went in, and yet what one whole read sees
            assert result.view.digest == readback_hash(backend, ruleset) == result.readback_hash, name
        runs = watched.hooked_after
        assert len(runs) >= 3, (name, len(runs))
        assert all(not hooked for hooked in runs[:-1]), (name, runs)  # inert until the last stage
        assert runs[-1] == _hooks(ruleset), name
        staged += 1
    assert staged >= 20


def test_a_creation_within_one_stage_and_a_replace_stay_one_transaction(netns_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    small = node_ruleset()
    monkeypatch.setattr(apply, "STAGE_COMMANDS", len(apply._full_batch(small, {}, [], None)[0].commands))
    with LibNftBackend(netns_name) as backend:
        watched = Watched(backend, netns_name, {(t.family, t.name) for t in small.tables})
        apply_ruleset(watched, small)  # type: ignore[arg-type]
        assert len(watched.hooked_after) == 1
        monkeypatch.setattr(apply, "STAGE_COMMANDS", 3)
        larger = node_ruleset({f"tap{i}": 1000 + i for i in range(20)})
        apply_ruleset(watched, larger)  # our tables are there and filtering: replaced in one transaction
        assert len(watched.hooked_after) == 2
        assert watched.hooked_after[-1] == _hooks(larger)


def test_a_stage_the_kernel_refuses_leaves_no_table_of_ours(netns_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    docker = load_foreign(netns_name)
    good = node_ruleset({f"tap{i}": 1000 + i for i in range(20)})
    inet = good.table("inet", TABLE)
    # The kernel refuses a jump to a chain that does not exist; it comes after the
    # other chains' rules, so earlier stages have committed when it is refused.
    broken = Chain("broken", (Rule((x.jump("no_such_chain"),), "bad"),))
    bad = dataclasses.replace(good, tables=(dataclasses.replace(inet, chains=inet.chains + (broken,)),) + good.tables[1:])
    monkeypatch.setattr(apply, "STAGE_COMMANDS", 5)
    with LibNftBackend(netns_name) as backend:
        watched = Watched(backend, netns_name, {(t.family, t.name) for t in bad.tables})
        with pytest.raises(NftError, match="No such file or directory"):
            apply_ruleset(watched, bad)  # type: ignore[arg-type]
        assert len(watched.hooked_after) >= 3  # stages committed before the refusal, then the removal
        assert tables(netns_name) == [("inet", "docker")]
        assert foreign_listing(netns_name) == docker
        result = apply_ruleset(watched, good)  # and the next apply builds them again
        assert result.mode == "full" and watched.hooked_after[-1] == _hooks(good)


class Dies(Watched):
    """The agent killed after `runs` transactions (a kill -9 between stages)."""

    def __init__(self, backend: LibNftBackend, netns: str, ours: set[tuple[str, str]], runs: int) -> None:
        super().__init__(backend, netns, ours)
        self._runs = runs

    def start(self, commands: list[Json], *, text: str | None = None) -> Pending:
        if len(self.hooked_after) == self._runs:
            raise SystemExit("killed")
        return super().start(commands, text=text)


def test_an_agent_killed_between_stages_leaves_inert_tables_its_next_apply_completes(
    netns_factory: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    ruleset = node_ruleset({f"tap{i}": 1000 + i for i in range(20)})
    keys = {(t.family, t.name) for t in ruleset.tables}
    expected = _one_transaction(netns_factory(), ruleset)
    monkeypatch.setattr(apply, "STAGE_COMMANDS", 5)
    netns = netns_factory()
    with LibNftBackend(netns) as backend:
        dying = Dies(backend, netns, keys, 3)
        with pytest.raises(SystemExit):
            apply_ruleset(dying, ruleset)  # type: ignore[arg-type]
        assert ("inet", TABLE) in tables(netns) and dying.hooked_after[-1] == set()  # there, and inert
    with LibNftBackend(netns) as restarted:
        watched = Watched(restarted, netns, keys)
        result = apply_ruleset(watched, ruleset, previous=ruleset)  # what the agent's restore does
        assert result.mode == "full" and len(watched.hooked_after) == 1  # the inert tables replaced in one transaction
        assert watched.hooked_after[-1] == _hooks(ruleset)
        assert listing_hash(restarted, ruleset) == expected


class Tampers(Watched):
    """Someone else inserts an accept into one of our chains when transaction `at` ends."""

    def __init__(self, backend: LibNftBackend, netns: str, ours: set[tuple[str, str]], at: int, chain: str) -> None:
        super().__init__(backend, netns, ours)
        self._at, self._chain = at, chain

    def _note(self) -> None:
        if len(self.hooked_after) == self._at:
            nft(self._netns, "insert", "rule", "inet", TABLE, self._chain, "accept")
        super()._note()


def test_a_chain_changed_by_someone_else_after_it_was_read_back_is_seen(netns_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A finished chain is read back while the next stages go in. Someone else's rule
    put into it afterwards (an accept: it would open the node) moves the ruleset
    generation past our own stages' count: the apply reads everything again, finds
    the rule and takes its tables out."""
    ruleset = node_ruleset({f"tap{i}": 1000 + i for i in range(20)})
    monkeypatch.setattr(apply, "STAGE_COMMANDS", 5)
    stages = list(creation_stages(ruleset, 5))
    index, chain = next((i, sorted(s.finished[("inet", TABLE)][0])[0]) for i, s in enumerate(stages) if s.finished.get(("inet", TABLE), ((), ()))[0])
    assert index + 1 < len(stages) - 1  # read back while later stages, not the last, go in
    with LibNftBackend(netns_name) as backend:
        tampering = Tampers(backend, netns_name, {(t.family, t.name) for t in ruleset.tables}, index + 1, chain)
        with pytest.raises(VerifyError, match=f"chain {chain} has"):
            apply_ruleset(tampering, ruleset)  # type: ignore[arg-type]
        assert ("inet", TABLE) not in tables(netns_name)
        # left alone, the same apply stands and reads back what a whole read sees
        result = apply_ruleset(backend, ruleset)
        assert result.mode == "full" and result.view.digest == readback_hash(backend, ruleset)
