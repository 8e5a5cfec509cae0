"""`zonewall import proxmox /etc/pve`: a tree laid out as Proxmox VE lays it out.

The guests, their NICs and the nodes come from the tree itself (qemu-server and lxc
configs, corosync.conf); the result equals the import of the same firewall files
with a hand-written inventory. A layout the importer does not know is refused and
nothing is written (before, a real /etc/pve tree was refused for want of an
inventory, and with one its firewall/ files were skipped with exit 0, leaving every
guest open).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tests.importers.pvetree import LAB, LOCAL_NETWORK, assemble_pve_tree
from zonewall.cli import app
from zonewall.policy.loader import load_policy


def run_import(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["import", "proxmox", *args])
    return result.exit_code, result.output


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return assemble_pve_tree(tmp_path / "etc-pve")


def test_etc_pve_tree_imports_like_the_same_files_with_an_inventory(tree: Path, tmp_path: Path) -> None:
    code, output = run_import(str(tree), "-o", str(tmp_path / "from-tree"), "--strict", "--local-network", LOCAL_NETWORK)
    assert code == 0, output
    code, output = run_import(str(LAB), "-o", str(tmp_path / "from-flat"), "--strict")
    assert code == 0, output
    ours, theirs = load_policy(tmp_path / "from-tree"), load_policy(tmp_path / "from-flat")
    assert sorted(ours.doc.vms) == sorted(theirs.doc.vms) == ["app1", "db1", "mon1", "web1", "web2"]
    for name, vm in ours.doc.vms.items():
        other = theirs.doc.vms[name]
        assert vm.host == other.host, name
        assert vm.rules == other.rules and vm.default == other.default, name  # firewall/VMID.fw was read
        assert [(n.mac, n.ips, n.network, n.filters) for n in vm.nics] == [(n.mac, n.ips, n.network, n.filters) for n in other.nics], name
    # the ports Proxmox names: tap<VMID>i<N> for VMs, veth<VMID>i<N> for the container
    assert [n.tap for n in ours.doc.vms["web1"].nics] == ["tap100i0"]
    assert [n.tap for n in ours.doc.vms["mon1"].nics] == ["tap400i0", "tap400i1"]
    assert [n.tap for n in ours.doc.vms["app1"].nics] == ["veth200i0"]
    assert ours.doc.global_rules == theirs.doc.global_rules  # firewall/cluster.fw
    assert {h: ours.doc.hosts[h].rules for h in ours.doc.hosts} == {h: theirs.doc.hosts[h].rules for h in theirs.doc.hosts}  # nodes/N/host.fw
    assert ours.doc.hosts["pve1"].address == ["192.168.50.11"]  # corosync.conf ring0 (+ .members)


def test_snapshot_sections_are_not_the_running_config(tree: Path, tmp_path: Path) -> None:
    code, output = run_import(str(tree), "-o", str(tmp_path / "out"), "--local-network", LOCAL_NETWORK)
    assert code == 0, output
    web1 = load_policy(tmp_path / "out").doc.vms["web1"]
    assert [n.mac for n in web1.nics] == ["bc:24:11:60:01:10"]  # not the [before-upgrade] snapshot's :99 on vmbr9
    assert "guest 100 (web1, qemu) on pve1: net0 on vmbr1 mac bc:24:11:60:01:10 ips 10.60.1.10,fd60:1::10 firewall=1" in output


@pytest.mark.parametrize("stray", ["firewall/old/100.fw", "backup/cluster.fw", "nodes/pve1/qemu-server/100.fw"])
def test_a_fw_file_where_proxmox_keeps_none_is_refused(tree: Path, tmp_path: Path, stray: str) -> None:
    (tree / stray).parent.mkdir(parents=True, exist_ok=True)
    (tree / stray).write_text("[OPTIONS]\nenable: 1\n")
    out = tmp_path / "out"
    code, output = run_import(str(tree), "-o", str(out))
    assert code == 2, output
    assert f"{stray}: a .fw file where Proxmox VE keeps none" in output and "nothing was written" in output
    assert not out.exists()


def test_flat_layout_with_fw_files_in_unknown_directories_is_refused(tmp_path: Path) -> None:
    """The old failure: cluster.fw under firewall/ next to an inventory was skipped (exit 0),
    and every guest came out open. Without qemu-server/lxc configs and without the
    firewall/ directory name this is no /etc/pve tree either: refused."""
    source = tmp_path / "export"
    (source / "fw").mkdir(parents=True)
    (source / "fw" / "cluster.fw").write_text((LAB / "cluster.fw").read_text())
    (source / "inventory.yaml").write_text((LAB / "inventory.yaml").read_text())
    code, output = run_import(str(source), "-o", str(tmp_path / "out"))
    assert code == 2 and "fw/cluster.fw: a .fw file in a directory this layout does not have" in output, output
    assert not (tmp_path / "out").exists()


def test_a_tree_with_no_firewall_files_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "inventory.yaml").write_text((LAB / "inventory.yaml").read_text())
    code, output = run_import(str(tmp_path / "empty"), "-o", str(tmp_path / "out"))
    assert code == 2 and "no Proxmox VE firewall files" in output, output


def test_an_inventory_beside_a_tree_is_refused(tree: Path, tmp_path: Path) -> None:
    code, output = run_import(str(tree), "-o", str(tmp_path / "out"), "--inventory", str(LAB / "inventory.yaml"))
    assert code == 2 and "laid out as /etc/pve, whose guest configs are the inventory" in output, output


@pytest.mark.parametrize(("path", "text", "message"), [
    ("nodes/pve1/qemu-server/500.conf", "name: x\nthis line is broken\nnet0: virtio=BC:24:11:00:00:01,bridge=vmbr1\n",
     "nodes/pve1/qemu-server/500.conf:2: not a `key: value` line"),
    ("nodes/pve1/qemu-server/500.conf", "name: x\nnet0: virtio=BC:24:11:00:00:01\n", "nodes/pve1/qemu-server/500.conf:2: net0 has no bridge"),
    ("nodes/pve1/qemu-server/500.conf", "name: x\nmemory: 512\n", "guest 500 has no netN line"),
    ("nodes/pve1/lxc/500.conf", "hostname: c\nnet0: name=eth0,bridge=vmbr1,hwaddr=BC:24:11:00:00:01,ip=10.60.1.77/24,ip6=10.0.0.1/24\n",
     "nodes/pve1/lxc/500.conf:2: net0: '10.0.0.1/24' is not an IPv6 address"),
    ("nodes/pve3/qemu-server/500.conf", "name: x\nnet0: virtio=BC:24:11:00:00:01,bridge=vmbr1\n", "nodes/pve3/qemu-server/500.conf: node pve3 is not in corosync.conf or .members"),
    ("nodes/pve2/qemu-server/100.conf", "name: twice\nnet0: virtio=BC:24:11:00:00:01,bridge=vmbr1\n", "guest 100 is configured on two nodes"),
])
def test_guest_configs_it_cannot_read_are_refused_with_their_line(tree: Path, tmp_path: Path, path: str, text: str, message: str) -> None:
    (tree / path).parent.mkdir(parents=True, exist_ok=True)
    (tree / path).write_text(text)
    code, output = run_import(str(tree), "-o", str(tmp_path / "out"))
    assert code == 2 and message in output, output
    assert not (tmp_path / "out").exists()


def test_inventory_type_lxc_names_container_ports(tmp_path: Path) -> None:
    source = tmp_path / "flat"
    source.mkdir()
    inventory = yaml.safe_load((LAB / "inventory.yaml").read_text())
    inventory["guests"][200]["type"] = "lxc"
    (source / "inventory.yaml").write_text(yaml.safe_dump(inventory))
    for path in LAB.glob("*.fw"):
        (source / path.name).write_text(path.read_text())
    code, output = run_import(str(source), "-o", str(tmp_path / "out"))
    assert code == 0, output
    assert [n.tap for n in load_policy(tmp_path / "out").doc.vms["app1"].nics] == ["veth200i0"]
