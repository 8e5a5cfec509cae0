"""Central management end to end: a controller process and real agents inside the
lab's node namespaces, checked in the kernel and with real packets.

Each test leaves the policy as it found it (the three-tier example), so the tests
do not depend on their order or on sharing a worker.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.kernel.conftest import _kernel_check
from tests.labtools import managed_lab
from zonewall.dataplane.backend import LibNftBackend
from zonewall.dataplane.readback import listing_hash, readback_hash
from zonewall.lab.managed import ManagedLab
from zonewall.lab.probing import Service, probe
from zonewall.policy.loader import load_policy

pytestmark = pytest.mark.kernel

THREE_TIER = Path(__file__).resolve().parents[2] / "examples" / "three-tier" / "policy"
OURS = [("inet", "zonewall"), ("bridge", "zonewall")]
WEB_TO_DB = {"id": "web-db", "direction": "in", "action": "accept", "from": "vm:web1", "tcp": 5432}
OTHER_TABLE = "table inet other {\n\tchain c {\n\t\ttype filter hook input priority 10; policy accept;\n\t\ttcp dport 9999 accept\n\t}\n}\n"


@pytest.fixture(scope="module")
def managed(request: pytest.FixtureRequest) -> Iterator[ManagedLab]:
    _kernel_check(request.config)
    with managed_lab(THREE_TIER, "zonewall-e2e-") as lab:
        yield lab


def kernel_hash(ns: str) -> str:
    """Changes with any change to our tables, even the same rules re-created."""
    with LibNftBackend(netns=ns) as backend:
        return readback_hash(backend, OURS)


def kernel_content(ns: str) -> str:
    """What our tables contain (a repaired ruleset has the content it had)."""
    with LibNftBackend(netns=ns) as backend:
        return listing_hash(backend, OURS)


def nft(ns: str, *args: str, stdin: str | None = None) -> str:
    return subprocess.run(["ip", "netns", "exec", ns, "nft", *args], input=stdin, capture_output=True, text=True, check=True).stdout


def reaches(lab: ManagedLab, source: str, target: str, port: int) -> bool:
    return probe(lab.lab, load_policy(THREE_TIER), source, target, Service("tcp", port), "ipv4", timeout=0.5).delivered


def until(check: Callable[[], bool], timeout: float) -> float:
    """Seconds until `check()` held; fails after `timeout`."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout, f"not reached within {timeout}s"
        time.sleep(0.01)
    return time.monotonic() - started


def current_revision(lab: ManagedLab) -> int:
    return lab.api("GET", "/policy").json()["revision"]


def rollback_to_initial(lab: ManagedLab) -> None:
    first = min(r["number"] for r in lab.api("GET", "/revisions", params={"limit": 1000}).json())
    response = lab.api("POST", f"/revisions/{first}/rollback", json={"message": "test cleanup"})
    assert response.status_code == 201, response.text
    lab.wait_converged(response.json()["revision"]["number"])


def test_api_change_is_enforced_everywhere_rollback_undoes_it_invalid_changes_change_nothing(managed: ManagedLab) -> None:
    lab = managed
    assert reaches(lab, "vm:web1", "vm:app1", 8080) and not reaches(lab, "vm:web1", "vm:db1", 5432)

    response = lab.api("POST", "/vms/db1/rules", json={"rule": WEB_TO_DB, "message": "web talks to db directly"})
    assert response.status_code == 201, response.text
    changed = response.json()["revision"]["number"]
    nodes = lab.wait_converged(changed, timeout=10)
    for node in nodes:  # what each agent reports is what its kernel holds
        assert kernel_hash(lab.lab.nodes[node["name"]]) == node["ruleset_hash"]
    assert reaches(lab, "vm:web1", "vm:db1", 5432)
    assert "web-db" in nft(lab.lab.nodes["node2"], "list", "table", "inet", "zonewall")

    before = {node: kernel_hash(ns) for node, ns in lab.lab.nodes.items()}
    refused = lab.api("POST", "/vms/db1/rules", json={"rule": {"id": "oops", "direction": "in", "action": "allow", "tcp": 22}})
    assert refused.status_code == 422
    assert refused.json()["detail"]["problems"][0]["text"].startswith("policy.yaml:")
    time.sleep(1.0)  # time for a (wrong) propagation to happen, if one did
    assert current_revision(lab) == changed
    assert {node: kernel_hash(ns) for node, ns in lab.lab.nodes.items()} == before
    assert all(n["applied_revision"] == changed for n in lab.api("GET", "/nodes").json())

    rollback = lab.api("POST", f"/revisions/{changed - 1}/rollback", json={"message": "undo"})
    assert rollback.status_code == 201
    lab.wait_converged(rollback.json()["revision"]["number"], timeout=10)
    assert not reaches(lab, "vm:web1", "vm:db1", 5432) and reaches(lab, "vm:web1", "vm:app1", 8080)


def test_drift_is_repaired_and_another_owners_table_is_left_alone(managed: ManagedLab) -> None:
    lab = managed
    ns = lab.lab.nodes["node1"]
    expected = kernel_content(ns)
    nft(ns, "-f", "-", stdin=OTHER_TABLE)
    other = nft(ns, "list", "table", "inet", "other")

    nft(ns, "delete", "chain", "inet", "zonewall", "forward")  # a zonewall chain disappears
    assert until(lambda: kernel_content(ns) == expected, timeout=3) < 3
    assert nft(ns, "list", "table", "inet", "other") == other  # repaired ours, not touched theirs

    repairs = lab.api("GET", "/nodes/node1").json()["drift_repairs"]
    nft(ns, "add", "rule", "inet", "other", "c", "tcp", "dport", "9998", "accept")  # their change is not drift
    time.sleep(0.5)
    assert "9998" in nft(ns, "list", "table", "inet", "other")
    assert lab.api("GET", "/nodes/node1").json()["drift_repairs"] == repairs

    nft(ns, "flush", "ruleset")  # everything, ours included, is gone
    assert until(lambda: kernel_content(ns) == expected, timeout=3) < 3
    assert reaches(lab, "vm:web1", "vm:app1", 8080)
    assert not reaches(lab, "vm:web1", "vm:db1", 5432)
    until(lambda: lab.api("GET", "/nodes/node1").json()["drift_repairs"] >= repairs + 1, timeout=3)


def test_outage_agents_keep_enforcing_restore_from_disk_and_converge_afterwards(managed: ManagedLab) -> None:
    lab = managed
    node1, node2 = lab.lab.nodes["node1"], lab.lab.nodes["node2"]
    expected = {ns: kernel_content(ns) for ns in (node1, node2)}
    untouched = kernel_hash(node2)
    lab.stop_controller()
    try:
        assert reaches(lab, "vm:web1", "vm:app1", 8080) and not reaches(lab, "vm:web1", "vm:db1", 5432)
        nft(node1, "flush", "ruleset")  # drift is repaired without the controller
        until(lambda: kernel_content(node1) == expected[node1], timeout=3)

        lab.agents["node2"].stop()  # the rules stay in the kernel without their agent
        assert kernel_hash(node2) == untouched
        nft(node2, "flush", "ruleset")
        lab.start_agent("node2", verify_interval=2.0)  # controller still down: restores from disk
        until(lambda: kernel_content(node2) == expected[node2], timeout=15)
        assert not reaches(lab, "vm:app1", "vm:web1", 22)
    finally:
        lab.start_controller()
    response = lab.api("POST", "/vms/db1/rules", json={"rule": WEB_TO_DB, "message": "after the outage"})
    assert response.status_code == 201
    lab.wait_converged(response.json()["revision"]["number"], timeout=30)  # agents back off at most 5 s
    assert reaches(lab, "vm:web1", "vm:db1", 5432)
    rollback_to_initial(lab)
    assert not reaches(lab, "vm:web1", "vm:db1", 5432)
