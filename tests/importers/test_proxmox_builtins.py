"""Proxmox's built-ins as the `proxmox-cluster` profile, and what feeds it
(corosync.conf, the inventory's local_network, a container's ip)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from zonewall.cli import app
from zonewall.importers.proxmox.corosync import read_corosync
from zonewall.importers.proxmox.inventory import load_inventory
from zonewall.importers.report import ImportFailure, Report
from zonewall.policy.loader import load_policy

LAB = Path(__file__).parent / "fixtures" / "proxmox-lab"


def rules(policy: Any, node: str) -> list[dict[str, Any]]:
    return [r.model_dump(by_alias=True, exclude_defaults=True) for r in policy.doc.hosts[node].rules]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    out = tmp_path_factory.mktemp("pve") / "out"
    result = CliRunner().invoke(app, ["import", "proxmox", str(LAB), "-o", str(out), "--strict"])
    assert result.exit_code == 0, result.output
    return load_policy(out), out


def test_the_profile_names_every_built_in(lab: tuple[Any, Path]) -> None:
    policy, out = lab
    text = (out / "proxmox-cluster.yaml").read_text()
    assert "pve-firewall adds all of this without showing it" in text
    groups = {name: g.members for name, g in policy.doc.groups.items()}
    assert groups["local_network"] == ["192.168.50.0/24"]
    assert groups["management"] == ["198.51.100.0/24", "group:local_network"]  # [IPSET management] + local_network
    assert groups["pve-corosync-ring0"] == ["192.168.50.11", "192.168.50.12"]
    assert policy.doc.services["pve-corosync"].udp == ["5404-5405"]
    assert policy.doc.services["pve-local"].tcp == ["8006", "22", "5900-5999", "3128"]
    drop = {"direction": "in", "action": "drop", "from": ["group:blacklist"]}
    assert [r.model_dump(by_alias=True, exclude_defaults=True) for r in policy.doc.host_rules] == [drop]
    assert [r.model_dump(by_alias=True, exclude_defaults=True) for r in policy.doc.global_rules] == [drop]
    assert policy.doc.settings.management == ["group:management", "!group:blacklist"]


def test_built_in_accepts_follow_each_nodes_own_rules(lab: tuple[Any, Path]) -> None:
    policy, out = lab
    pve2 = rules(policy, "pve2")
    assert pve2[0]["tcp"] == ["8443"]  # nodes/pve2/host.fw
    assert pve2[1]["tcp"] == ["10050"]  # the datacenter rule
    assert pve2[2:] == [
        {"direction": "in", "action": "accept", "from": ["group:management"], "service": ["pve-management"]},
        {"direction": "in", "action": "accept", "from": ["group:pve-corosync-ring0"], "to": ["group:pve-corosync-ring0"], "service": ["pve-corosync"]},
        {"direction": "out", "action": "accept", "to": ["group:local_network"], "service": ["pve-local"]},
        {"direction": "out", "action": "accept", "from": ["group:pve-corosync-ring0"], "to": ["group:pve-corosync-ring0"], "service": ["pve-corosync"]},
    ]
    assert "# Proxmox built-in (proxmox-cluster.yaml)" in (out / "cluster.yaml").read_text()
    assert rules(policy, "pve1")[1:] == pve2[2:]  # pve1 has no host.fw of its own


def test_the_local_network_alias_wins_over_the_inventory(tmp_path: Path) -> None:
    source = tmp_path / "pve"
    source.mkdir()
    (source / "inventory.yaml").write_text("local_network: 10.9.9.0/24\nnodes:\n  n1: {address: 10.1.1.1}\nguests: {}\n")
    (source / "cluster.fw").write_text("[OPTIONS]\nenable: 1\n\n[ALIASES]\nlocal_network 10.1.1.0/24\n")
    result = CliRunner().invoke(app, ["import", "proxmox", str(source), "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    policy = load_policy(tmp_path / "out")
    assert policy.doc.groups["local_network"].members == ["10.1.1.0/24"]


def test_corosync_conf_is_read_as_pve_firewall_does(tmp_path: Path) -> None:
    path = tmp_path / "corosync.conf"
    path.write_text("totem {\n  transport: udp\n  interface {\n    linknumber: 0\n  }\n}\n"
                    "nodelist {\n  node {\n    name: a # a comment\n    ring0_addr: 10.0.0.1\n    link1_addr: 10.0.1.1\n  }\n"
                    "  node {\n    name: b\n    ring0_addr: b.example\n  }\n}\n")
    report = Report()
    conf = read_corosync(path, "corosync.conf", report)
    assert conf.multicast
    assert conf.ring_members() == {"ring0_addr": ["10.0.0.1"], "link1_addr": ["10.0.1.1"]}
    assert [str(i) for i in report.items] == ["corosync.conf:15: inexact: corosync ring0_addr 'b.example' is a host name: pve-firewall "
                                              "resolves it and opens corosync to it; no rule is written for it (give the address)"]


@pytest.mark.parametrize("text, message", [
    ("nodelist {\n  node {\n    ring0_addr: 10.0.0.1\n  }\n}\n", "corosync.conf:2: a nodelist node without a name"),
    ("totem {\n  transport: udp\n", "corosync.conf: section 'totem' is not closed"),
    ("}\n", "corosync.conf:1: '}' without a section"),
    ("totem {\n  what is this\n}\n", "corosync.conf:2: cannot read 'what is this'"),
])
def test_a_broken_corosync_conf_is_an_error_with_its_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "corosync.conf"
    path.write_text(text)
    with pytest.raises(ImportFailure, match=message):
        read_corosync(path, "corosync.conf", Report())


def test_a_missing_corosync_file_given_on_the_command_line_is_an_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["import", "proxmox", str(LAB), "--corosync", str(tmp_path / "nope"), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2 and "no such file (--corosync)" in result.output


def test_inventory_container_addresses_and_local_network(tmp_path: Path) -> None:
    path = tmp_path / "inventory.yaml"
    path.write_text("local_network: 10.0.0.0/24\nnodes:\n  n1: {address: 10.0.0.1}\nguests:\n"
                    "  200:\n    node: n1\n    nics:\n      net0: {bridge: vmbr0, ip: 10.0.0.20/24, ip6: \"fd00::20/64\"}\n"
                    "      net1: {bridge: vmbr1, ip: dhcp, ips: [10.0.1.5]}\n")
    inventory = load_inventory(path, "inventory.yaml")
    net0, net1 = inventory.guests[200].nics
    assert inventory.local_network == "10.0.0.0/24"
    assert (net0.configured, net0.ips) == (["10.0.0.20", "fd00::20"], ["10.0.0.20", "fd00::20"])  # ips default to them
    assert (net1.configured, net1.ips) == ([], ["10.0.1.5"])  # dhcp: none configured


@pytest.mark.parametrize("line, message", [
    ("local_network: [10.0.0.0/24, 10.0.1.0/24]\n", "local_network: one CIDR"),
    ("local_network: 10.0.0.1/24\n", "'10.0.0.1/24' is not a CIDR subnet"),
])
def test_bad_local_network_is_an_error(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "inventory.yaml"
    path.write_text(line + "nodes:\n  n1: {address: 10.0.0.1}\n")
    with pytest.raises(ImportFailure, match=message):
        load_inventory(path, "inventory.yaml")


def test_a_container_ip_of_the_wrong_family_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "inventory.yaml"
    path.write_text("nodes:\n  n1: {address: 10.0.0.1}\nguests:\n  200:\n    node: n1\n    nics:\n      net0: {bridge: vmbr0, ip6: 10.0.0.5}\n")
    with pytest.raises(ImportFailure, match=r"ip6: '10.0.0.5' is not an IPv6 address"):
        load_inventory(path, "inventory.yaml")
