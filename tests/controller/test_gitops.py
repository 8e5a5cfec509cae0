"""GitOps against a real controller (uvicorn on 127.0.0.1) and a real git repository.

Each new commit on the followed branch becomes a revision with the commit's author
and message; an invalid commit is refused with its problems visible in the status
and the previous revision stays current; a later good commit is taken again.
(The same with agents and kernels: tests/kernel/test_gitops_lab.py.)
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.controller.live import LiveController, live_controller, three_tier_documents
from tests.gitrepo import Repo
from zonewall.controller.gitops import GitFollower, GitSource

POLICY = three_tier_documents()["policy.yaml"]
PARTNER = "  web1:\n    host: node1\n"


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    found = Repo(tmp_path / "repo")
    found.commit("initial policy\n\nthe three tiers", {"README.md": "policies\n", "policy/policy.yaml": POLICY})
    return found


@pytest.fixture
def live(tmp_path: Path, repo: Repo) -> Iterator[LiveController]:
    with live_controller(tmp_path / "ctl") as found:
        found.controller.gitops = GitFollower(found.controller, GitSource(str(repo.path), "main", "policy", interval=3600), tmp_path / "ctl" / "gitops")
        yield found


def api(live: LiveController, method: str, path: str, who: str = "admin", **kwargs) -> httpx.Response:
    return httpx.request(method, live.url + "/api/v1" + path, headers=live.tokens.header(who), timeout=60, **kwargs)


def sync(live: LiveController) -> dict:
    answer = api(live, "POST", "/gitops/sync")
    assert answer.status_code == 200, answer.text
    return answer.json()


def revisions(live: LiveController) -> list[dict]:
    return api(live, "GET", "/revisions").json()


def opened_port(port: int) -> str:
    return POLICY.replace("    rules:\n      - {id: web-https", f"    rules:\n      - {{id: web-{port}, direction: in, action: accept, tcp: {port}}}\n      - {{id: web-https", 1)


def test_each_commit_becomes_a_revision_with_its_author_and_message(live: LiveController, repo: Repo) -> None:
    status = sync(live)
    head = repo.git("rev-parse", "HEAD")
    assert status["state"] == "following" and status["last_commit"] == head
    [first] = revisions(live)
    assert first["author"] == "Alice Admin <alice@example.org>" and first["message"] == "initial policy\n\nthe three tiers"
    assert first["kind"] == "git" and first["change"]["commit"] == head
    one = repo.commit("open 8443 for the partner", {"policy/policy.yaml": opened_port(8443)}, author=("Bob Ops", "bob@example.org"))
    two = repo.commit("and 8444", {"policy/policy.yaml": opened_port(8444).replace("tcp: 8444}", "tcp: [8443, 8444]}")})
    assert sync(live)["last_commit"] == two
    history = revisions(live)
    assert [(r["number"], r["author"], r["message"], r["change"]["commit"]) for r in history[:2]] == [
        (3, "Alice Admin <alice@example.org>", "and 8444", two), (2, "Bob Ops <bob@example.org>", "open 8443 for the partner", one)]
    shown = api(live, "GET", "/revisions/2").json()
    assert [f["services"] for f in shown["diff"]["flows"]] == [["tcp 8443"]]


def test_an_invalid_commit_is_refused_visibly_and_the_previous_revision_stays(live: LiveController, repo: Repo) -> None:
    sync(live)
    bad = repo.commit("typo", {"policy/policy.yaml": POLICY.replace("service: postgres}", "service: postgress}")})
    status = sync(live)
    assert status["state"] == "refused" and status["refused_commit"] == bad and status["refused_subject"] == "typo"
    assert any(p["text"].startswith("policy.yaml:") and "postgress" in p["text"] for p in status["problems"]), status["problems"]
    assert [r["number"] for r in revisions(live)] == [1]
    assert api(live, "GET", "/gitops", who="viewer").json()["refused_commit"] == bad  # a viewer sees it too
    fixed = repo.commit("fix the typo and open 8443", {"policy/policy.yaml": opened_port(8443)})
    status = sync(live)
    assert status["state"] == "following" and status["refused_commit"] is None and status["last_commit"] == fixed
    assert [r["number"] for r in revisions(live)] == [2, 1]


def test_a_commit_outside_the_policy_records_nothing_and_a_restart_continues(live: LiveController, repo: Repo, tmp_path: Path) -> None:
    sync(live)
    repo.commit("docs only", {"README.md": "policies, reviewed\n"})
    sync(live)
    assert len(revisions(live)) == 1
    # a new follower (a restarted controller) starts after the last commit it made a revision of
    again = GitFollower(live.controller, GitSource(str(repo.path), "main", "policy", interval=3600), tmp_path / "ctl" / "gitops")
    again.sync()
    assert len(revisions(live)) == 1 and again.status.state == "following"


def test_rewritten_history_takes_the_new_head(live: LiveController, repo: Repo) -> None:
    sync(live)
    repo.commit("open 8443", {"policy/policy.yaml": opened_port(8443)})
    sync(live)
    repo.git("reset", "--hard", "HEAD~1")
    rewritten = repo.commit("open 9000 instead", {"policy/policy.yaml": opened_port(9000)})
    status = sync(live)
    assert status["last_commit"] == rewritten
    assert revisions(live)[0]["change"]["commit"] == rewritten and len(revisions(live)) == 3


def test_an_unreachable_repository_is_an_error_status_not_a_crash(tmp_path: Path) -> None:
    with live_controller(tmp_path / "ctl") as live:
        live.controller.gitops = GitFollower(live.controller, GitSource(str(tmp_path / "nowhere"), "main"), tmp_path / "gitops")
        status = sync(live)
        assert status["state"] == "error" and "git fetch" in status["error"]
        assert revisions(live) == []


def test_an_api_edit_pulled_into_the_checkout_is_a_small_diff_to_commit_back(live: LiveController, repo: Repo) -> None:
    """The round trip a GitOps team lives with: an urgent change through the API, then
    `zonewall pull` into the checkout and a commit: git sees only the new rule's line,
    and the follower finds nothing new to do."""
    from typer.testing import CliRunner

    from zonewall.cli import app

    sync(live)
    rule = {"id": "partner-8443", "direction": "in", "action": "accept", "from": "203.0.113.10", "tcp": 8443}
    assert api(live, "POST", "/vms/web1/rules", json={"rule": rule, "message": "urgent"}).status_code == 201
    done = CliRunner().invoke(app, ["pull", str(repo.path / "policy"), "--controller", live.url, "--token", live.tokens.admin])
    assert done.exit_code == 0, done.output
    numstat = repo.git("diff", "--numstat").split()
    assert numstat[:3] == ["2", "0", "policy/policy.yaml"], numstat  # `rules:` and the rule added, nothing removed
    repo.commit("partner on 8443 (made through the API)")
    sync(live)
    assert len(revisions(live)) == 2  # the commit equals revision 2: nothing new


def test_credentials_in_the_repository_url_are_never_shown() -> None:
    from zonewall.controller.gitops import public

    assert public("https://deploy:glpat-secret@git.example/ops/policy.git") == "https://git.example/ops/policy.git"
    assert public("git@git.example:ops/policy.git") == "git@git.example:ops/policy.git"  # ssh: a user name, no secret
    assert public("/srv/git/policy") == "/srv/git/policy"
