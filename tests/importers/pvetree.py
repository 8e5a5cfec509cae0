"""A whole /etc/pve tree for tests, assembled from fixtures/pve-etc (guest configs,
.members) and fixtures/proxmox-lab (.fw files, corosync.conf), laid out as pmxcfs
lays it out, with its symbolic links."""

from __future__ import annotations

import shutil
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixtures"
LAB = FIXTURES / "proxmox-lab"
PVE_ETC = FIXTURES / "pve-etc"
LOCAL_NETWORK = "192.168.50.0/24"  # what proxmox-lab's inventory says; /etc/pve does not hold it


def assemble_pve_tree(dest: Path) -> Path:
    shutil.copytree(PVE_ETC, dest)
    (dest / "README.md").unlink()
    firewall = dest / "firewall"
    firewall.mkdir()
    for path in LAB.glob("*.fw"):
        shutil.copy(path, firewall / path.name)
    for path in LAB.glob("nodes/*/host.fw"):
        (dest / "nodes" / path.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, dest / "nodes" / path.parent.name / "host.fw")
    shutil.copy(LAB / "corosync.conf", dest / "corosync.conf")
    (dest / "datacenter.cfg").write_text("keyboard: en-us\n")
    (dest / "local").symlink_to("nodes/pve1")
    (dest / "qemu-server").symlink_to("nodes/pve1/qemu-server")
    (dest / "lxc").symlink_to("nodes/pve1/lxc")
    return dest
