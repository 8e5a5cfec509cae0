"""High availability end to end (issue 15): three controller processes on one real
PostgreSQL, real agents in the lab's node namespaces given all three, checked with
real packets.

* a change committed through any of the three is enforced on every node;
* kill -9 of a controller in the middle of a change (after its commit, while it
  computes the semantic diff, before it answers): the revision is kept, its diff is
  finished by another controller, the client's retry through another controller
  (same Idempotency-Key) applies nothing twice, the killed controller's agents fail
  over and converge on the next change;
* no node ever applies an older revision: every apply each agent logged is recorded
  and must only go up.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.kernel.conftest import _kernel_check
from tests.kernel.test_controller_e2e import THREE_TIER, WEB_TO_DB, until
from tests.labtools import managed_lab
from zonewall.controller.store.diffs import DELAY_ENV
from zonewall.lab.managed import AGENT_PORT, ManagedLab
from zonewall.lab.postgres import TemporaryPostgres
from zonewall.lab.probing import Service, probe
from zonewall.policy.loader import load_policy

pytestmark = pytest.mark.kernel

APPLIED = re.compile(r"revision (\d+) applied")
DIFF_SECONDS = 3  # every diff is held this long: the window in which a controller is killed


@pytest.fixture(scope="module")
def ha(request: pytest.FixtureRequest, postgres: TemporaryPostgres) -> Iterator[ManagedLab]:
    _kernel_check(request.config)
    url = postgres.create_database()
    try:
        with managed_lab(THREE_TIER, "zonewall-ha-", db_url=url, replicas=3, controller_env={DELAY_ENV: str(DIFF_SECONDS)}) as lab:
            yield lab
    finally:
        postgres.drop_database(url)


def reaches(lab: ManagedLab, source: str, target: str, port: int) -> bool:
    """A real connection (2 s to answer: this test runs beside the whole suite)."""
    return probe(lab.lab, load_policy(THREE_TIER), source, target, Service("tcp", port), "ipv4", timeout=2.0).delivered


def applied_revisions(lab: ManagedLab) -> dict[str, list[int]]:
    """Every revision each agent applied, in order, from its own log."""
    return {node: [int(n) for n in APPLIED.findall((agent.state_dir / "agent.log").read_text())] for node, agent in lab.agents.items()}


def controller_of(lab: ManagedLab, node: str) -> int:
    """Which controller the node's agent talks to (it says so when it registers)."""
    registered = re.findall(r"registered with http://[\d.]+:(\d+) as", (lab.agents[node].state_dir / "agent.log").read_text())
    assert registered, f"{node}'s agent has not registered"
    return int(registered[-1]) - AGENT_PORT


def change(lab: ManagedLab, via: int, rule: dict[str, Any]) -> int:
    response = lab.api("POST", "/vms/db1/rules", via=via, json={"rule": rule, "message": f"through controller {via}"})
    assert response.status_code == 201, response.text
    return int(response.json()["revision"]["number"])


def test_three_controllers_one_database_any_controller_any_failure(ha: ManagedLab) -> None:
    lab = ha
    assert not reaches(lab, "vm:web1", "vm:db1", 5432)

    # -- a change through each controller is enforced on every node -------------------------
    opened = change(lab, 1, WEB_TO_DB)
    lab.wait_converged(opened, timeout=15)
    assert reaches(lab, "vm:web1", "vm:db1", 5432)
    closed = lab.api("DELETE", "/vms/db1/rules/web-db", via=2, params={"message": "through controller 2"})
    assert closed.status_code == 201, closed.text
    lab.wait_converged(closed.json()["revision"]["number"], timeout=15)
    assert not reaches(lab, "vm:web1", "vm:db1", 5432)
    for via in (0, 1, 2):  # every controller serves what the others committed
        assert lab.api("GET", "/policy", via=via).json()["revision"] == closed.json()["revision"]["number"]

    # -- kill -9 of a controller with agents, in the middle of a change through it --------------
    victim = controller_of(lab, "node2")
    survivor, other = (victim + 1) % 3, (victim + 2) % 3
    before = lab.api("GET", "/policy", via=survivor).json()["revision"]
    key = "ha-test-add-8443"
    rule = {"direction": "in", "action": "accept", "from": "vm:web1", "tcp": 8443}  # no id: a duplicate would be a second rule
    body = {"rule": rule, "message": "added while its controller dies"}
    box: dict[str, Any] = {}

    def send() -> None:
        try:
            box["response"] = lab.api("POST", "/vms/db1/rules", via=victim, json=body, headers={"Idempotency-Key": key})
        except httpx.HTTPError as exc:
            box["error"] = exc

    sender = threading.Thread(target=send)
    sender.start()
    until(lambda: lab.api("GET", "/policy", via=survivor).json()["revision"] > before, timeout=15)  # committed...
    killed_revision = lab.api("GET", "/policy", via=survivor).json()["revision"]
    pending = lab.api("GET", f"/revisions/{killed_revision}", via=survivor).json()
    lab.kill_controller(victim)  # ...and killed while computing the diff, before it answered
    sender.join(timeout=30)
    assert "error" in box, "the killed controller answered"
    assert pending["diff"] is None  # the kill came before the diff was stored

    retried = lab.api("POST", "/vms/db1/rules", via=survivor, json=body, headers={"Idempotency-Key": key})  # the client retries elsewhere
    assert retried.status_code == 201 and retried.headers["Idempotent-Replayed"] == "true", retried.text
    assert retried.json()["revision"]["number"] == killed_revision
    documents = lab.api("GET", "/policy", via=other).json()["documents"]
    assert sum(text.count("8443") for text in documents.values()) == 1, "the retry applied the change twice"
    lab.wait_converged(killed_revision, timeout=15, via=survivor)  # node2's agent failed over
    assert reaches(lab, "vm:web1", "vm:db1", 8443)

    # the killed controller's diff is finished by another once its lease runs out
    diff = until(lambda: lab.api("GET", f"/revisions/{killed_revision}", via=other).json()["diff"] is not None, timeout=60)
    shown = lab.api("GET", f"/revisions/{killed_revision}", via=other).json()
    assert any("8443" in " ".join(flow["services"]) for flow in shown["diff"]["flows"]), shown["diff"]
    assert diff < 60

    # -- after the failure: changes through the survivors converge, the dead one comes back ----
    latest = change(lab, other, {"id": "last", "direction": "in", "action": "accept", "from": "vm:web1", "tcp": 9000})
    lab.wait_converged(latest, timeout=15, via=other)
    lab.start_controller(victim)
    assert lab.api("GET", "/policy", via=victim).json()["revision"] == latest

    numbers = sorted(r["number"] for r in lab.api("GET", "/revisions", via=victim, params={"limit": 100}).json())
    assert numbers == list(range(1, latest + 1))  # none lost, none twice
    assert all(r["diff"] is not None or r["diff_error"] for r in (lab.api("GET", f"/revisions/{n}", via=victim).json() for n in numbers))

    # -- no node ever applied an older revision --------------------------------------------------
    history = applied_revisions(lab)
    for node, applied in history.items():
        assert applied == sorted(applied), f"{node} stepped back: {applied}"
        assert applied[-1] == latest and killed_revision in applied, (node, applied)
