"""Live migration through the controller and real agents (docs/migration.md).

A managed lab (a controller process, one `zonewall agent` per node namespace) runs
the migration policy of tests/kernel/test_migration.py: `mover` on node1 beside
`stay`, `other` on node2, where `nf_conntrack_tcp_loose=0`. A TCP stream and an
echoed UDP flow from the outside and from `stay` to `mover` are opened while the
policy admits them; the policy is then tightened through the API so that a new
connection to `mover` is refused, and `POST /api/v1/vms/mover/migrate` moves it.

The lab plays the hypervisor, as libvirt would: when the controller waits for the
guest (`GET /migrations`: phase `switch`), the test moves the guest's veth to node2's
bridge (zonewall/lab/migrate.py) and runs the real libvirt hook there
(`mover started begin`), whose request makes node2's agent report the arrival. The
controller never moves guests itself.

Meanwhile a probe loop opens new connections to `mover` from the outside and from
`stay`: none may ever be delivered (a SYN reaching the guest is answered, by an
accept or a reset; refused ones time out), before, during or after the move.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.kernel.conftest import _kernel_check
from tests.kernel.test_migration import MOVER, OPEN, OUTSIDE, Stream, write
from tests.labtools import unique_lab_name
from zonewall.dataplane.backend import LibNftBackend
from zonewall.dataplane.readback import readback_hash
from zonewall.lab import netns
from zonewall.lab.cluster import ensure_outside_address, lab_down, lab_prefix, lab_up
from zonewall.lab.managed import ManagedLab
from zonewall.lab.migrate import move_guest
from zonewall.policy.documents import load_documents

pytestmark = pytest.mark.kernel

HOOK = Path(__file__).resolve().parents[2] / "zonewall" / "agent" / "hooks" / "qemu"
OURS = [("inet", "zonewall"), ("bridge", "zonewall")]


@pytest.fixture(scope="module")
def managed(request: pytest.FixtureRequest) -> Iterator[ManagedLab]:
    _kernel_check(request.config)
    policy_dir = Path(tempfile.mkdtemp(prefix="zonewall-migapi-"))
    write(policy_dir, OPEN)
    name = unique_lab_name()
    lab: ManagedLab | None = None
    try:
        state = lab_up(str(policy_dir), name, apply=False)  # every rule comes through the controller
        ensure_outside_address(state, OUTSIDE)
        lab = ManagedLab(state, policy_dir / "controller")
        lab.start(verify_interval=2.0)
        lab.wait_converged(lab.upload(policy_dir, "streams admitted")["revision"]["number"])
        # either node may be the target: no entry, no mid-stream pickup (set once the agents'
        # own connections are tracked: they were opened before their node had any rule)
        for ns in state.nodes.values():
            netns.set_sysctl(ns, "net.netfilter.nf_conntrack_tcp_loose", 0)
        yield lab
    finally:
        if lab is not None:
            lab.stop()
        lab_down(name)
        assert not netns.list_netns(lab_prefix(name))


def as_token(lab: ManagedLab, token: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
    assert lab.controller is not None
    return httpx.request(method, lab.controller.url + "/api/v1" + path, headers={"Authorization": f"Bearer {token}"}, timeout=60, **kwargs)


def viewer_token(lab: ManagedLab) -> str:
    response = lab.api("POST", "/tokens", json={"role": "viewer", "name": "migration-viewer"})
    assert response.status_code in (200, 201), response.text
    return str(response.json()["token"])


def kernel_hash(ns: str) -> str:
    with LibNftBackend(netns=ns) as backend:
        return readback_hash(backend, OURS)


def revision(lab: ManagedLab) -> int:
    return int(lab.api("GET", "/policy").json()["revision"])


def where(lab: ManagedLab) -> str:
    return load_documents(lab.api("GET", "/policy").json()["documents"]).doc.vms["mover"].host


def set_rules(lab: ManagedLab, rules: str, message: str) -> None:
    """mover's rules (OPEN admits the streams' ports; "[]": a new connection to mover is
    refused, the streams live on as established), mover staying where it is."""
    host = where(lab)
    policy_dir = Path(tempfile.mkdtemp(prefix="zonewall-migapi-p-"))
    write(policy_dir, rules)
    text = (policy_dir / "policy.yaml").read_text().replace("  mover:\n    host: node1", f"  mover:\n    host: {host}")
    response = lab.api("PUT", "/policy", json={"documents": {"policy.yaml": text}, "message": message})
    assert response.status_code in (200, 201), response.text
    lab.wait_converged(response.json()["revision"]["number"])


class Probes:
    """New TCP connections to mover, over and over: any answer (accept or reset) is a delivery."""

    def __init__(self, lab: ManagedLab) -> None:
        self.sources = [(lab.lab.outside, OUTSIDE, 5001), (lab.lab.vms["stay"], None, 5003), (lab.lab.outside, OUTSIDE, 22)]
        self.delivered: list[str] = []
        self.attempts = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            for ns, bind, port in self.sources:
                sock = netns.netns_socket(ns, socket.AF_INET, socket.SOCK_STREAM)
                sock.settimeout(0.2)
                try:
                    if bind:
                        sock.bind((bind, 0))
                    sock.connect((MOVER, port))
                    self.delivered.append(f"{ns} -> {MOVER}:{port} accepted")
                except ConnectionRefusedError:
                    self.delivered.append(f"{ns} -> {MOVER}:{port} reset by the guest")
                except OSError:
                    pass  # timed out: refused by the firewall
                finally:
                    sock.close()
                self.attempts += 1

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)


def hook(lab: ManagedLab, node: str, *args: str) -> subprocess.CompletedProcess[str]:
    """libvirt's call of the qemu hook on `node` (the agent's socket is in its state dir)."""
    env = dict(os.environ, ZONEWALL_AGENT_SOCKET=str(lab.agents[node].state_dir / "agent.sock"))
    return subprocess.run([sys.executable, str(HOOK), *args], input="<domain/>", env=env, capture_output=True, text=True, timeout=60)


def test_only_an_admin_may_migrate(managed: ManagedLab) -> None:
    lab = managed
    before = revision(lab)
    for token in (viewer_token(lab), lab.agent_tokens["node2"], lab.agent_tokens["node1"]):
        assert as_token(lab, token, "POST", "/vms/mover/migrate", json={"to": "node2"}).status_code == 403
    assert as_token(lab, lab.agent_tokens["node1"], "GET", "/nodes/node2/migration-steps").status_code == 403
    assert revision(lab) == before


def test_failures_leave_the_vm_filtered_where_it_is(managed: ManagedLab) -> None:
    lab = managed
    set_rules(lab, "[]", "no new connections to mover")
    source = where(lab)
    target = "node2" if source == "node1" else "node1"
    hashes, before = {ns: kernel_hash(ns) for ns in lab.lab.nodes.values()}, revision(lab)
    assert lab.api("POST", "/vms/mover/migrate", json={"to": "node9"}).status_code == 404  # target unknown

    lab.agents[target].stop()  # the target's agent is down
    try:
        started = time.monotonic()
        response = lab.api("POST", "/vms/mover/migrate", json={"to": target})
        assert time.monotonic() - started < 30
        assert response.status_code == 502, response.text
        detail = response.json()["detail"]
        assert detail["step"] == "prepare" and detail["where"] == source
        assert {ns: kernel_hash(ns) for ns in lab.lab.nodes.values()} == hashes  # nothing changed anywhere
        assert revision(lab) == before and where(lab) == source
        probes = Probes(lab)  # mover is still filtered on its node
        time.sleep(1.0)
        probes.close()
        assert probes.attempts >= 3 and probes.delivered == []
    finally:
        lab.start_agent(target, verify_interval=2.0)
    lab.wait_converged(before)
    assert lab.api("GET", "/migrations").json()["finished"][-1]["phase"] == "failed"


def test_streams_survive_an_api_migration_and_no_forbidden_connection_gets_through(managed: ManagedLab) -> None:
    lab = managed
    state = lab.lab
    set_rules(lab, OPEN, "streams admitted")
    source = where(lab)
    target = "node2" if source == "node1" else "node1"
    documents = lab.api("GET", "/policy").json()["documents"]
    streams = {
        "outside->mover": Stream(state.vms["mover"], MOVER, state.outside, 5001, bind=OUTSIDE),
        "stay->mover": Stream(state.vms["mover"], MOVER, state.vms["stay"], 5003),
    }
    probes: Probes | None = None
    try:
        now = time.monotonic()
        for label, stream in streams.items():
            assert stream.flowing_since(now) == (True, True), f"{label} does not flow before the migration"
        set_rules(lab, "[]", "no new connections to mover")
        documents = lab.api("GET", "/policy").json()["documents"]
        now = time.monotonic()
        for label, stream in streams.items():
            assert stream.flowing_since(now) == (True, True), f"{label} stopped when the policy was tightened"

        probes = Probes(lab)
        answer: dict[str, httpx.Response] = {}
        thread = threading.Thread(target=lambda: answer.setdefault("r", lab.api("POST", "/vms/mover/migrate", json={"to": target, "switch_timeout": 60})))
        thread.start()
        # the lab is the hypervisor: when the controller waits for the guest, move it and run libvirt's hook
        deadline = time.monotonic() + 30
        while not any(m["phase"] == "switch" for m in lab.api("GET", "/migrations").json()["running"]):
            assert thread.is_alive(), answer["r"].text
            assert time.monotonic() < deadline, "the controller never waited for the guest"
            time.sleep(0.01)
        move_guest(state, documents, "mover", target)
        arrived = hook(lab, target, "mover", "started", "begin", "-")
        assert arrived.returncode == 0 and arrived.stderr == ""
        thread.join(timeout=60)
        switched = time.monotonic()
        response = answer["r"]
        assert response.status_code == 200, response.text
        report = response.json()
        result = {label: stream.flowing_since(switched, 2.0) for label, stream in streams.items()}
        gaps = {label: stream.gap(switched) for label, stream in streams.items()}
        probes.close()
        assert all(r == (True, True) for r in result.values()), (result, report)
        assert all(gap < 1.5 for gap in gaps.values()), (gaps, report)
        assert probes.attempts >= 10 and probes.delivered == [], probes.delivered
        # recorded as a revision; the target has the VM's rules, the source no longer
        assert where(lab) == target
        show = lab.api("GET", f"/revisions/{report['revision']}").json()
        assert show["kind"] == "migrate" and show["change"] == {"op": "migrate", "target": "vms.mover", "from": source, "to": target}
        lab.wait_converged(report["revision"])
        exported = [s for s in report["steps"] if str(s["step"]).startswith("export")]
        assert exported and exported[0]["entries"] >= 4  # two TCP streams, two UDP flows
    finally:
        if probes is not None:
            probes.close()
        for stream in streams.values():
            stream.close()
