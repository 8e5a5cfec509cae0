"""`zonewall lab matrix` at 40 VMs within the default open-file limit (1024), with
progress, filters and one-line user errors.

Before batching, the matrix opened a listener (3 descriptors and a thread) for every
target and port at once: a 40-VM policy died with EMFILE after minutes of silence.
Here the command runs as a subprocess with RLIMIT_NOFILE 1024 on a 40-VM policy
whose 42 targets x 8 ports need 336 listeners (over 1,000 descriptors at once).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.kernel.conftest import _kernel_check
from tests.labtools import unique_lab_name
from zonewall.lab.cluster import lab_down

pytestmark = pytest.mark.kernel
PORTS = [80, 443, 5432, 6379, 8080, 8443, 9000, 9100]
VMS = 40


def forty_vm_policy() -> str:
    lines = ["version: 1", "settings:", "  default: {in: drop, out: accept}", "hosts:",
             "  node1: {address: [192.168.81.11], uplink: eth0}", "  node2: {address: [192.168.81.12], uplink: eth0}",
             "networks:", "  lan: {bridge: vmbr1, subnets: [10.81.0.0/24], gateway: [10.81.0.1]}", "zones:",
             "  a:", "    rules:", f"      - {{id: a-open, direction: in, action: accept, tcp: [{', '.join(map(str, PORTS[:6]))}]}}",
             "  b:", "    rules:", f"      - {{id: b-open, direction: in, action: accept, tcp: [{', '.join(map(str, PORTS[2:]))}]}}",
             "vms:"]
    for i in range(VMS):
        lines += [f"  vm{i:02d}:", f"    host: node{1 + i % 2}", f"    zone: {'a' if i < VMS // 2 else 'b'}",
                  f"    nics: [{{network: lan, mac: \"52:54:00:81:00:{i:02x}\", ips: [10.81.0.{10 + i}]}}]"]
    return "\n".join(lines) + "\n"


def zonewall(*args: str) -> subprocess.CompletedProcess[str]:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    return subprocess.run([sys.executable, "-m", "zonewall.cli", *args], capture_output=True, text=True, timeout=900, preexec_fn=limit)


@pytest.fixture(scope="module")
def lab(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    _kernel_check(request.config)
    policy = tmp_path_factory.mktemp("matrix") / "policy.yaml"
    policy.write_text(forty_vm_policy())
    name = unique_lab_name()
    try:
        up = zonewall("lab", "up", str(policy), "--name", name)
        assert up.returncode == 0, up.stderr
        yield name
    finally:
        lab_down(name)


def test_the_whole_matrix_of_40_vms_runs_within_1024_open_files(lab: str) -> None:
    done = zonewall("lab", "matrix", "--name", lab, "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    matrix = json.loads(done.stdout)
    # every source (40 VMs, the internet) against every other target (40 VMs, 2 nodes)
    assert len(matrix) == VMS + 1 and all(len(row) == VMS + 2 - (source != "internet") for source, row in matrix.items())
    # zone a takes its first 6 ports, zone b its last 6, from anyone; the nodes all (no host rules)
    for source, row in matrix.items():
        for target, cell in row.items():
            wanted = PORTS if target.startswith("host:") else PORTS[:6] if int(target[5:]) < VMS // 2 else PORTS[2:]
            assert sorted(cell) == sorted(f"tcp/{p}" for p in wanted), (source, target, cell)
    lines = [line for line in done.stderr.splitlines() if line.startswith("probing (ipv4):")]
    assert len(lines) >= 5 and lines[-1].split()[2].split("/")[0] == lines[-1].split()[2].split("/")[1], lines  # progress as it goes, to the end


def test_filters_narrow_the_matrix(lab: str) -> None:
    done = zonewall("lab", "matrix", "--name", lab, "--json", "--from", "zone:a", "--from", "internet", "--to", "vm:vm39", "--to", "vm:vm01",
                    "--service", "tcp/5432", "--service", "tcp/9000", "--service", "tcp/22", "--concurrency", "8")
    assert done.returncode == 0, done.stderr
    matrix = json.loads(done.stdout)
    assert set(matrix) == {f"vm:vm{i:02d}" for i in range(VMS // 2)} | {"internet"}
    for source, row in matrix.items():
        assert row.get("vm:vm39") == ["tcp/5432", "tcp/9000"], (source, row)
        assert row.get("vm:vm01", ["tcp/5432"]) == ["tcp/5432"], (source, row)  # zone a: 5432 from anyone, 9000 from no one


@pytest.mark.parametrize("args, words", [
    (["lab", "matrix", "--name", "nosuch"], "no lab named 'nosuch' is up"),
    (["lab", "matrix", "--from", "vm:nosuch"], "--from vm:nosuch: not in the matrix"),
    (["lab", "matrix", "--service", "tcp/99999"], "--service 'tcp/99999'"),
    (["apply", "examples/three-tier/policy", "--host", "node1", "--netns", "nosuch"], "no network namespace named 'nosuch'"),
])
def test_user_errors_are_one_line(lab: str, args: list[str], words: str) -> None:
    if "--name" not in args and args[0] == "lab":
        args = [*args, "--name", lab]
    done = zonewall(*args)
    assert done.returncode != 0 and words in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr, done.stderr
