"""POST /api/v1/vms/{vm}/migrate through a real HTTP controller and agents' step
workers (fake node steps, no kernel): order, roles, node binding, failures."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from tests.controller.live import LiveController, live_controller
from tests.controller.test_migrate import POLICY
from zonewall.agent.client import ControllerClient
from zonewall.agent.migrate_steps import StepWorker
from zonewall.controller.migrate_channel import Running
from zonewall.controller.store.models import MigrationRow, MigrationStepRow


class FakeSteps:
    def __init__(self, node: str, log: list[tuple[str, str]], fail: str | None = None) -> None:
        self.node, self.log, self.fail = node, log, fail

    def run(self, step: str, args: dict[str, Any]) -> dict[str, Any]:
        self.log.append((self.node, step))
        if step == self.fail:
            raise RuntimeError("kernel said no")
        if step == "export":
            return {"entries": 2, "data": "x" * 2_000_000}  # an export's size: megabytes travel both ways
        if step == "import":
            assert len(args["data"]) == 2_000_000
            return {"created": 2}
        return {}


@pytest.fixture
def live(tmp_path: Path, db_url: str) -> Iterator[LiveController]:
    with live_controller(tmp_path, db_url) as ctl:
        response = httpx.put(ctl.url + "/api/v1/policy", json={"documents": {"p.yaml": POLICY}, "message": "initial"},
                             headers=ctl.tokens.header("admin"))
        assert response.status_code == 201, response.text
        yield ctl


def start_agents(ctl: LiveController, log: list[tuple[str, str]], fail: dict[str, str] | None = None,
                 nodes: tuple[str, ...] = ("node1", "node2")) -> threading.Event:
    stop = threading.Event()
    for node in nodes:
        token = getattr(ctl.tokens, node)
        StepWorker(lambda node=node, token=token: ControllerClient(ctl.url, token, node), FakeSteps(node, log, (fail or {}).get(node)),  # type: ignore[misc]
                   stop, wait=2.0).start()
    return stop


def post(ctl: LiveController, who: str, vm: str = "mover", **body: Any) -> httpx.Response:
    return httpx.post(f"{ctl.url}/api/v1/vms/{vm}/migrate", json={"to": "node2", "switch_timeout": 10, **body},
                      headers=ctl.tokens.header(who), timeout=60)


def arrive_when_switching(ctl: LiveController, node: str = "node2") -> threading.Thread:
    """The hypervisor's part: when the controller waits for the guest, the target's agent reports it."""

    def run() -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            running = httpx.get(ctl.url + "/api/v1/migrations", headers=ctl.tokens.header("viewer")).json()["running"]
            if running and running[0]["phase"] == "switch":
                answer = httpx.post(f"{ctl.url}/api/v1/nodes/{node}/migrations/mover/arrived", headers=ctl.tokens.header(node))
                assert answer.json()["migration"] is True
                return
            time.sleep(0.02)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def current(ctl: LiveController) -> dict[str, Any]:
    return httpx.get(ctl.url + "/api/v1/policy", headers=ctl.tokens.header("admin")).json()


def test_migration_through_agents_records_a_revision(live: LiveController) -> None:
    log: list[tuple[str, str]] = []
    stop = start_agents(live, log)
    try:
        arrive_when_switching(live)
        response = post(live, "admin")
        assert response.status_code == 200, response.text
    finally:
        stop.set()
    report = response.json()
    assert log == [("node2", "prepare"), ("node1", "export"), ("node2", "import"), ("node1", "export"), ("node2", "import"), ("node1", "cleanup")]
    assert report["revision"] == 2 and report["from"] == "node1" and report["to"] == "node2"
    policy = current(live)
    assert policy["revision"] == 2 and "host: node2" in policy["documents"]["p.yaml"].split("stay:")[0]
    revision = httpx.get(live.url + "/api/v1/revisions/2", headers=live.tokens.header("viewer")).json()
    assert revision["kind"] == "migrate" and revision["change"]["op"] == "migrate"
    finished = httpx.get(live.url + "/api/v1/migrations", headers=live.tokens.header("viewer")).json()["finished"]
    assert finished[-1]["phase"] == "done"


def test_only_an_admin_migrates_and_agents_only_touch_their_own_steps(live: LiveController) -> None:
    assert post(live, "viewer").status_code == 403
    assert post(live, "node2").status_code == 403
    headers = live.tokens.header("node1")
    assert httpx.get(f"{live.url}/api/v1/nodes/node2/migration-steps", headers=headers).status_code == 403
    assert httpx.post(f"{live.url}/api/v1/nodes/node2/migration-steps/1", json={"answer": {}}, headers=headers).status_code == 403
    assert httpx.post(f"{live.url}/api/v1/nodes/node2/migrations/mover/arrived", headers=headers).status_code == 403
    assert httpx.get(f"{live.url}/api/v1/nodes/node1/migration-steps", headers=live.tokens.header("admin")).status_code == 403
    assert httpx.post(f"{live.url}/api/v1/nodes/node1/migration-steps/99", json={"answer": {}}, headers=headers).status_code == 404
    assert current(live)["revision"] == 1


def test_unknown_target_and_same_node_change_nothing(live: LiveController) -> None:
    assert post(live, "admin", to="node9").status_code == 404
    assert post(live, "admin", vm="ghost").status_code == 404
    assert httpx.post(f"{live.url}/api/v1/vms/mover/migrate", json={"to": "node1"}, headers=live.tokens.header("admin")).status_code == 409
    assert current(live)["revision"] == 1


def test_target_agent_down_fails_fast_and_nothing_moves(live: LiveController) -> None:
    log: list[tuple[str, str]] = []
    stop = start_agents(live, log, nodes=("node1",))
    try:
        started = time.monotonic()
        response = post(live, "admin")
        assert time.monotonic() - started < 20
    finally:
        stop.set()
    assert response.status_code == 502
    detail = response.json()["detail"]
    assert detail["step"] == "prepare" and detail["where"] == "node1" and "did not take the step" in detail["error"]
    assert ("node1", "cleanup") not in log and current(live)["revision"] == 1


def test_failing_import_aborts_on_the_target(live: LiveController) -> None:
    log: list[tuple[str, str]] = []
    stop = start_agents(live, log, fail={"node2": "import"})
    try:
        response = post(live, "admin")
    finally:
        stop.set()
    assert response.status_code == 502, response.text
    detail = response.json()["detail"]
    assert detail["aborted"] is True and detail["where"] == "node1" and "kernel said no" in detail["error"]
    assert log[-1] == ("node2", "abort") and ("node1", "cleanup") not in log
    assert current(live)["revision"] == 1
    assert json.dumps(detail["report"])  # the report is JSON


def test_guest_that_never_arrives_aborts(live: LiveController) -> None:
    log: list[tuple[str, str]] = []
    stop = start_agents(live, log)
    try:
        response = post(live, "admin", switch_timeout=0.5)
    finally:
        stop.set()
    assert response.status_code == 502 and response.json()["detail"]["step"] == "switch"
    assert log[-1] == ("node2", "abort") and current(live)["revision"] == 1


def test_a_migration_through_one_controller_with_the_agents_on_another(tmp_path: Path, db_url: str) -> None:
    """Several controllers: steps, answers, the arrival and the phase travel through the
    database, so the agents may be connected anywhere (issue 15)."""
    with live_controller(tmp_path / "a", db_url) as a, live_controller(tmp_path / "b", db_url, tokens=a.tokens, recheck=0.5) as b:
        response = httpx.put(a.url + "/api/v1/policy", json={"documents": {"p.yaml": POLICY}, "message": "initial"}, headers=a.tokens.header("admin"))
        assert response.status_code == 201, response.text
        log: list[tuple[str, str]] = []
        stop = start_agents(b, log)  # every agent waits on b
        refused: dict[str, int] = {}

        def hypervisor() -> None:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                running = httpx.get(b.url + "/api/v1/migrations", headers=b.tokens.header("viewer")).json()["running"]  # a's migration, seen at b
                if running and running[0]["phase"] == "switch":
                    refused["again"] = post(b, "admin").status_code  # the VM is migrating, whichever controller is asked
                    answer = httpx.post(f"{b.url}/api/v1/nodes/node2/migrations/mover/arrived", headers=b.tokens.header("node2"))
                    assert answer.json()["migration"] is True
                    return
                time.sleep(0.02)

        thread = threading.Thread(target=hypervisor, daemon=True)
        thread.start()
        try:
            response = post(a, "admin")  # the migration runs on a
        finally:
            stop.set()
        thread.join(5)
        assert response.status_code == 200, response.text
        assert refused == {"again": 409}
        assert log == [("node2", "prepare"), ("node1", "export"), ("node2", "import"), ("node1", "export"), ("node2", "import"), ("node1", "cleanup")]
        assert current(b)["revision"] == 2
        assert httpx.get(b.url + "/api/v1/migrations", headers=b.tokens.header("viewer")).json()["finished"][-1]["phase"] == "done"


def test_a_migration_or_step_left_by_a_dead_controller_blocks_nothing(controller: Any) -> None:
    hub = controller.migrations
    assert hub.begin(Running("mover", "node1", "node2", "admin"))
    assert not hub.begin(Running("mover", "node1", "node2", "admin"))  # running: one at a time
    with controller.sessions() as session, session.begin():  # its controller died: no heartbeat since
        session.execute(update(MigrationRow).values(alive_until=time.time() - 1))
        session.add(MigrationStepRow(node="node2", step="prepare", args="{}", state="queued", created_at=time.time() - hub.pickup_timeout - 1))
    assert hub.listing()["running"] == []
    assert hub.begin(Running("mover", "node1", "node2", "admin"))
    assert hub.listing()["finished"][-1]["error"] == "its controller stopped"
    assert asyncio.run(hub.next_steps("node2", 0.2)) == []  # its stale step is never handed out
