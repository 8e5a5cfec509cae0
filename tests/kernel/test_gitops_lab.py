"""GitOps with agents and kernels: a real git repository, `zonewall serve --git-repo`,
one agent per lab node.

A good commit becomes a revision (its author, its message) that every node applies
and real packets obey; an invalid commit is refused: the status says which commit
and why, no revision is made, and not one byte of any node's ruleset changes.
`zonewall status` shows both.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gitrepo import Repo
from tests.kernel.conftest import _kernel_check
from tests.labtools import managed_lab
from zonewall.lab.managed import ManagedLab
from zonewall.lab.probing import Service, probe
from zonewall.policy.loader import load_policy

pytestmark = pytest.mark.kernel
THREE_TIER = Path(__file__).resolve().parents[2] / "examples" / "three-tier" / "policy"
POLICY = (THREE_TIER / "policy.yaml").read_text()
PARTNER = "outside:203.0.113.10"
OPENED = POLICY.replace("      - {id: web-https,", "      - {id: partner-8443, direction: in, action: accept, from: 203.0.113.10, tcp: 8443}\n      - {id: web-https,", 1)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Repo:
    found = Repo(tmp_path_factory.mktemp("gitops") / "repo")
    found.commit("the three tiers", {"policy/policy.yaml": POLICY})
    return found


@pytest.fixture(scope="module")
def lab(request: pytest.FixtureRequest, repo: Repo) -> Iterator[ManagedLab]:
    _kernel_check(request.config)
    args = ("--git-repo", str(repo.path), "--git-branch", "main", "--git-path", "policy", "--git-interval", "3600")
    with managed_lab(THREE_TIER, "zonewall-gitops-", serve_args=args) as found:
        yield found


def rulesets(lab: ManagedLab) -> dict[str, str]:
    """Every node's ruleset without its counters (`nft -s`): traffic between two
    readings (an agent's long-poll) moves counters, not rules."""
    return {node: subprocess.run(["ip", "netns", "exec", ns, "nft", "-s", "list", "ruleset"], capture_output=True, text=True, check=True).stdout
            for node, ns in lab.lab.nodes.items()}


def partner_probe(lab: ManagedLab, port: int) -> str:
    return probe(lab.lab, load_policy(THREE_TIER), PARTNER, "vm:web1", Service("tcp", port), "ipv4", timeout=0.5).verdict


def sync(lab: ManagedLab) -> dict:
    answer = lab.api("POST", "/gitops/sync")
    assert answer.status_code == 200, answer.text
    return answer.json()


def zonewall_status(lab: ManagedLab) -> subprocess.CompletedProcess[str]:
    assert lab.controller is not None
    env = {"ZONEWALL_CONTROLLER": lab.controller.url, "ZONEWALL_TOKEN": lab.admin_token, "ZONEWALL_CONFIG": "/nonexistent", "COLUMNS": "200", "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "zonewall.cli", "status"], capture_output=True, text=True, env=env, timeout=60)


def test_a_commit_is_enforced_and_an_invalid_one_changes_nothing_in_any_kernel(lab: ManagedLab, repo: Repo) -> None:
    assert sync(lab)["state"] == "following"  # the head equals revision 1: nothing new
    assert [r["number"] for r in lab.api("GET", "/revisions").json()] == [1]
    assert partner_probe(lab, 8443) == "blocked"

    good = repo.commit("partner reaches web1 on 8443", {"policy/policy.yaml": OPENED}, author=("Carol Net", "carol@example.org"))
    status = sync(lab)
    assert status["state"] == "following" and status["last_commit"] == good
    newest = lab.api("GET", "/revisions").json()[0]
    assert (newest["number"], newest["author"], newest["message"], newest["kind"]) == (2, "Carol Net <carol@example.org>", "partner reaches web1 on 8443", "git")
    lab.wait_converged(2)
    assert partner_probe(lab, 8443) == "delivered"

    before = rulesets(lab)
    bad = repo.commit("open everything", {"policy/policy.yaml": OPENED.replace("tcp: 8443}", "tcp: 70000}")})
    status = sync(lab)
    assert status["state"] == "refused" and status["refused_commit"] == bad
    assert any("70000" in p["text"] and p["text"].startswith("policy.yaml:") for p in status["problems"])
    assert [r["number"] for r in lab.api("GET", "/revisions").json()] == [2, 1]
    assert all(n["applied_revision"] == 2 and n["state"] == "ok" for n in lab.api("GET", "/nodes").json())
    assert rulesets(lab) == before  # byte for byte, on every node
    assert partner_probe(lab, 8443) == "delivered" and partner_probe(lab, 8444) == "blocked"

    shown = zonewall_status(lab)
    assert shown.returncode == 0, shown.stdout + shown.stderr  # every node in sync on revision 2
    assert f"refused {bad[:12]}" in shown.stdout and "2 of 2 node(s) in sync" in shown.stdout
