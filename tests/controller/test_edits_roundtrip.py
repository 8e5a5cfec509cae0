"""Targeted API edits keep the edited document's comments and layout (round-trip YAML),
so a change made through the API can be pulled into the git checkout and committed
back as a small diff.

The fixture is a commented 54-line document (tests/controller/fixtures/commented/
gitlab.yaml): block and flow style, comments above, beside and below rules, blank
lines. Before round-trip editing, adding one rule rewrote it into 108 lines without
a single comment.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from fastapi.testclient import TestClient

from tests.controller.live import Tokens
from zonewall.policy.documents import read_directory
from zonewall.policy.edits import add_rule, move_vm, remove_rule

COMMENTED = Path(__file__).parent / "fixtures" / "commented"
RULE = {"id": "gitlab-registry", "direction": "in", "action": "accept", "from": "group:devs", "tcp": 5050}


def changes(before: str, after: str) -> tuple[list[str], list[str]]:
    """(lines removed, lines added) between two texts."""
    removed, added = [], []
    for line in difflib.ndiff(before.splitlines(), after.splitlines()):
        if line.startswith("- "):
            removed.append(line[2:])
        elif line.startswith("+ "):
            added.append(line[2:])
    return removed, added


def upload(client: TestClient, tokens: Tokens) -> dict[str, str]:
    documents = read_directory(COMMENTED)
    response = client.put("/api/v1/policy", json={"documents": documents, "message": "initial"}, headers=tokens.header("admin"))
    assert response.status_code == 201, response.text
    return documents


def current(client: TestClient, tokens: Tokens) -> dict[str, str]:
    return client.get("/api/v1/policy", headers=tokens.header("admin")).json()["documents"]


def test_adding_a_rule_through_the_api_keeps_every_comment_and_line(client: TestClient, tokens: Tokens) -> None:
    before = upload(client, tokens)
    assert len(before["gitlab.yaml"].splitlines()) == 54
    response = client.post("/api/v1/vms/gitlab/rules", json={"rule": RULE, "message": "container registry"}, headers=tokens.header("admin"))
    assert response.status_code == 201, response.text
    after = current(client, tokens)
    removed, added = changes(before["gitlab.yaml"], after["gitlab.yaml"])
    assert removed == []  # every original line, comments included, is still there
    assert 1 <= len(added) <= 6, added  # only the new rule
    assert any("gitlab-registry" in line for line in added)
    assert len(after["gitlab.yaml"].splitlines()) == 54 + len(added)
    assert after["base.yaml"] == before["base.yaml"]  # other documents byte for byte


def test_a_rule_added_at_a_position_lands_between_the_existing_ones(client: TestClient, tokens: Tokens) -> None:
    before = upload(client, tokens)
    response = client.post("/api/v1/vms/gitlab/rules", json={"rule": RULE, "position": 1, "message": "m"}, headers=tokens.header("admin"))
    assert response.status_code == 201, response.text
    text = current(client, tokens)["gitlab.yaml"]
    assert text.index("gitlab-https") < text.index("gitlab-registry") < text.index("gitlab-ssh")
    assert changes(before["gitlab.yaml"], text)[0] == []


def test_removing_a_rule_removes_its_lines_and_its_own_comment_only(client: TestClient, tokens: Tokens) -> None:
    before = upload(client, tokens)
    response = client.delete("/api/v1/vms/gitlab/rules/gitlab-from-runners", params={"message": "runners use ssh"}, headers=tokens.header("admin"))
    assert response.status_code == 201, response.text
    after = current(client, tokens)["gitlab.yaml"]
    removed, added = changes(before["gitlab.yaml"], after)
    assert added == []
    # the rule, the comment line directly above it (it describes the rule) and the blank
    # line that would otherwise be doubled; the next VM's comment stays
    assert sorted(line.strip() for line in removed) == sorted(
        ["", "# runners fetch jobs from the API", "- {id: gitlab-from-runners, direction: in, action: accept, from: zone:ci, tcp: 443}"])
    assert "      tcp: 2222\n\n  # Two shared runners" in after

    response = client.delete("/api/v1/vms/gitlab/rules/gitlab-https", params={"message": "m"}, headers=tokens.header("admin"))
    assert response.status_code == 201, response.text
    removed, _ = changes(after, current(client, tokens)["gitlab.yaml"])
    assert "      # git over ssh (port 22 is the host's own sshd)." not in removed  # the next rule's comment stays


def test_moving_a_vm_changes_only_its_zone_line(client: TestClient, tokens: Tokens) -> None:
    before = upload(client, tokens)
    response = client.put("/api/v1/vms/runner2/zone", json={"zone": "tools", "message": "m"}, headers=tokens.header("admin"))
    assert response.status_code == 201, response.text
    removed, added = changes(before["gitlab.yaml"], current(client, tokens)["gitlab.yaml"])
    assert removed == ["    zone: ci   # same as runner1"]
    assert added == ["    zone: tools   # same as runner1"]


def test_a_zone_rule_keeps_the_zones_document_comments(client: TestClient, tokens: Tokens) -> None:
    before = upload(client, tokens)
    rule = {"id": "tools-https", "direction": "in", "action": "accept", "from": "group:devs", "tcp": 443}
    response = client.post("/api/v1/zones/tools/rules", json={"rule": rule, "message": "m"}, headers=tokens.header("admin"))
    assert response.status_code == 201, response.text
    removed, added = changes(before["base.yaml"], current(client, tokens)["base.yaml"])
    assert removed == [] and len(added) == 1 and "tools-https" in added[0], added
    # a flow-style list stays flow style: the new item is written like its neighbour
    assert added[0].strip().startswith("- {id: tools-https")


def test_rules_added_to_an_entry_without_rules_and_to_an_empty_zone() -> None:
    documents = read_directory(COMMENTED)
    edited = add_rule(documents, "zones", "ci", {"id": "ci-out", "direction": "out", "action": "accept", "tcp": 443})
    removed, added = changes(documents["base.yaml"], edited.documents["base.yaml"])
    assert removed == []
    assert "rules:" in "\n".join(added) and "ci-out" in "\n".join(added)
    moved = move_vm(edited.documents, "gitlab", None)  # no zone: the key goes, its line with it
    assert "zone: tools" not in moved.documents["gitlab.yaml"].split("runner1")[0]


def test_edits_of_a_document_without_comments_read_back_identically() -> None:
    plain = {"p.yaml": "version: 1\nzones:\n  z: {}\n"}
    edited = add_rule(plain, "zones", "z", {"id": "a", "direction": "in", "action": "accept", "tcp": 22})
    import yaml

    assert yaml.safe_load(edited.documents["p.yaml"]) == {"version": 1, "zones": {"z": {"rules": [{"id": "a", "direction": "in", "action": "accept", "tcp": 22}]}}}
    back = remove_rule(edited.documents, "zones", "z", "a")
    assert yaml.safe_load(back.documents["p.yaml"]) == {"version": 1, "zones": {"z": {"rules": []}}}


def test_unquoted_macs_and_sexagesimal_looking_values_survive_an_edit() -> None:
    # YAML 1.1 reads 52:54:00:10:00:20 as a base-60 integer; the loader does not, nor may the editor
    documents = {"v.yaml": "version: 1\nvms:\n  a:\n    host: n\n    nics:\n      - {network: s, mac: 52:54:00:10:00:20}\n    on: yes\n"}
    edited = add_rule(documents, "vms", "a", {"id": "r", "direction": "in", "action": "accept", "tcp": 80})
    assert "mac: 52:54:00:10:00:20}" in edited.documents["v.yaml"]
    assert "on: yes" in edited.documents["v.yaml"]


def test_every_edit_of_every_example_is_patched_in_place_not_redumped() -> None:
    """Each VM and zone of the examples: a rule added at every position, every rule
    with an id removed, every VM moved; each result reads exactly as the data edit
    (yamlpatch checks it) and keeps the lines no edit touched."""
    from zonewall.policy import yamlpatch

    examples = Path(__file__).resolve().parents[2] / "examples"
    count = 0
    for policy_dir in sorted(p for p in examples.glob("*/policy") if p.is_dir()):
        documents = read_directory(policy_dir)
        for name, text in documents.items():
            data = yamlpatch.parse(text)
            for section in ("vms", "zones"):
                for owner, entry in (data.get(section) or {}).items():
                    rules = (entry or {}).get("rules") or []
                    for position in range(len(rules) + 1):
                        new = {"id": f"zz-{position}", "direction": "in", "action": "accept", "tcp": 1000 + position}
                        edited = add_rule(documents, section, owner, new, position)
                        removed = changes(text, edited.documents[name])[0]
                        assert removed == [] if rules else removed == [line for line in text.splitlines() if line.strip() == "rules: []"], (name, owner, removed)
                        count += 1
                    for rule in rules:
                        if isinstance(rule, dict) and "id" in rule:
                            removed, added = changes(text, remove_rule(documents, section, owner, rule["id"]).documents[name])
                            # the last rule leaves `rules: []` behind
                            assert added == [] or (len(rules) == 1 and [a.strip() for a in added] == ["rules: []"]), added
                            assert any(rule["id"] in line for line in removed)
                            count += 1
                    if section == "vms":
                        moved = move_vm(documents, owner, "elsewhere").documents[name]
                        assert len(changes(text, moved)[0]) <= 1
    assert count > 40
