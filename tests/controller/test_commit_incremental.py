"""A commit that rewrites a VM's rule in place is validated from the previous
revision (policy/incremental.py) and stored like any other: its revision, its node
states and its diff are those of the whole load; a mistake in such an edit is
refused with the whole load's `file:line:col`, and nothing is stored. The parsed
parent of the newest revision stays at hand (store/cache.py), so a chain of commits
parses nothing again. The same for a group's member line (the group's users
re-checked, the diff showing the flows the new member opens)."""

from __future__ import annotations

import gc
import weakref

import pytest
from fastapi.testclient import TestClient

from bench.synth import policy_text
from tests.controller.live import Tokens
from zonewall.analysis import kept
from zonewall.controller.replica import Controller
from zonewall.controller.store import cache as cache_module
from zonewall.policy import documents, incremental
from zonewall.policy.documents import load_documents
from zonewall.policy.errors import PolicyError

TEXT = policy_text(40, nodes=3)
LINES = TEXT.split("\n")
VMS = LINES.index("vms:")
RULE = next(n for n, line in enumerate(LINES) if n > VMS and line.startswith("      - {direction: in, action: accept, from: group:admins, tcp: 22"))


def put(client: TestClient, tokens: Tokens, text: str) -> object:
    return client.put("/api/v1/policy", json={"documents": {"policy.yaml": text}, "message": "edit"}, headers=tokens.header("admin"))


def with_rule(text: str) -> str:
    lines = list(LINES)
    lines[RULE] = text
    return "\n".join(lines)


def test_in_place_edits_commit_as_the_whole_load_would(client: TestClient, tokens: Tokens, controller) -> None:
    assert put(client, tokens, TEXT).status_code == 201
    cache = controller.revisions.cache
    for port in (2201, 2202, 2203):
        new = with_rule(f"      - {{direction: in, action: accept, from: group:admins, tcp: {port}}}")
        response = put(client, tokens, new)
        assert response.status_code == 201, response.text
        number = response.json()["revision"]["number"]
        view = cache.peek(number)
        assert view is not None and view.policy.doc == load_documents({"policy.yaml": new}).doc
        diff = client.get(f"/api/v1/revisions/{number}", headers=tokens.header("admin")).json()["diff"]
        assert any(f"tcp {port}" in row["services"] for row in diff["flows"] if row["change"] == "opened"), diff
    assert cache.parses == 0  # nothing was parsed again: not the parent, not the new revision


def test_a_mistake_in_an_in_place_edit_is_refused_with_its_position(client: TestClient, tokens: Tokens) -> None:
    assert put(client, tokens, TEXT).status_code == 201
    bad = with_rule("      - {direction: in, action: accept, from: group:nosuch, tcp: 22}")
    try:
        load_documents({"policy.yaml": bad})
        raise AssertionError("the whole load accepts it")
    except PolicyError as exc:
        expected = [str(p) for p in exc.problems]
    response = put(client, tokens, bad)
    assert response.status_code == 422
    assert [p["text"] for p in response.json()["detail"]["problems"]] == expected
    assert expected[0].startswith(f"policy.yaml:{RULE + 1}:")
    revisions = client.get("/api/v1/revisions", headers=tokens.header("admin")).json()
    assert [r["number"] for r in revisions] == [1]  # nothing stored


ADMINS = LINES.index("  admins: [192.168.100.0/24, \"fd00:100::/64\"]")


def test_a_group_member_edit_commits_without_the_whole_load(client: TestClient, tokens: Tokens, controller, monkeypatch: pytest.MonkeyPatch) -> None:
    assert put(client, tokens, TEXT).status_code == 201
    whole: list[int] = []
    original = documents.load_documents
    monkeypatch.setattr(documents, "load_documents", lambda docs: whole.append(1) or original(docs))
    lines = list(LINES)
    lines[ADMINS] = '  admins: [192.168.100.0/24, 203.0.113.77, "fd00:100::/64"]'
    new = "\n".join(lines)
    response = put(client, tokens, new)
    assert response.status_code == 201, response.text
    number = response.json()["revision"]["number"]
    assert whole == []  # validated from the previous revision
    view = controller.revisions.cache.peek(number)
    assert view is not None and view.policy.doc == original({"policy.yaml": new}).doc
    diff = client.get(f"/api/v1/revisions/{number}", headers=tokens.header("admin")).json()["diff"]
    opened = [row for row in diff["flows"] if row["change"] == "opened"]
    assert opened and all("outside:203.0.113.77" in row["from"] for row in opened), diff
    assert any("tcp 22" in row["services"] for row in opened)
    # a member that does not exist: refused with the whole load's position, nothing stored
    lines[ADMINS] = "  admins: [192.168.100.0/24, vm:nosuchvm]"
    refused = put(client, tokens, "\n".join(lines))
    assert refused.status_code == 422 and refused.json()["detail"]["problems"][0]["text"].startswith(f"policy.yaml:{ADMINS + 1}:")
    assert whole == [1]  # that one went the whole way, which reports it
    revisions = client.get("/api/v1/revisions", headers=tokens.header("admin")).json()
    assert [r["number"] for r in revisions] == [number, 1]


def test_a_whole_parse_freezes_survivors_and_frees_evicted_policies(client: TestClient, tokens: Tokens, controller) -> None:
    """store/cache.py: after a whole parse what survives is frozen for the collector
    (its oldest generation no longer walks a parsed policy's millions of objects on
    some commit); an edit from it freezes what it left alive; a later whole parse
    collects what was evicted meanwhile, frozen reference cycles included."""
    assert put(client, tokens, TEXT).status_code == 201
    cache = controller.revisions.cache
    assert gc.get_freeze_count() > 0
    edit = with_rule("      - {direction: in, action: accept, from: group:admins, tcp: 2299}")
    assert put(client, tokens, edit).status_code == 201
    analyzer = cache.newest().policy.__dict__[kept.KEPT][2]
    assert not any(o is analyzer for o in gc.get_objects())  # frozen: the oldest generation no longer walks it
    del analyzer
    held = _plant_cycle(cache.newest().policy)  # as a policy's own cycles would be
    for n in range(2):  # whole parses (a setting changed: no edit load_edit takes); the second evicts the edit
        other = TEXT.replace("rate: 10/second", f"rate: {11 + n}/second", 1)
        assert other != TEXT
        assert put(client, tokens, other).status_code == 201
        if n == 0:
            assert held() is not None  # still the kept revisions' (and now frozen with them)
    assert held() is None  # evicted: collected, though frozen and cyclic


class _Cycle:
    pass


def _plant_cycle(policy: object) -> weakref.ref[_Cycle]:
    cycle = _Cycle()
    cycle.me = cycle  # type: ignore[attr-defined]
    policy.__dict__["_test_cycle"] = cycle
    return weakref.ref(cycle)


def _rule_edit(n: int) -> str:
    return with_rule(f"      - {{direction: in, action: accept, from: group:admins, tcp: {2200 + n}}}")


@pytest.mark.parametrize("forgotten", [True, False], ids=["kept analyzer dropped on eviction", "kept analyzer left"])
def test_an_evicted_edit_goes_by_its_counts_though_frozen(client: TestClient, tokens: Tokens, controller, monkeypatch: pytest.MonkeyPatch, forgotten: bool) -> None:
    """A rule edit's diff keeps its analyzer with the new policy (analysis/kept.py),
    and each commit freezes what it left alive; when that revision leaves the cache
    its policy and analyzer are freed at once, frozen or not: the analyzer, which
    refers back to the policy, is dropped with it (left, the two would stay frozen
    in a cycle until the next whole parse)."""
    if not forgotten:
        monkeypatch.setattr(cache_module, "forget", lambda policy: None)
    assert put(client, tokens, TEXT).status_code == 201
    cache = controller.revisions.cache
    assert put(client, tokens, _rule_edit(1)).status_code == 201
    policy = cache.newest().policy
    analyzer = policy.__dict__[kept.KEPT][2]
    held = weakref.ref(policy), weakref.ref(analyzer)
    del policy, analyzer
    for n in (2, 3):  # the third revision of the chain evicts the first edit (two are kept)
        assert put(client, tokens, _rule_edit(n)).status_code == 201
    assert [ref() is None for ref in held] == [forgotten, forgotten]
    if not forgotten:  # what the next full collection frees
        cache_module.freeze_survivors()
        assert [ref() is None for ref in held] == [True, True]


def test_cycles_frozen_with_edits_are_collected_every_sweep(client: TestClient, tokens: Tokens, controller, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a commit left frozen in a cycle waits for a full collection: the next
    whole parse, or every SWEEP_EVERY commits if none comes."""
    monkeypatch.setattr(cache_module, "SWEEP_EVERY", 3)
    assert put(client, tokens, TEXT).status_code == 201  # a whole parse sweeps; its diff is commit 1 of the count
    cache = controller.revisions.cache
    assert put(client, tokens, _rule_edit(1)).status_code == 201  # 2
    held = _plant_cycle(cache.newest().policy)
    alive = []
    for n in (2, 3, 4, 5):  # 3 (a sweep: the edit is still kept), 1 (evicted), 2, 3 (a sweep)
        assert put(client, tokens, _rule_edit(n)).status_code == 201
        alive.append(held() is not None)
    assert alive == [True, True, True, False]


def test_a_policy_loaded_whole_is_indexed_for_its_first_edit(client: TestClient, tokens: Tokens, controller: Controller) -> None:
    """Where each VM's and zone's rules are written is found when a policy is loaded
    whole (a commit, a revision parsed from the database), not by the first edit of it
    (the slowest commit of a chain: ~0.17 s at 10,000 VMs)."""
    assert incremental._SPANS not in load_documents({"policy.yaml": TEXT}).__dict__  # loading alone does not
    assert put(client, tokens, TEXT).status_code == 201
    head = controller.revisions.view(1)
    assert head is not None and incremental._SPANS in head.policy.__dict__
    parsed = cache_module.RevisionCache(controller.sessions).get(1)  # read back from the database
    assert parsed is not None and parsed.policy is not head.policy and incremental._SPANS in parsed.policy.__dict__
    assert put(client, tokens, with_rule(LINES[RULE].replace("tcp: 22", "tcp: 2222"))).status_code == 201
    edited = controller.revisions.view(2)
    assert edited is not None and edited.policy.__dict__.get(incremental._SPANS) is head.policy.__dict__[incremental._SPANS]  # handed on
